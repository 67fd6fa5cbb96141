r"""Trains and evaluates a ResNet: `resnet_jax.train.train_and_evaluate(config, workdir)`.

With no flags it runs the demo: the built-in `shapes` dataset (generated and prepared on first use, no download)
and a CIFAR-style ResNet-20, into runs/demo.

  python -m experiments.train                                     # the demo
  python -m experiments.train --config=configs/cifar10.py:depth=56,shortcut=none --workdir=runs/plain56
  python -m experiments.train --config=configs/default.py --workdir=runs/r50 --config.batch_size=512

Rerunning a command with the same --workdir resumes from its latest checkpoint.
"""
import os

from absl import app
from absl import flags
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
config_flags.DEFINE_config_file(
    "config", os.path.join(_HERE, os.pardir, "configs", "shapes.py"), "Training configuration file.",
    lock_config=True)
flags.DEFINE_string("workdir", "runs/demo", "Directory for checkpoints, metrics and TensorBoard files.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
flags.DEFINE_bool("library_logs", False, "Also show the INFO lines of Orbax, TFDS and JAX (warnings always show).")

_UNSET: list[str] = []  # Config fields set to None on the command line (see parse_flags).


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags, accepting `--config.FIELD=None` for typed fields (ml_collections' parser would reject it).

  Recipes set durations as epochs or as steps; switching a run to the other unit means unsetting one field,
  e.g. `--config.num_epochs=None --config.num_steps=500`.
  """
  keep = []
  for arg in argv:
    key, sep, value = arg.partition("=")
    if sep and value == "None" and key.startswith("--config."):
      _UNSET.append(key[len("--config."):])
    else:
      keep.append(arg)
  return flags.FLAGS(keep)


def apply_unset(config) -> None:
  from resnet_jax import sweep  # pylint: disable=g-import-not-at-top

  for path in _UNSET:
    try:
      sweep.unset_field(config, path)
    except KeyError:
      raise app.UsageError(f"--config.{path}=None: the config has no field {path!r}") from None


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  apply_unset(flags.FLAGS.config)
  from resnet_jax import distributed  # pylint: disable=g-import-not-at-top
  from resnet_jax import reporting  # pylint: disable=g-import-not-at-top
  from resnet_jax import xla_flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.library_logs:
    reporting.quiet_library_logs()
  xla_flags.apply(flags.FLAGS.config.get("platform_xla_flags", True))  # before any backend starts
  distributed.hide_accelerators_from_tensorflow()
  launch = distributed.detect(os.environ, coordinator_address=flags.FLAGS.coordinator_address,
                              num_processes=flags.FLAGS.num_processes, process_id=flags.FLAGS.process_id)
  distributed.initialize(launch)
  distributed.log_topology(launch)

  from resnet_jax import train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
