"""Per-variant summary of the resnet_tweaks sweep over its seeds.

  python benchmarks/ablations/resnet_tweaks/summary.py [WORKDIR]   # a sweep workdir, or this folder (default)

Errors are 1 - top-1, in %. Final test error: all 10,000 test images at the last step (390). Final train error: the
trainer's running figure over the last 10-step logging window (1,280 images, with augmentation, batch statistics
and, where on, stochastic depth), so it is noisy (a binomial standard deviation of about 1.4 points at 35 % top-1).
Half-way test error: the evaluation at step 195. E20: the first 10-step training window whose top-1 passes 20 %
(the escape from the start-up plateau; resnet_jax.study.escape_step's definition).
"""
import csv
import json
import os
import statistics
import sys

LABELS = {"resnet50": "B (resnet50)", "resnet50c": "C (resnet50c)", "resnet50d": "D (resnet50d)",
          "seresnet50": "B + SE (seresnet50)"}


def metrics(workdir, run):
  # A sweep's workdir holds the runs beside results.csv; this record folder holds them under runs/.
  path = os.path.join(workdir, "runs", run, "metrics.jsonl")
  if not os.path.exists(path):
    path = os.path.join(workdir, run, "metrics.jsonl")
  records = {}
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      records[(r["split"], r["step"])] = r  # The latest record of each (split, step), as the sweep reads them.
  return [records[k] for k in sorted(records, key=lambda k: (k[1], k[0]))]


def escape_step(records, threshold=0.2):
  for r in records:
    if r["split"] == "train" and (r.get("top1") or 0.0) > threshold:
      return r["step"]
  return None


def stats(values):
  values = [v for v in values if v is not None]
  if not values:
    return "n/a"
  mean = statistics.mean(values)
  return f"{mean:.1f} [{min(values):.1f}, {max(values):.1f}]"


def main(workdir):
  with open(os.path.join(workdir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    if row["status"] != "finished":
      print(f"warning: {row['run']} is {row['status']}", file=sys.stderr)
    records = metrics(workdir, row["run"])
    half = [r for r in records if r["split"] == "eval" and r["step"] == 195]
    row["half_test_error"] = 100 * (1 - half[0]["top1"]) if half else None
    row["e20"] = escape_step(records)
    row["test"] = 100 * float(row["final_test_error"])
    row["train"] = 100 * float(row["final_train_error"])
    row["best"] = 100 * float(row["best_test_error"])

  variants = []
  for row in rows:
    key = (row["name"], row["drop_path_rate"])
    if key not in variants:
      variants.append(key)

  out = ["| variant | drop path | seeds | final test error % | final train error % (last 10 steps) | "
         "test error % at step 195 | E20 (step) | wall s per run |",
         "|---|---|---|---|---|---|---|---|"]
  for name, dp in variants:
    runs = [r for r in rows if r["name"] == name and r["drop_path_rate"] == dp]
    e20 = [r["e20"] for r in runs]
    e20_text = ", ".join("-" if e is None else str(e) for e in e20)
    out.append(f"| {LABELS.get(name, name)} | {dp} | {len(runs)} | {stats([r['test'] for r in runs])} | "
               f"{stats([r['train'] for r in runs])} | {stats([r['half_test_error'] for r in runs])} | {e20_text} | "
               f"{stats([float(r['wall_time_s']) for r in runs])} |")
  out.append("")
  out.append("Cells: mean [min, max] over the seeds; E20 per seed in seed order.")
  out.append("")

  # Pooled factors: each tweak over both drop-path rates (6 runs), and drop path over the four nets (12 runs).
  out.append("| pooled | runs | final test error % | final train error % |")
  out.append("|---|---|---|---|")
  for name in LABELS:
    runs = [r for r in rows if r["name"] == name]
    out.append(f"| {LABELS[name]}, both drop-path rates | {len(runs)} | {stats([r['test'] for r in runs])} | "
               f"{stats([r['train'] for r in runs])} |")
  for dp in sorted({r["drop_path_rate"] for r in rows}, key=float):
    runs = [r for r in rows if r["drop_path_rate"] == dp]
    out.append(f"| drop path {dp}, all four nets | {len(runs)} | {stats([r['test'] for r in runs])} | "
               f"{stats([r['train'] for r in runs])} |")
  out.append("")

  # Paired by seed (same seed: same data order and initialisation stream) against B without drop path.
  base = {r["seed"]: r for r in rows if r["name"] == "resnet50" and float(r["drop_path_rate"]) == 0}
  out.append("| variant - B (drop path 0), paired by seed | test error difference, points, per seed | mean |")
  out.append("|---|---|---|")
  for name, dp in variants:
    if name == "resnet50" and float(dp) == 0:
      continue
    diffs = [r["test"] - base[r["seed"]]["test"] for r in rows
             if r["name"] == name and r["drop_path_rate"] == dp and r["seed"] in base]
    out.append(f"| {LABELS.get(name, name)}, drop path {dp} | {', '.join(f'{d:+.1f}' for d in diffs)} | "
               f"{statistics.mean(diffs):+.1f} |")
  print("\n".join(out))


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__)))
