r"""Throughput measurement: ResNet-50 on synthetic on-device data, no evaluation, no TensorFlow needed.

  python -m experiments.train --config=configs/benchmark.py --workdir=/tmp/bench

For careful figures with peers side by side use `python -m experiments.benchmark` instead.
"""
from configs import default


def get_config():
  """default.py on synthetic data for a few hundred steps."""
  config = default.get_config()
  config.data.name = "synthetic"
  config.batch_size = 256
  config.num_epochs = None
  config.num_steps = 300
  config.eval_every_epochs = None
  config.eval_every_steps = None
  config.log_every_steps = 50
  config.checkpoint_every_steps = 1_000_000
  # The optimizer of every measurement, ours and the peers' (benchmarks/peers/torch_step.py): SGD with momentum
  # 0.9 at a constant rate, no Nesterov, no weight decay.
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 0.0
  config.schedule.name = "constant"
  config.schedule.warmup_epochs = None
  config.schedule.warmup_steps = 0
  return config
