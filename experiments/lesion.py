r"""Lesion study of a trained residual network (Veit et al. 2016): skip each block's residual branch in turn.

  python -m experiments.lesion --workdir=runs/sweep/name=cifar_resnet56,shortcut=A
  python -m experiments.lesion --workdir=runs/demo --step=1000

Restores the run's checkpoint (the latest, or --step), evaluates it intact and then once per block with that block's
branch skipped (model knob lesion_blocks), on the run's eval split. Writes WORKDIR/lesion.csv, lesion.md and
lesion.png (the change in top-1 accuracy per block). Plain networks (shortcut='none') are refused: there, deleting a
layer is not defined, since no identity path would carry the signal past it.
"""
from absl import app, flags

from resnet_jax import startup

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to study; default: the latest.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  from resnet_jax import config as config_lib
  from resnet_jax import lesion

  config = config_lib.load_run_config(_WORKDIR.value)
  lesion.check_defined(config.model)  # A refusal, before any restore.
  startup.prepare_process(config.platform_xla_flags)  # As the run was trained; before any backend starts.
  result = lesion.study(config, _WORKDIR.value, step=_STEP.value)
  for path in lesion.write(_WORKDIR.value, result):
    print(f"wrote {path}")


if __name__ == "__main__":
  startup.run(main)
