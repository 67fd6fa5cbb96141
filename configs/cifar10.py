r"""CIFAR-10, the ResNet paper's recipe (He et al. 2015, section 4.2).

Batch 128, SGD momentum 0.9, lr 0.1 divided by 10 at 32k and 48k steps, 64k steps, weight decay 1e-4,
4-pixel pad + random 32 crop + flip. The network is chosen like any other field: `--config.model.name` (depth 6n+2:
cifar_resnet20, 32, 44, 56, 110, 1202) and `--config.model.shortcut` ('A', 'B', 'C', or 'none' for the plain net).

  python -m experiments.prepare_data --dataset=cifar10
  python -m experiments.train --config=configs/cifar10.py --config.model.name=cifar_resnet56 \
      --config.model.shortcut=none --workdir=runs/cifar_plain56

Measured results: none yet (paper, Table 6: ResNet-20 8.75 %, ResNet-56 6.97 % test error).
"""
from configs import default


def reject_arguments(args: str | None, file: str) -> None:
  """Config-file arguments (`FILE:depth=56,shortcut=none`) were the old way to pick the network; say the new one."""
  if args:
    raise ValueError(f"{file} takes no arguments (got {args!r}): choose the network with config fields, e.g. "
                     "--config.model.name=cifar_resnet56 --config.model.shortcut=none")


def small_images():
  """What CIFAR-10 and the built-in dataset share: a CIFAR ResNet (option A), float32, CIFAR-style augmentation of
  an in-memory dataset, batch 128, SGD without Nesterov. default.py with these fields changed."""
  config = default.get_config()
  config.model.name = "cifar_resnet20"
  config.dtype = "float32"
  config.data.preprocess = "cifar"
  config.data.eval_split = "test"
  config.data.cache = True
  # The small pipeline needs no tuning, and tf.data's autotuner thread can hold up the end of a run by up to a
  # minute (it is joined while waiting out its optimisation period).
  config.data.autotune = False
  config.batch_size = 128
  config.optimizer.nesterov = False
  return config


def get_config(args: str | None = None):
  """The paper's CIFAR-10 recipe: `small_images()` with the dataset and the step schedule."""
  reject_arguments(args, "configs/cifar10.py")
  config = small_images()
  config.data.name = "cifar10"
  config.data.image_size = 32
  config.eval_batch_size = 1000
  config.num_epochs = None
  config.num_steps = 64_000

  config.schedule.name = "step"
  config.schedule.base_lr = 0.2  # 0.1 at batch 128 under the linear scaling rule (lr = base_lr * batch / 256).
  config.schedule.warmup_epochs = None
  config.schedule.warmup_steps = 0
  config.schedule.boundaries_steps = (32_000, 48_000)

  config.log_every_steps = 200
  config.eval_every_epochs = None
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  return config
