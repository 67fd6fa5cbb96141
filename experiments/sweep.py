r"""Runs a grid of training runs, each in its own workdir, then tabulates and plots them.

  python -m experiments.sweep --config=configs/shapes.py --grid='model.depth=20,56 shortcut=A,none' \
      --workdir=runs/sweep
  python -m experiments.sweep --ablation=shortcuts --workdir=runs/shortcuts --config.num_epochs=1
  python -m experiments.sweep --ablation=list                      # the ready-made sweeps in configs/ablations/

Grid: space-separated axes `key=v1,v2,...`. A dotted key is a config override (`model.depth=20,56` ->
`--config.model.depth=20`), a bare key a config-file argument (`shortcut=A,none` -> `configs/shapes.py:shortcut=A`).
Tuples keep their commas inside parentheses: `model.head_hidden=(64,),(64,64)`. Any other flag
(`--config.num_steps=500`, ...) is passed to every run unchanged.

Each run trains in WORKDIR/NAME (e.g. `runs/sweep/depth=20,shortcut=none`). Rerunning the command skips finished
runs and resumes interrupted ones. At the end WORKDIR holds results.csv, results.md, loss.png, error.png (training
error dashed, test error bold: Fig. 6 of He et al. 2015) and signal.png (per-block residual-branch std: Fig. 7).
"""
import sys

from absl import app
from absl import flags

flags.DEFINE_string("config", "configs/shapes.py", "Config file, with optional arguments (FILE:k=v,k=v).")
flags.DEFINE_string("grid", None, "Axes `key=v1,v2 key2=...`; see the module docstring.")
flags.DEFINE_string("ablation", None, "A ready-made sweep of configs/ablations/ (instead of --config/--grid); "
                    "'list' prints them.")
flags.DEFINE_string("workdir", None, "The sweep's directory; run NAME trains in WORKDIR/NAME.")
flags.DEFINE_integer("parallel", 1, "Runs trained at the same time (each uses every core: keep 1 on small machines).")
flags.DEFINE_bool("dry_run", False, "Print the planned runs and their status, and train nothing.")
FLAGS = flags.FLAGS


def _parse_flags(argv):
  # Flags this script does not define are trainer flags for every run: keep them instead of rejecting them.
  return FLAGS(argv, known_only=True)


def main(argv):
  from resnet_jax import sweep  # pylint: disable=g-import-not-at-top

  extra = argv[1:]
  stray = [a for a in extra if not a.startswith("--")]
  if stray:
    raise app.UsageError(f"unexpected arguments {stray}: pass trainer flags as --name=value")
  if FLAGS.ablation == "list":
    for name in sweep.ablation_names():
      ablation = sweep.load_ablation(name)
      summary = " ".join(ablation.doc.split("\n\n")[0].split())
      print(f"{name}: {summary}\n    --config={ablation.config} --grid='{ablation.grid}' {' '.join(ablation.flags)}\n")
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  if FLAGS.ablation and (FLAGS.grid or FLAGS["config"].present):
    raise app.UsageError("--ablation sets the config and grid: drop --config and --grid, or drop --ablation")
  if not FLAGS.ablation and not FLAGS.grid:
    raise app.UsageError("give --grid='key=v1,v2 ...' or --ablation=NAME (--ablation=list shows them)")

  try:
    config, grid = FLAGS.config, FLAGS.grid
    if FLAGS.ablation:
      ablation = sweep.load_ablation(FLAGS.ablation)
      config, grid, extra = ablation.config, ablation.grid, [*ablation.flags, *extra]
    codes = sweep.run_sweep(config, grid, FLAGS.workdir, extra, parallel=FLAGS.parallel, dry_run=FLAGS.dry_run)
  except ValueError as error:
    sys.exit(f"sweep: {error}")  # A bad grid or config: the message says what to fix, a traceback would not.
  failed = sorted(name for name, code in codes.items() if code != 0)
  if failed:
    sys.exit(f"{len(failed)} run(s) failed: {failed}; see train.log in their workdirs. Rerun to retry them.")


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
