r"""Lesion study of a trained residual network (Veit et al. 2016): skip each block's residual branch in turn.

  python -m experiments.lesion --workdir=runs/sweep/depth=56,shortcut=A
  python -m experiments.lesion --workdir=runs/demo --step=1000

Restores the run's checkpoint (the latest, or --step), evaluates it intact and then once per block with that block's
branch skipped (model knob drop_blocks), on the run's eval split. Writes WORKDIR/lesion.csv, lesion.md and
lesion.png (the change in top-1 accuracy per block). Plain networks (shortcut='none') are refused: there, deleting a
layer is not defined, since no identity path would carry the signal past it.
"""
import sys

from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "A training run's directory (holds config.json and checkpoints/).")
flags.DEFINE_integer("step", None, "Checkpoint step to study; default: the latest.")
flags.DEFINE_bool("library_logs", False, "Also show the INFO lines of Orbax, TFDS and JAX (warnings always show).")
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  from resnet_jax import sweep  # pylint: disable=g-import-not-at-top

  try:
    config = sweep.load_run_config(FLAGS.workdir)
    sweep.check_lesion_defined(config.model)
  except ValueError as error:
    sys.exit(f"lesion: {error}")  # A refusal, not a crash: the reason without a traceback.

  from resnet_jax import distributed, reporting, xla_flags  # pylint: disable=g-import-not-at-top

  if not FLAGS.library_logs:
    reporting.quiet_library_logs()
  xla_flags.apply(config.get("platform_xla_flags", True))  # As the run was trained; before any backend starts.
  distributed.hide_accelerators_from_tensorflow()
  result = sweep.lesion_study(config, FLAGS.workdir, step=FLAGS.step)
  for path in sweep.write_lesion(FLAGS.workdir, result):
    print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
