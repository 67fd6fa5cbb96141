#!/usr/bin/env bash
# The benchmark's step built from configs/benchmark.py by train.build, against the step it replaced (commit
# 1adb31c, checked out in a worktree at $BASE), alternating twice: same FLOPs, same speed within noise?
# Usage: BASE=/path/to/worktree-at-1adb31c bash benchmarks/cpu_bench_step/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(cd "$here/../.." && pwd)
args=(--model=cifar_resnet20 --image_size=16 --batch=128 --dtype=float32 --steps=20 --windows=5 --warmup=3
      --nowarm_compile)
for round in 1 2; do
  (cd "$BASE" && python -m experiments.benchmark "${args[@]}" --out="$here/before_$round.json" | grep "ours:")
  (cd "$repo" && python -m experiments.benchmark "${args[@]}" --out="$here/after_$round.json" | grep "ours:")
done
