r"""ResNet-50 on ImageNet (default.py's recipe) on NVIDIA GPUs: bfloat16, 256 images per GPU, BatchNorm per GPU.

`configs/gpu.py:N` sets the global batch for N GPUs (default 8: 2,048); the learning rate follows the linear scaling
rule (`base_lr` is per 256 images). What the compiler says of this config on H100s and H200s (memory per GPU, the
largest batch that fits, the roofline bound) is in docs/accelerators.md ("Before renting"), made by
`python -m experiments.compile_for --config=configs/gpu.py --target=gpu:h100x8`.

Two settings differ from default.py, both from those compiles:
- 256 images per GPU (default.py's 1024 is 128 on 8 GPUs): about 10 GiB of an H100's 59 usable GiB, and the batch
  size of NVIDIA's own ResNet-50 recipes per GPU.
- BatchNorm statistics per GPU (`sync_batch_stats=False`), as in Goyal et al. (2017) and MLPerf: synchronising them
  puts about a hundred small all-reduces on the forward and backward path of every step (131 all-reduces per step
  on 8 H100s instead of 33), each waiting on the network, for no gain at 256 images per GPU.

Measured results: none yet. To measure on one 8-GPU host, with ImageNet prepared in the TFDS data dir
/data/tensorflow_datasets:

  experiments/launch/multi_gpu.sh -- --config=configs/gpu.py --workdir=runs/r50_gpu \
      --config.data.data_dir=/data/tensorflow_datasets

and on several nodes under SLURM (data and workdir on a shared file system), 16 GPUs:

  sbatch --nodes=2 experiments/launch/slurm.sbatch --config=configs/gpu.py:16 --workdir=/shared/runs/r50_gpu \
      --config.data.data_dir=/shared/tensorflow_datasets

bfloat16 needs Ampere (A100) or newer; on older GPUs use `--config.dtype=float32`.
"""

from configs import default

PER_GPU = 256


def get_config(gpus: str = "8"):
  """default.py with 256 images per GPU over `gpus` GPUs and BatchNorm statistics per GPU."""
  config = default.get_config()
  config.batch_size = config.eval_batch_size = PER_GPU * int(gpus)
  config.sync_batch_stats = False
  return config
