r"""Evaluates a run's checkpoint on its eval split, exactly (every example once), with the run's own config.

  python -m experiments.evaluate --workdir=runs/demo [--step=S] [--split=test] [--report=false]

Prints loss, top-1 and top-5 and writes them to WORKDIR/eval_step<S>.json. Beside it, unless --report=false, the
report a person opens: per_class.csv and per_class.md (accuracy per class, with the class names), confusion.png
(the confusion matrix) and mistakes.png (the most confident mistakes, with true and predicted names).
"""
from absl import app, flags

from resnet_jax import startup

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a training run (required).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: the latest complete one).")
_SPLIT = flags.DEFINE_string("split", None, "Evaluate on this TFDS split instead of the run's config.data.eval_split.")
_REPORT = flags.DEFINE_bool("report", True, "Also write per_class.csv/.md, confusion.png and mistakes.png.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the workdir of a training run")
  from resnet_jax import config as config_lib
  from resnet_jax import files

  config = config_lib.load_run_config(_WORKDIR.value)
  startup.prepare_process(config.platform_xla_flags)  # As the run was trained; before any backend starts.
  from resnet_jax import evaluation, predict

  if _SPLIT.value:
    config.data.eval_split = _SPLIT.value
  if _REPORT.value:
    results, written = predict.evaluation_report(config, _WORKDIR.value, _STEP.value)
  else:
    results, written = evaluation.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value), []
  print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in results.items()
                 if not k.startswith("signal/")))
  files.write_json(f"{_WORKDIR.value}/eval_step{results['step']}.json", results)
  for path in written:
    print(f"wrote {path}")


if __name__ == "__main__":
  startup.run(main)
