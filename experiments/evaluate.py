r"""Evaluates a run's checkpoint on its eval split, exactly (every example once), with the run's own config.

  python -m experiments.evaluate --workdir=runs/demo [--step=S] [--split=test]

Prints loss, top-1 and top-5 and writes them to WORKDIR/eval_step<S>.json.
"""
from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "Workdir of a training run (required).")
flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest complete one).")
flags.DEFINE_string("split", None, "Evaluate on this TFDS split instead of the run's config.data.eval_split.")
flags.DEFINE_bool("library_logs", False, "Also show the INFO lines of Orbax, TFDS and JAX (warnings always show).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required: the workdir of a training run")
  from resnet_jax import distributed, reporting, xla_flags  # pylint: disable=g-import-not-at-top

  if not FLAGS.library_logs:
    reporting.quiet_library_logs()
  config = reporting.load_config(FLAGS.workdir)
  xla_flags.apply(config.get("platform_xla_flags", True))  # As the run was trained; before any backend starts.
  distributed.hide_accelerators_from_tensorflow()
  from resnet_jax import train  # pylint: disable=g-import-not-at-top
  if FLAGS.split:
    config.data.eval_split = FLAGS.split
  results = train.evaluate_checkpoint(config, FLAGS.workdir, FLAGS.step)
  print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()
                 if not k.startswith("signal/")))
  reporting.write_json(f"{FLAGS.workdir}/eval_step{results['step']}.json", results)


if __name__ == "__main__":
  app.run(main)
