#!/usr/bin/env bash
# Our CPU train step under two XLA flag sets, alternating, twice:
#   old (files *_cur*.json: the platform default until this comparison, commit 8fc34a9):
#        --xla_cpu_experimental_ynn_fusion_type=-individual_convolution --xla_disable_hlo_passes=fusion
#   mof: --xla_cpu_experimental_ynn_fusion_type=-individual_convolution
#        --xla_backend_extra_options=xla_cpu_use_multi_output_fusion   (the platform default since this comparison)
# Usage, from the repository root: bash benchmarks/cpu_flags/compare.sh MODEL IMAGE_SIZE BATCH
set -euo pipefail
model=$1 size=$2 batch=$3
common=(--model="$model" --image_size="$size" --batch="$batch" --dtype=float32 --steps=10 --windows=5 --warmup=2
        --nowarm_compile --noplatform_xla_flags)
old="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution --xla_disable_hlo_passes=fusion"
mof="--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
--xla_backend_extra_options=xla_cpu_use_multi_output_fusion"
for round in 1 2; do
  python -m experiments.benchmark "${common[@]}" "--extra_xla_flags=$old" \
    --out="benchmarks/cpu_flags/${model}_${size}_b${batch}_cur${round}.json" | grep "ours:" | sed "s/^/old /"
  python -m experiments.benchmark "${common[@]}" "--extra_xla_flags=$mof" \
    --out="benchmarks/cpu_flags/${model}_${size}_b${batch}_mof${round}.json" | grep "ours:" | sed "s/^/mof /"
done
