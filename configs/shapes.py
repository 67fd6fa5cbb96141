r"""The demo: a CIFAR-style ResNet-20 on the built-in `shapes` dataset, minutes on a laptop CPU, no download.

  python -m experiments.train            # same as --config=configs/shapes.py --workdir=runs/demo

Its measured result and wall time are in the README's quick start. The dataset is generated and prepared on first
use into the TFDS data dir. Other networks as for any config: `--config.model.name=cifar_resnet56
--config.model.shortcut=none`.
"""
from ml_collections.config_dict import placeholder

from configs import cifar10


def get_config(args: str | None = None):
  """The demo: `cifar10.small_images()` on the built-in dataset, 2.5 epochs of cosine decay."""
  cifar10.reject_arguments(args, "configs/shapes.py")
  config = cifar10.small_images()
  config.data.name = "shapes"
  config.data.image_size = placeholder(int)  # None: the stored size (32; 16 for shapes/px16, 64 for shapes/large).

  config.eval_batch_size = 500
  config.num_epochs = 2.5  # 975 steps of 128.
  config.schedule.base_lr = 0.2  # 0.1 at batch 128.
  config.schedule.warmup_epochs = 0.1

  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  return config
