r"""ImageNet ResNet-50 v1.5, the MLPerf-style large-batch recipe: LARS, label smoothing 0.1, about 40 epochs.

  python -m experiments.train --config=configs/imagenet_lars.py --workdir=runs/r50_lars

Polynomial (power 2) decay after 2 warmup epochs, batch 4096, no weight decay on BatchNorm or biases (LARS also
skips its trust ratio there). MLPerf's reference target is 75.9 % top-1. Measured results: none yet.

Batch 4096 needs 8 chips or GPUs or more: 1,024 images per chip on a 4-chip TPU v5e slice is refused by its
compiler (the largest that fits is 992), and 4,096 on one GPU exceeds an H200's usable memory; see
docs/accelerators.md ("Before renting").
"""
from configs import default


def get_config():
  """The LARS recipe: default.py with a few fields changed."""
  config = default.get_config()
  config.batch_size = 4096
  config.eval_batch_size = 4096
  config.num_epochs = 40.0
  config.label_smoothing = 0.1
  config.optimizer.name = "lars"
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-5
  config.schedule.name = "polynomial"
  config.schedule.base_lr = 0.585  # ~9.5 at batch 4096 after the linear scaling rule.
  config.schedule.warmup_epochs = 2.0
  config.schedule.end_lr = 1e-4
  config.eval_every_epochs = 4.0
  return config
