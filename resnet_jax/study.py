"""Seeded studies: the runs of a sweep that differ only in their seed, taken together.

A grid with a `seed` axis of two or more values (`seed=0,1,2 model.name=... model.shortcut=none,A`) groups its runs
by their other values. For such a sweep, `write_report` adds, beside the per-run results:
- summary.csv and summary.md: per configuration, the number of finished seeds and the mean, standard deviation,
  minimum and maximum of the final test error, the final training error, the best test error and the escape step
  (the first logged training window whose top-1 accuracy passes `ESCAPE_TOP1`): a Table 6 of He et al. (2015)
  with its spread;
- error_seeds.png: Fig. 6 over seeds (mean training and test error curves, with min-max bands);
- signal_seeds.png: Fig. 7 over seeds (per-block branch response, in order and sorted, with min-max bands).
Only finished runs enter the summary and the seed plots, so a study stopped part-way reports the seeds it has.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from resnet_jax import files, results
from resnet_jax import grid as grid_lib

SEED_KEY = "seed"
ESCAPE_TOP1 = 0.2  # Twice chance for ten classes.
SUMMARY_FILES = ("summary.csv", "summary.md", "error_seeds.png", "signal_seeds.png")
_STATISTICS = ("final_test_error", "final_train_error", "best_test_error", "escape_step")


def has_seeds(axes: Sequence[grid_lib.Axis]) -> bool:
  return any(a.key == SEED_KEY and len(a.values) > 1 for a in axes)


def configuration(values: dict[str, str], axes: Sequence[grid_lib.Axis]) -> str:
  """A run's values without its seed, as a label: 'name=cifar_resnet20,shortcut=A'."""
  labels = grid_lib.axis_labels(axes)
  return ",".join(f"{labels[a.key]}={values[a.key]}" for a in axes if a.key != SEED_KEY) or "all"


def escape_step(records: Sequence[dict], threshold: float = ESCAPE_TOP1) -> int | None:
  """The step of the first training record whose top-1 passes `threshold` (None if none does)."""
  for record in files.split_records(records, "train"):
    if (record.get("top1") or 0.0) > threshold:
      return int(record["step"])
  return None


def _spread(row: dict[str, Any], column: str, percent: bool) -> str:
  mean, std, low, high = (row[f"{column}_{s}"] for s in ("mean", "std", "min", "max"))
  if mean is None:
    return "-"
  scale, digits = (100.0, 1) if percent else (1.0, 0)
  text = f"{scale * mean:.{digits}f}"
  if std is not None:
    text += f" ± {scale * std:.{digits}f} ({scale * low:.{digits}f}-{scale * high:.{digits}f})"
  return text


def summary_rows(rows: Sequence[dict], histories: dict[str, Sequence[dict]], axes: Sequence[grid_lib.Axis],
                 values: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
  """Per configuration (in grid order), the statistics over its finished runs: `results.aggregate` columns, and
  markdown cells 'mean ± std (min-max)' (errors in percent) under the statistic's own name."""
  labels = grid_lib.axis_labels(axes)
  keys = [labels[a.key] for a in axes if a.key != SEED_KEY]
  finished = []
  for row in rows:
    if row["status"] == "finished":
      finished.append({**row, "configuration": configuration(values[row["run"]], axes),
                       "escape_step": escape_step(histories.get(row["run"], []))})
  summary = results.aggregate(finished, ["configuration", *keys], _STATISTICS)
  for row in summary:
    row["seeds"] = row.pop("n")
    for column in _STATISTICS:
      row[column] = _spread(row, column, percent=column != "escape_step")
  return summary


def write_report(workdir: str, rows: Sequence[dict], histories: dict[str, Sequence[dict]],
                 axes: Sequence[grid_lib.Axis], values: dict[str, dict[str, str]],
                 panels: dict[str, str] | None) -> list[str]:
  """Writes `SUMMARY_FILES` into `workdir` from the finished runs (see the module docstring); returns the paths.

  Args:
    rows: the sweep's results rows (`sweep.result_rows`).
    histories: run name -> metrics records.
    axes: the grid.
    values: run name -> its grid values.
    panels: run name -> 'plain' / 'residual' (`sweep.shortcut_groups`), or None.
  """
  from resnet_jax import plots  # matplotlib: imported only when plotting.

  summary = summary_rows(rows, histories, axes, values)
  labels = grid_lib.axis_labels(axes)
  keys = [labels[a.key] for a in axes if a.key != SEED_KEY]
  written = [os.path.join(workdir, name) for name in SUMMARY_FILES[:2]]
  numeric = [f"{c}_{s}" for c in _STATISTICS for s in ("mean", "std", "min", "max")]
  results.write_csv(written[0], summary, [*keys, "seeds", *numeric])
  preamble = (f"Over the finished seeds of each configuration: mean ± standard deviation (lowest-highest). Errors in "
              f"percent (1 - top-1); escape_step: the first logged training window with top-1 above "
              f"{ESCAPE_TOP1:g}. Per-run figures: results.md.")
  files.write_text(written[1], preamble + "\n\n" + _markdown(summary, [*keys, "seeds", *_STATISTICS]))
  by_configuration: dict[str, list[str]] = {}
  for row in rows:
    if row["status"] == "finished" and histories.get(row["run"]):
      by_configuration.setdefault(configuration(values[row["run"]], axes), []).append(row["run"])
  if by_configuration:
    curves = {label: [histories[n] for n in names] for label, names in by_configuration.items()}
    groups = None if panels is None else {label: panels[names[0]] for label, names in by_configuration.items()}
    written.append(os.path.join(workdir, SUMMARY_FILES[2]))
    plots.plot_error_bands(curves, written[-1], panels=groups)
    profiles = {label: [results.signal_profile(histories[n]) for n in names]
                for label, names in by_configuration.items()}
    profiles = {label: p for label, p in profiles.items() if all(p) and len({len(x) for x in p}) == 1}
    if profiles:
      written.append(os.path.join(workdir, SUMMARY_FILES[3]))
      plots.plot_signal_bands(profiles, written[-1])
  return written


def _markdown(rows: Sequence[dict], columns: Sequence[str]) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in rows]
  return "\n".join(lines) + "\n"
