r"""ResNet-50 on ImageNet (default.py's recipe) on Cloud TPU: bfloat16 compute, global batch 1024.

1024 is 256 images per chip on a v4-8 (4 chips, one JAX device each) and 128 per chip on a v5e-8 (8 chips). On a
pod slice every worker runs the same command; the global batch must be a multiple of the device count (training
refuses otherwise and says what to set), e.g. `--config.batch_size=4096` on a v4-64 (32 devices, 128 each).

Measured results: none yet. To measure on a v4-8, with the TFDS data prepared in a bucket:

  experiments/launch/tpu_vm.sh --name=r50 --zone=us-central2-b --accelerator-type=v4-8 up -- \
      --config=configs/tpu.py --workdir=gs://BUCKET/runs/r50_tpu \
      --config.data.data_dir=gs://BUCKET/tensorflow_datasets
"""

from configs import default


def get_config():
  """default.py as it is: bfloat16 compute and a global batch of 1024 (training and evaluation) suit these hosts."""
  return default.get_config()
