r"""ResNet-50 on ImageNet (default.py's recipe) on Cloud TPU: bfloat16, 256 images per chip, BatchNorm per chip.

`configs/tpu.py:N` sets the global batch for N chips (JAX devices; default 4, a v4-8, v5p-8, v5e-4 or v6e-4:
1,024); a v4-8 or v5p-8 has 4 chips of 2 TensorCores, a v5e-8 8 chips. What the compiler says of this config on each
slice (memory per chip, the largest batch that fits, the roofline bound) is in docs/accelerators.md ("Before
renting"), made by `python -m experiments.compile_for --config=configs/tpu.py --target=tpu:v5p-8`.

Two settings differ from default.py, both from those compiles:
- 256 images per chip, which fits every generation's HBM, v5e's 16 GiB included.
- BatchNorm statistics per chip (`sync_batch_stats=False`), as in Goyal et al. (2017), MLPerf and the Flax example:
  synchronising them puts about a hundred small all-reduces on the forward and backward path of every step.

Measured results: none yet. To measure on a v4-8, with the TFDS data prepared in a bucket:

  experiments/launch/tpu_vm.sh --name=r50 --zone=us-central2-b --accelerator-type=v4-8 up -- \
      --config=configs/tpu.py --workdir=gs://BUCKET/runs/r50_tpu \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets

On a pod slice every worker runs the same command, e.g. `--config=configs/tpu.py:64` on a v5p-128.
"""

from configs import default

PER_CHIP = 256


def get_config(chips: str = "4"):
  """default.py with 256 images per chip over `chips` chips and BatchNorm statistics per chip."""
  config = default.get_config()
  config.batch_size = config.eval_batch_size = PER_CHIP * int(chips)
  config.sync_batch_stats = False
  return config
