r"""Runs a grid of training runs, each in its own workdir, then tabulates and plots them.

  python -m experiments.sweep --config=configs/shapes.py \
      --grid='model.name=cifar_resnet20,cifar_resnet56 model.shortcut=A,none' --workdir=runs/sweep
  python -m experiments.sweep --ablation=shortcuts --workdir=runs/shortcuts --config.num_epochs=1
  python -m experiments.sweep --ablation=list                      # the ready-made sweeps in configs/ablations/

Grid: space-separated axes `key=v1,v2,...`, each key a config field (`model.shortcut=A,none` ->
`--config.model.shortcut=A`, `seed=0,1,2` -> `--config.seed=0`); tuples keep their commas inside parentheses:
`model.head_hidden=(64,),(64,64)`. Any other flag (`--config.num_steps=500`, ...) is passed to every run unchanged.

Each run trains in WORKDIR/NAME (e.g. `runs/sweep/name=cifar_resnet20,shortcut=none`). Rerunning the command skips
finished runs and resumes interrupted ones; `--report_only` writes the report from whatever runs WORKDIR holds,
training nothing. At the end WORKDIR holds results.csv, results.md, loss.png, error.png
(training error dashed, test error bold: Fig. 6 of He et al. 2015) and signal.png (per-block residual-branch std:
Fig. 7).
"""
import sys

from absl import app, flags

from resnet_jax import startup

_CONFIG = flags.DEFINE_string("config", "configs/shapes.py", "Config file every run starts from.")
_GRID = flags.DEFINE_string("grid", None, "Axes `key=v1,v2 key2=...`; see the module docstring.")
_ABLATION = flags.DEFINE_string("ablation", None, "A ready-made sweep of configs/ablations/ (instead of --config and "
                                "--grid); 'list' prints them.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory; run NAME trains in WORKDIR/NAME.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs trained at the same time (each uses every core: keep 1 on small "
                                 "machines).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the planned runs and their status, and train nothing.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the report (results, plots, summary over seeds) from the "
                                  "runs WORKDIR holds, and train nothing (no lesion study either).")


def main(argv):
  from resnet_jax import sweep

  extra = startup.trainer_flags(argv)  # Flags this script does not define, for every trainer.
  if _ABLATION.value == "list":
    for name in sweep.ablation_names():
      ablation = sweep.load_ablation(name)
      summary = " ".join(ablation.doc.split("\n\n")[0].split())
      print(f"{name}: {summary}\n    --config={ablation.config} --grid='{ablation.grid}' {' '.join(ablation.flags)}\n")
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  if _ABLATION.value and (_GRID.value or flags.FLAGS["config"].present):
    raise app.UsageError("--ablation sets the config and grid: drop --config and --grid, or drop --ablation")
  if not _ABLATION.value and not _GRID.value:
    raise app.UsageError("give --grid='key=v1,v2 ...' or --ablation=NAME (--ablation=list shows them)")

  config, grid, lesions, steps = _CONFIG.value, _GRID.value, (), ()
  if _ABLATION.value:
    ablation = sweep.load_ablation(_ABLATION.value)
    config, grid, extra, lesions = ablation.config, ablation.grid, [*ablation.flags, *extra], ablation.lesion
    steps = ablation.steps
  if _DRY_RUN.value and _REPORT_ONLY.value:
    raise app.UsageError("--dry_run and --report_only: choose one")
  codes = sweep.run_sweep(config, grid, _WORKDIR.value, extra, parallel=_PARALLEL.value, dry_run=_DRY_RUN.value,
                          report_only=_REPORT_ONLY.value, steps=steps)
  failed = sorted(name for name, code in codes.items() if code != 0)
  # The ablation's lesion studies, once its runs are done.
  if lesions and not failed and not _DRY_RUN.value and not _REPORT_ONLY.value:
    codes = sweep.run_lesions(_WORKDIR.value, lesions)
    failed = sorted(f"lesion of {name}" for name, code in codes.items() if code != 0)
  if failed:
    sys.exit(f"{len(failed)} run(s) failed: {failed}; see train.log (lesion.log for a lesion study) in their "
             "workdirs. Rerun to retry them.")


if __name__ == "__main__":
  startup.run(main, flags_parser=startup.keep_unknown_flags)
