r"""Hyperparameter search (random or TPE, through Optuna) over declared ranges, each trial an ordinary training run.

  python -m experiments.search --config=configs/shapes.py --workdir=runs/search --sampler=tpe --trials=8 \
      --space='schedule.base_lr=loguniform(0.01,1) optimizer.weight_decay=uniform(0,1e-3) model.shortcut=choice(A,B)'

Space: settings `key=loguniform(low,high)`, `uniform(low,high)`, `int(low,high)` or `choice(a,b,...)`, separated by
spaces (see resnet_jax/search.py). Any other flag (`--config.num_steps=500`, ...) is passed to every trial. Trial
N trains in WORKDIR/trial<NNN>; trials whose evaluations fall behind the finished trials' (the median rule, after
--startup_trials finished trials) are stopped early. Rerunning the command continues the search: finished and
pruned trials are kept, a trial left running is resumed from its checkpoint. WORKDIR ends with results.csv,
results.md, search.png (the metric against each setting), loss.png and error.png.
"""
from absl import app, flags

from resnet_jax import startup

_CONFIG = flags.DEFINE_string("config", "configs/shapes.py", "Config file every trial starts from.")
_SPACE = flags.DEFINE_string("space", None, "Settings `key=kind(...) ...` to search; see the module docstring.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The search's directory; trial N trains in WORKDIR/trial<NNN>.")
_TRIALS = flags.DEFINE_integer("trials", 8, "Trials to finish (finished, pruned or failed), over all invocations.")
_SAMPLER = flags.DEFINE_enum("sampler", "tpe", ["tpe", "random"], "How settings are drawn.")
_METRIC = flags.DEFINE_enum("metric", "top1", ["top1", "top5", "loss"], "The evaluation metric optimised (top1, "
                            "top5: higher is better; loss: lower).")
_PRUNER = flags.DEFINE_enum("pruner", "median", ["median", "none"], "Stop trials behind the median of the finished "
                            "ones at an evaluation ('none': never).")
_STARTUP = flags.DEFINE_integer("startup_trials", 3, "Finished trials before the pruner acts; also the trials TPE "
                                "draws at random before it models the results.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the sampler.")


def main(argv):
  extra = startup.trainer_flags(argv)  # Flags this script does not define, for every trainer.
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  if not _SPACE.value:
    raise app.UsageError("--space is required, e.g. --space='schedule.base_lr=loguniform(0.01,1)'")
  from resnet_jax import search

  counts = search.run_search(_CONFIG.value, _SPACE.value, _WORKDIR.value, extra, trials=_TRIALS.value,
                             sampler=_SAMPLER.value, metric=_METRIC.value, pruner=_PRUNER.value,
                             startup_trials=_STARTUP.value, seed=_SEED.value)
  print(f"{counts['finished']} trial(s) finished, {counts['pruned']} pruned, {counts['failed']} failed (see train.log "
        "in their workdirs).")


if __name__ == "__main__":
  startup.run(main, flags_parser=startup.keep_unknown_flags)
