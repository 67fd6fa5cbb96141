#!/usr/bin/env bash
# Our CPU train step against the PyTorch peers (eager and torch.compile) with the current CPU XLA flags, then the
# profiles of the CIFAR step. One workload after the other on an otherwise idle machine; every window, round, load
# and flag lands in the JSON next to this script, the profiles in benchmarks/profiles/.
# Usage, from the repository root: bash benchmarks/cpu_peers/run.sh [cifar|resnet50|profile|trainer]...
# (default: all four).
set -euo pipefail
dir=benchmarks/cpu_peers
timing=(--dtype=float32 --steps=10 --windows=5 --warmup=2 --rounds=2)
parts=("${@:-cifar resnet50 profile trainer}")
for part in ${parts[@]}; do
  case $part in
    cifar)
      for model in cifar_resnet56 cifar_resnet20; do
        for size in 32 16; do
          python -m experiments.benchmark --model=$model --image_size=$size --batch=128 "${timing[@]}" \
            --nowarm_compile --peers=torch_cifar,torch_cifar_compile --out=$dir/${model}_${size}px_b128.json
        done
      done ;;
    resnet50)
      python -m experiments.benchmark --model=resnet50 --batch=8 "${timing[@]}" \
        --peers=keras,torch_eager,torch_compile --out=$dir/resnet50_224px_b8.json ;;
    profile)
      for model in cifar_resnet20 cifar_resnet56; do
        for size in 32 16; do
          python -m experiments.profile --model=$model --batch=128 --image_size=$size --out=benchmarks/profiles
        done
      done ;;
    trainer)  # The trainer's logged images/s against the benchmark's step rate, same net, batch and size.
      for data in shapes:32 shapes/depth16:16; do
        name=${data%%:*} size=${data##*:} run=$(mktemp -d)
        python -m experiments.benchmark --model=cifar_resnet20 --image_size=$size --batch=128 "${timing[@]}" \
          --nowarm_compile --out=$dir/trainer_step_${size}px.json | grep "ours:"
        python -m experiments.train --config=configs/shapes.py --workdir=$run --config.data.name=$name \
          --config.num_epochs=None --config.num_steps=400 --config.eval_every_epochs=None \
          --config.log_every_steps=50 --config.checkpoint_every_steps=1000 > /dev/null
        cp $run/metrics.jsonl $dir/trainer_${size}px_metrics.jsonl
        python - "$dir/trainer_step_${size}px.json" "$dir/trainer_${size}px_metrics.jsonl" <<'PY'
import json, statistics, sys
step = json.load(open(sys.argv[1]))["images_per_sec"]
windows = [r["images_per_sec"] for r in map(json.loads, open(sys.argv[2])) if r.get("split") == "train"][1:]
trainer = statistics.median(windows)
print(f"trainer {trainer:.0f} images/s (median of {len(windows)} windows of 50 steps after the first), "
      f"step {step:.0f} images/s: trainer / step = {trainer / step:.3f}")
PY
        rm -rf "$run"
      done ;;
    *) echo "unknown part $part: choose cifar, resnet50, profile or trainer" >&2; exit 2 ;;
  esac
done
