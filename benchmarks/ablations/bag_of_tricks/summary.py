"""The bag_of_tricks sweep as the paper's tables: each row's change, its errors over the seeds, and what it changed
against the row above, paired by seed.

  python benchmarks/ablations/bag_of_tricks/summary.py [WORKDIR]   # a sweep workdir, or this folder (default)

Errors are 1 - top-1, in %. Test: all 10,000 test images of `shapes/depth16` at the last step (900) and at the
half (450). Train: the trainer's running figure over the last 25-step logging window (3,200 images with
augmentation, batch statistics and, on the mixup row, mixed images scored against their dominant label). Test loss:
the mean cross-entropy on the test images at the last step (rising while training error falls is overfitting).
"""
import csv
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
from configs.ablations import bag_of_tricks  # noqa: E402  (the row labels, in order)
from resnet_jax import sweep  # noqa: E402


def records(workdir, run):
  """{(split, step): record} of a run; a sweep's workdir holds the runs beside results.csv, this folder under runs/."""
  folder = os.path.join(workdir, "runs", run)
  if not os.path.isdir(folder):
    folder = os.path.join(workdir, run)
  return {(r["split"], r["step"]): r for r in sweep.read_metrics(folder)}


def stats(values, digits=1):
  values = [v for v in values if v is not None]
  if not values:
    return "n/a"
  return f"{statistics.mean(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}]"


def main(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = [r for r in csv.DictReader(f) if r["status"] == "finished"]
  for row in rows:
    row["index"] = int(re.match(r"\d+", row["step"]).group())
    latest = records(workdir, row["run"])
    final = latest[("eval", int(row["steps"]))]
    half = latest.get(("eval", int(row["steps"]) // 2))
    row["test"] = 100 * (1 - final["top1"])
    row["test_loss"] = final["loss"]
    row["half"] = 100 * (1 - half["top1"]) if half else None
    row["train"] = 100 * float(row["final_train_error"])
    row["wall"] = float(row["wall_time_s"])
  by_row = {}
  for row in rows:
    by_row.setdefault(row["index"], {})[row["seed"]] = row

  out = ["| row | change | seeds | test error % | vs row above, per seed (points) | mean | train error % | "
         "test loss | test error % at the half | wall s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for index, (label, _) in enumerate(bag_of_tricks.STEPS):
    runs = by_row.get(index, {})
    if not runs:
      out.append(f"| {index} | {label} | 0 | not run | | | | | | |")
      continue
    above = by_row.get(index - 1, {})
    diffs = [runs[s]["test"] - above[s]["test"] for s in sorted(runs) if s in above]
    diff_text = ", ".join(f"{d:+.1f}" for d in diffs) if index else ""
    mean = f"{statistics.mean(diffs):+.1f}" if diffs and index else ""
    seeds = sorted(runs.values(), key=lambda r: int(r["seed"]))
    out.append(f"| {index} | {label} | {len(runs)} | {stats([r['test'] for r in seeds])} | {diff_text} | {mean} | "
               f"{stats([r['train'] for r in seeds])} | {stats([r['test_loss'] for r in seeds], 2)} | "
               f"{stats([r['half'] for r in seeds])} | {stats([r['wall'] for r in seeds], 0)} |")
  out += ["", "Cells: mean [min, max] over the seeds; differences in seed order (a seed gives the same data order "
          "in every row)."]
  print("\n".join(out))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
