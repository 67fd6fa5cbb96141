#!/usr/bin/env bash
# Our CPU step on one device against the same global batch split over two simulated CPU devices
# (XLA_FLAGS=--xla_force_host_platform_device_count=2: data parallel under shard_map, BatchNorm synchronised),
# alternating, twice per case. Usage, from the repository root: bash benchmarks/cpu_split/run.sh
set -euo pipefail
dir=benchmarks/cpu_split
timing=(--dtype=float32 --steps=10 --windows=5 --warmup=2 --rounds=1 --nowarm_compile)
for case in cifar_resnet20:16 cifar_resnet20:32 cifar_resnet56:32; do
  model=${case%%:*} size=${case##*:}
  for rep in 1 2; do
    python -m experiments.benchmark --model=$model --image_size=$size --batch=128 "${timing[@]}" \
      --out=$dir/${model}_${size}_d1_$rep.json | grep "ours:"
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.benchmark --model=$model \
      --image_size=$size --batch=128 "${timing[@]}" --out=$dir/${model}_${size}_d2_$rep.json | grep "ours:"
  done
done
