"""Fig. 7's response statistics as numbers: per configuration, the standard deviation of each block's branch output
at the last evaluation, summarised over blocks (mean, median, largest, smallest) and averaged over seeds.

  python benchmarks/ablations/depth_study/signal_stats.py > benchmarks/ablations/depth_study/signal_stats.md
"""
import collections
import glob
import json
import os
import statistics

RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


def last_signal(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  last = [r for r in rows if any(k.startswith("signal/") for k in r)][-1]
  return [v for k, v in last.items() if k.startswith("signal/")]


def main():
  stats = collections.defaultdict(list)
  for run_dir in sorted(glob.glob(os.path.join(RUNS, "seed=*"))):
    config = os.path.basename(run_dir).split(",", 1)[1]
    signal = last_signal(run_dir)
    stats[config].append((statistics.mean(signal), statistics.median(signal), max(signal), min(signal),
                          len(signal)))
  print("| run | seeds | blocks | mean | median | largest | smallest |")
  print("|---|---|---|---|---|---|---|")
  order = lambda c: (c.split(",")[1], int(c.split(",")[0].removeprefix("name=cifar_resnet")))  # noqa: E731
  for config in sorted(stats, key=order):
    seeds = stats[config]
    means = [statistics.mean(s[i] for s in seeds) for i in range(4)]
    print(f"| {config} | {len(seeds)} | {seeds[0][4]} | " + " | ".join(f"{m:.2f}" for m in means) + " |")


if __name__ == "__main__":
  main()
