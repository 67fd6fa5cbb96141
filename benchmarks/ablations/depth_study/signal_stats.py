"""Fig. 7's response statistics as numbers: per configuration, the standard deviation of each block's branch output
at the last evaluation, summarised over blocks (mean, median, largest, smallest) and averaged over seeds.

  python -m benchmarks.ablations.depth_study.signal_stats > benchmarks/ablations/depth_study/signal_stats.md
"""
import collections
import glob
import os
import statistics

from resnet_jax import results, sweep

RUNS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs")


def last_signal(run_dir):
  """Each block's branch-output standard deviation at the run's last evaluation (`results.signal_profile`)."""
  return [std for _, std in results.signal_profile(sweep.read_metrics(run_dir))]


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
