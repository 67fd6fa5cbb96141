#!/usr/bin/env bash
# The compiles behind docs/accelerators.md's "Before renting" table: every config on every target, the largest batch
# per chip, appended to benchmarks/accelerators/results.jsonl (a rerun skips what is there: resumable).
#
#   python3 -m venv --system-site-packages .venv-accel && .venv-accel/bin/pip install "jax[tpu]==0.10.2" "jax[cuda13]==0.10.2"
#   PYTHON=.venv-accel/bin/python bash benchmarks/accelerators/run.sh
#
# Runs on the CPU (TPU compiles of ResNet-50 take minutes each; GPU compiles seconds). Then:
#   python -m benchmarks.accelerators.table > benchmarks/accelerators/table.md
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
RESULTS=benchmarks/accelerators/results.jsonl
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=3
compile_for() { "$PYTHON" -m experiments.compile_for --out="$RESULTS" "$@"; }

# The first of each kind: configs/tpu.py on every TPU slice at its batch per chip (v5e-8 and the two-slice v5p with
# 8 chips, the v5p-128 with 64), the largest batch on v5e (the smallest HBM) and every GPU config.
compile_for --config=configs/tpu.py --target=tpu:v5e-4 --find_max_batch
compile_for --config=configs/tpu.py --target=tpu:v5p-8,tpu:v4-8,tpu:v6e-4
compile_for --config=configs/tpu.py:8 --target=tpu:v5e-8,tpu:2xv5p-8
compile_for --config=configs/tpu.py:64 --target=tpu:v5p-128
for config in configs/gpu.py configs/default.py configs/imagenet_lars.py; do
  compile_for --config="$config" --target=gpu:h100x8,gpu:h200x8 --find_max_batch
done
compile_for --config=configs/gpu.py:1 --target=gpu:h100,gpu:h200 --find_max_batch
compile_for --config=configs/default.py --target=gpu:h100,gpu:h200
compile_for --config=configs/imagenet_lars.py --target=gpu:h100,gpu:h200

# Then default.py and imagenet_lars.py at their own global batches on the single-host slices, and the largest batch
# per chip of the other TPU generations.
compile_for --config=configs/default.py --target=tpu:v5e-4,tpu:v5p-8,tpu:v4-8,tpu:v6e-4,tpu:v5e-8
compile_for --config=configs/imagenet_lars.py --target=tpu:v5e-4,tpu:v5p-8,tpu:v4-8,tpu:v6e-4,tpu:v5e-8
compile_for --config=configs/tpu.py --target=tpu:v5p-8,tpu:v4-8,tpu:v6e-4 --find_max_batch
