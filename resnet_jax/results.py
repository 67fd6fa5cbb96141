"""Results tables of runs: the figures of a run's metrics (final and best errors, the branch-signal profile), and
CSV and markdown tables of rows, written atomically.

Errors are fractions, 1 - top-1; markdown shows errors and accuracies in percent and their changes in points.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from typing import Any

from resnet_jax import files

SIGNAL_PREFIX = "signal/"  # Eval metrics: std of each block's residual-branch output (He et al. 2015, Fig. 7).


def _error(record: dict) -> float | None:
  return None if record.get("top1") is None else 1.0 - record["top1"]


def summarize(records: Sequence[dict]) -> dict[str, Any]:
  """Final train loss / error, final and best test error, last step and wall time of one run's records.

  Errors are 1 - top1. The wall time is the span of the records' wall_time stamps (so it excludes start-up before
  the first record and includes any pause between an interruption and its resume). Missing values are None.
  """
  train, evals = files.split_records(records, "train"), files.split_records(records, "eval")
  test_errors = [e for e in map(_error, evals) if e is not None]
  stamps = [r["wall_time"] for r in records if isinstance(r.get("wall_time"), (int, float))]
  return {
      "final_train_loss": train[-1].get("loss") if train else None,
      "final_train_error": _error(train[-1]) if train else None,
      "final_test_error": _error(evals[-1]) if evals else None,
      "best_test_error": min(test_errors) if test_errors else None,
      "steps": max(r["step"] for r in records) if records else None,
      "wall_time_s": max(stamps) - min(stamps) if stamps else None,
  }


def signal_profile(records: Sequence[dict]) -> list[tuple[str, float]]:
  """(block path, std) from the last eval record holding signal metrics, in network order."""
  for record in reversed(files.split_records(records, "eval")):
    signals = [(k[len(SIGNAL_PREFIX):], v) for k, v in record.items() if k.startswith(SIGNAL_PREFIX)]
    if signals:
      return sorted(signals, key=lambda kv: [int(n) for n in re.findall(r"\d+", kv[0])])
  return []


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
  """CSV with a header, written atomically; None is written as an empty cell, floats with full precision."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(columns)
  for row in rows:
    writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
  files.write_text(path, text.getvalue())


def _unit(column: str) -> str:
  """How a column is shown in markdown: fractions of errors and accuracies as percent, their changes as points."""
  if column.startswith("delta_"):
    return "points"
  if "error" in column or column.startswith("top"):
    return "%"
  return ""


def _cell(column: str, value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return str(value).replace("|", "\\|")
  unit = _unit(column)
  if unit == "points":
    return f"{100 * value:+.2f}"
  if unit == "%":
    return f"{100 * value:.2f}"
  if column.endswith("_s"):
    return f"{value:.0f}"
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
  """A GitHub markdown table: errors and accuracies in percent, their changes in points, seconds rounded."""
  header = [f"{c} ({_unit(c)})" if _unit(c) else c for c in columns]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def write_markdown(path: str, rows: Sequence[dict], columns: Sequence[str], preamble: str = "") -> None:
  """A markdown file: `preamble`, then the table of `rows`, written atomically."""
  files.write_text(path, (preamble.rstrip() + "\n\n" if preamble else "") + markdown_table(rows, columns))


def aggregate(rows: Sequence[dict], by: Sequence[str], columns: Sequence[str]) -> list[dict[str, Any]]:
  """Rows grouped by the values of `by` (e.g. the network and shortcut of runs that differ only in their seed),
  with each numeric column's mean, standard deviation (over the group, n - 1 in the denominator), minimum and maximum
  as `<column>_mean`, `_std`, `_min`, `_max`, and the group's size `n`. Groups keep the order of first appearance."""
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
  out = []
  for key, members in groups.items():
    summary: dict[str, Any] = dict(zip(by, key))
    summary["n"] = len(members)
    for column in columns:
      values = [float(m[column]) for m in members if isinstance(m.get(column), (int, float)) and
                not isinstance(m.get(column), bool)]
      # Correctly rounded sums and square root: the same figures on every Python and platform (built-in sum()
      # compensates from Python 3.12 on, and ** 0.5 is libm's pow).
      mean = math.fsum(values) / len(values) if values else None
      std = (math.sqrt(math.fsum((v - mean) * (v - mean) for v in values) / (len(values) - 1))
             if len(values) > 1 else None)
      summary.update({f"{column}_mean": mean, f"{column}_std": std, f"{column}_min": min(values, default=None),
                      f"{column}_max": max(values, default=None)})
    out.append(summary)
  return out
