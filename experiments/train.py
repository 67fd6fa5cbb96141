r"""Trains and evaluates a ResNet: `resnet_jax.train.train_and_evaluate(config, workdir)`.

With no flags it runs the demo: the built-in `shapes` dataset (generated and prepared on first use, no download)
and a CIFAR-style ResNet-20, into runs/demo.

  python -m experiments.train                                     # the demo
  python -m experiments.train --config=configs/cifar10.py --config.model.name=cifar_resnet56 \
      --config.model.shortcut=none --workdir=runs/plain56
  python -m experiments.train --config=configs/default.py --workdir=runs/r50 --config.batch_size=512

Any config field is set with --config.key=value (None unsets it). Rerunning a command with the same --workdir
resumes from its latest checkpoint.
"""
import os

from absl import app, flags

from resnet_jax import config as config_lib
from resnet_jax import startup

_CONFIG = flags.DEFINE_string(
    "config", os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "shapes.py"),
    "Config file (configs/*.py); set any of its fields with --config.key=value.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Directory for checkpoints, metrics and TensorBoard files.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")

_OVERRIDES: list[str] = []  # The --config.key=value arguments, resolved by resnet_jax.config in main.


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the script's flags; the config overrides are kept for `resnet_jax.config.resolve`."""
  rest, overrides = config_lib.split_overrides(argv)
  _OVERRIDES[:] = overrides
  return flags.FLAGS(rest)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = config_lib.resolve(_CONFIG.value, _OVERRIDES)
  workdir = _WORKDIR.value
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir={workdir} is a file; give a directory (it is created if missing)")
  startup.prepare_process(config.platform_xla_flags)  # Before anything touches a JAX device.
  from resnet_jax import distributed

  launch = distributed.detect(os.environ, coordinator_address=_COORDINATOR.value,
                              num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  distributed.initialize(launch)
  distributed.log_topology(launch)
  from resnet_jax import train

  train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  startup.run(main, flags_parser=parse_flags)
