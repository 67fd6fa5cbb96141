"""The depth study's criteria (CRITERIA.md, fixed before it ran) checked against its summary: which hold.

  python -m benchmarks.ablations.depth_study.criteria > benchmarks/ablations/depth_study/criteria_check.md

Reads summary.csv (the sweep's report of the committed records) and, for the wall time, the records' time stamps.
"""
import csv
import os
import sys

from resnet_jax import sweep

FOLDER = os.path.dirname(os.path.abspath(__file__))
DEPTHS = (20, 32, 44, 56)
BUDGET_S = 2.5 * 3600


def load_summary(path):
  """{(depth, shortcut): row} from the sweep's summary.csv, numbers as floats."""
  table = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      depth = int(row["name"].removeprefix("cifar_resnet"))
      table[depth, row["shortcut"]] = {k: (v if k in ("name", "shortcut") else float(v) if v else None)
                                       for k, v in row.items()}
  return table


def _means(table, shortcut, column):
  return [table[d, shortcut][f"{column}_mean"] for d in DEPTHS]


def _path(values):
  return " -> ".join(f"{100 * v:.1f}" for v in values)


def _falls(values):
  return all(b < a for a, b in zip(values, values[1:]))


def _rises(values):
  return all(b > a for a, b in zip(values, values[1:]))


def check(table, wall_time_s=None):
  """[(criterion, measured, holds)] for the criteria of CRITERIA.md; holds is None where nothing measured it."""
  train_a, test_a = _means(table, "A", "final_train_error"), _means(table, "A", "final_test_error")
  train_plain = _means(table, "none", "final_train_error")
  ranges = [(table[d, "A"]["final_train_error_max"] or 0.0) - (table[d, "A"]["final_train_error_min"] or 0.0)
            for d in (20, 56)]
  gap = train_a[0] - train_a[-1]
  rows = [
      ("1. residual training error falls at every step in depth", f"{_path(train_a)} %", _falls(train_a)),
      ("2. ResNet-20 minus ResNet-56 training error above either's seed range",
       f"{100 * gap:+.1f} points; ranges {100 * ranges[0]:.1f} (20), {100 * ranges[1]:.1f} (56)",
       gap > max(ranges)),
      ("3. residual test error falls at every step in depth", f"{_path(test_a)} %", _falls(test_a)),
      ("4. plain training error rises at every step in depth", f"{_path(train_plain)} %", _rises(train_plain)),
  ]
  if wall_time_s is None:
    measured, holds = "not judged: the study is not finished", None
  else:
    measured = (f"{wall_time_s / 3600:.2f} h from the first run's first record to the last run's last (lesion not "
                "included)")
    holds = wall_time_s <= BUDGET_S
  rows.append(("5. the study within about 2.5 hours on 2 cores", measured, holds))
  return rows


def study_wall_time(runs_dir):
  """Seconds from the earliest record of any run to the latest (the runs' wall time, however many ran at once;
  the lesion after them is not included), or None without records."""
  stamps = []
  for name in os.listdir(runs_dir):
    if os.path.isdir(os.path.join(runs_dir, name)):
      stamps += [r["wall_time"] for r in sweep.read_metrics(os.path.join(runs_dir, name)) if "wall_time" in r]
  return max(stamps) - min(stamps) if stamps else None


def main(argv):
  del argv
  table = load_summary(os.path.join(FOLDER, "summary.csv"))
  seeds = sorted({int(row["seeds"]) for row in table.values()})
  finished = seeds == [3] and len(table) == 2 * len(DEPTHS)
  counted = "seeds 0-2" if finished else f"the finished seeds: {'-'.join(map(str, seeds))} per net"
  print(f"| criterion (CRITERIA.md) | measured (means over {counted}) | holds |")
  print("|---|---|---|")
  # The wall-time criterion is about the whole study: judged only once every run has finished.
  rows = check(table, study_wall_time(os.path.join(FOLDER, "runs")) if finished else None)
  for criterion, measured, holds in rows:
    print(f"| {criterion} | {measured} | {'-' if holds is None else 'yes' if holds else 'no'} |")


if __name__ == "__main__":
  main(sys.argv)
