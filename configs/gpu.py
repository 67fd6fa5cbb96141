r"""ResNet-50 on ImageNet (default.py's recipe) on NVIDIA GPUs: bfloat16 compute, 128 images per GPU on 8 GPUs.

Measured results: none yet. To measure on one 8-GPU host, with ImageNet prepared in the TFDS data dir
/data/tensorflow_datasets:

  experiments/launch/multi_gpu.sh -- --config=configs/gpu.py --workdir=runs/r50_gpu \
      --config.data.data_dir=/data/tensorflow_datasets

and on several nodes under SLURM (data and workdir on a shared file system):

  sbatch --nodes=2 experiments/launch/slurm.sbatch --config=configs/gpu.py --workdir=/shared/runs/r50_gpu \
      --config.data.data_dir=/shared/tensorflow_datasets

The global batch must be a multiple of the GPU count (training refuses otherwise and says what to set); with more
GPUs either keep 1024 or raise it, e.g. `--config.batch_size=2048` on 16 GPUs (the learning rate follows the
linear scaling rule). bfloat16 needs Ampere (A100) or newer; on older GPUs use `--config.dtype=float32`.
"""

from configs import default


def get_config():
  """default.py as it is: bfloat16 compute and a global batch of 1024 (training and evaluation) suit these hosts."""
  return default.get_config()
