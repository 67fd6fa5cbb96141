"""Hyperparameter search: random search or TPE (Optuna) over declared ranges, N trials, trials that fall behind
stopped early by a pruner fed their evaluations; each trial an ordinary training run in the sweep layout.

Space syntax (`--space`): settings separated by spaces, each `key=kind(...)` with a config field as in grids:
`loguniform(low,high)`, `uniform(low,high)`, `int(low,high)` (both ends included) or `choice(a,b,...)` (values
written as on the command line), e.g.
`schedule.base_lr=loguniform(0.01,1) optimizer.weight_decay=uniform(0,1e-3) model.shortcut=choice(A,B)`.

Each trial trains with `python -m experiments.train` in WORKDIR/trial<NNN> (`resnet_jax.sweep.execute`: train.log,
SIGTERM to the trainer when the search stops). While it runs, its metrics.jsonl evaluation records are reported to
the pruner (Optuna's median rule: after `startup_trials` finished trials, a trial whose metric at an evaluation is
worse than the median of the finished trials' at the same step is pruned); a pruned trial's trainer gets SIGTERM,
checkpoints and exits, and the trial is recorded as pruned (WORKDIR/trial<NNN>/pruned.json), never resumed.

The study lives in WORKDIR/search.db (SQLite, which a kill cannot corrupt); WORKDIR/search.json holds the settings a
rerun must repeat. Rerunning the command continues the search: finished and pruned trials stay as they are, and a
trial left running by a kill is run again with the same settings, in its own workdir, so its training resumes from
its checkpoint. The sampler is reseeded from the seed and the number of finished trials before each new trial, so
an interrupted search draws the same settings as an uninterrupted one. At the end (and when stopped) the search
writes results.csv and results.md (each trial's values, status and metric), search.png (the metric against each
setting) and the sweeps' loss.png and error.png.

Optuna is imported only here, and only when a search runs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import signal
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from resnet_jax import config as config_lib
from resnet_jax import files, results, sweep
from resnet_jax import grid as grid_lib

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
METRICS = {"top1": "maximize", "top5": "maximize", "loss": "minimize"}  # Of the eval records and done.json.
KINDS = ("loguniform", "uniform", "int", "choice")
DATABASE, MANIFEST, PRUNED_FILE = "search.db", "search.json", "pruned.json"
STUDY = "search"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_EXAMPLE = "e.g. --space='schedule.base_lr=loguniform(0.01,1) model.shortcut=choice(A,B)'"


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One searched setting: a config key, a kind (KINDS) and its bounds (numbers) or choices (strings)."""
  key: str
  kind: str
  args: tuple

  def suggest(self, trial) -> Any:
    if self.kind == "choice":
      return trial.suggest_categorical(self.key, list(self.args))
    if self.kind == "int":
      return trial.suggest_int(self.key, *self.args)
    return trial.suggest_float(self.key, *self.args, log=self.kind == "loguniform")

  def candidates(self) -> tuple:
    """Values that together check the setting: both bounds, or every choice."""
    return self.args


def format_value(value: Any) -> str:
  """A sampled value as a --config override writes it (floats in full precision)."""
  return repr(float(value)) if isinstance(value, float) else str(value)


def _number(text: str, token: str, integer: bool):
  try:
    return int(text) if integer else float(text)
  except ValueError:
    kind = "a whole number" if integer else "a number"
    raise ValueError(f"search setting {token!r}: {text!r} is not {kind}") from None


def parse_space(text: str) -> list[Dimension]:
  """Parses the --space syntax (module docstring) into dimensions, in order.

  Raises:
    ValueError: empty, a missing '=', an unknown kind, bounds that are not numbers or not increasing (log ranges
      must be positive), fewer than two or repeated choices, a malformed or repeated key.
  """
  tokens = grid_lib.split_top_level(text or "", None)
  if not tokens:
    raise ValueError(f"the search space is empty: give settings key=kind(...) ({_EXAMPLE})")
  dims, seen = [], set()
  for token in tokens:
    key, sep, rest = token.partition("=")
    match = re.fullmatch(r"(\w+)\((.*)\)", rest.strip())
    if not sep or not match:
      raise ValueError(f"search setting {token!r}: write key=loguniform(low,high), uniform(low,high), int(low,high) "
                       f"or choice(a,b,...) ({_EXAMPLE})")
    if not _KEY.match(key):
      raise ValueError(f"search setting {token!r}: {key!r} is not a config key (letters, digits, '_' and dots)")
    if key in seen:
      raise ValueError(f"search key {key!r} appears twice: give it one range")
    seen.add(key)
    kind, inner = match.groups()
    values = [v.strip() for v in grid_lib.split_top_level(inner, ",")]
    if kind not in KINDS:
      raise ValueError(f"search setting {token!r}: unknown kind {kind!r}; choose one of {list(KINDS)}")
    if kind == "choice":
      if len(values) < 2 or not all(values) or len(set(values)) != len(values):
        raise ValueError(f"search setting {token!r}: choice needs two or more distinct, non-empty values")
      dims.append(Dimension(key, kind, tuple(values)))
      continue
    if len(values) != 2:
      raise ValueError(f"search setting {token!r}: {kind} takes two bounds, {kind}(low,high)")
    low, high = (_number(v, token, kind == "int") for v in values)
    if not low < high:
      raise ValueError(f"search setting {token!r}: the low bound must be below the high one")
    if kind == "loguniform" and low <= 0:
      raise ValueError(f"search setting {token!r}: a log-uniform range must be positive")
    dims.append(Dimension(key, kind, (low, high)))
  return dims


# ----------------------------------------------------------------------------------------------------------------
# Planning: settings checked as the trainer resolves them, the manifest
# ----------------------------------------------------------------------------------------------------------------
def check(config_file: str, dims: Sequence[Dimension], extra_flags: Sequence[str] = ()) -> None:
  """Resolves the config with every bound and choice (one setting at a time) and builds its model.

  Raises:
    ValueError: a key also set by an extra flag, an unknown key, a value of the wrong type, an impossible model.
  """
  extra = [f for f in extra_flags if f.startswith(config_lib.PREFIX)]
  extra_keys = {config_lib.override_key(f) for f in extra}
  for dim in dims:
    if dim.key in extra_keys:
      raise ValueError(f"search key {dim.key!r} is also set by --config.{dim.key}: set it in one place only")
    for value in dim.candidates():
      try:
        sweep.check_model(config_lib.resolve(config_file, [f"{config_lib.PREFIX}{dim.key}={value}", *extra]))
      except ValueError as error:
        raise ValueError(f"search setting {dim.key}={value}: {error}") from None


def settings(config_file: str, space: str, *, sampler: str, metric: str, pruner: str, startup_trials: int, seed: int,
             extra_flags: Sequence[str]) -> dict[str, Any]:
  return {"config": config_file, "space": space, "sampler": sampler, "metric": metric, "pruner": pruner,
          "startup_trials": startup_trials, "seed": seed, "flags": list(extra_flags)}


def check_manifest(workdir: str, wanted: dict[str, Any]) -> None:
  """Raises ValueError if WORKDIR was searched with other settings (the number of trials may change)."""
  before = files.read_json(os.path.join(workdir, MANIFEST))
  if before is not None and before != wanted:
    changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
    lines = "".join(f"\n  {k}: before {before.get(k)!r}, now {wanted.get(k)!r}" for k in changed)
    raise ValueError(f"{workdir} holds a search with other settings:{lines}\nUse another --workdir, or delete "
                     f"{workdir} to search afresh.")


def trial_run(name: str, workdir: str, config_file: str, dims: Sequence[Dimension], params: dict[str, Any],
              extra_flags: Sequence[str]) -> sweep.Run:
  """The training run of a trial: WORKDIR/name, the sampled values as overrides."""
  values = {dim.key: format_value(params[dim.key]) for dim in dims}
  run_dir = os.path.join(workdir, name)
  overrides = [f"{config_lib.PREFIX}{k}={v}" for k, v in values.items()]
  return sweep.Run(name, run_dir, values, (f"--config={config_file}", f"--workdir={run_dir}", *overrides,
                                           *extra_flags))


# ----------------------------------------------------------------------------------------------------------------
# Running trials
# ----------------------------------------------------------------------------------------------------------------
class Stopped(Exception):
  """A trial's trainer stopped without finishing (it was sent SIGTERM by someone else): rerun to resume it."""


def _eval_values(workdir: str, metric: str) -> list[tuple[int, float]]:
  records = files.split_records(sweep.read_metrics(workdir), "eval")
  return [(r["step"], float(r[metric])) for r in records if isinstance(r.get(metric), (int, float))]


def _is_finished(trial) -> bool:
  """Counts towards the number of trials: complete, pruned, or failed by its trainer (not left by a kill)."""
  name = trial.state.name
  return name in ("COMPLETE", "PRUNED") or (name == "FAIL" and "exit_code" in trial.user_attrs)


def run_trial(study, trial, run: sweep.Run, *, metric: str, workdir: str, echo: Callable[[str], None]) -> str:
  """Trains one trial, reporting its evaluations and stopping it when pruned; tells the study the outcome.

  Returns:
    'finished', 'pruned' or 'failed'.

  Raises:
    Stopped: the trainer exited without finishing and without being pruned.
  """
  import optuna

  reported: set[int] = set()
  pruned: list[tuple[int, float]] = []

  def report(process=None) -> None:
    for step, value in _eval_values(run.workdir, metric):
      if step in reported:
        continue
      trial.report(value, step)
      reported.add(step)
      if process is not None and not pruned and trial.should_prune():
        pruned.append((step, value))
        echo(f"[prune] {run.name}: {metric} {value:.4g} at step {step} is behind the finished trials; stopping "
             "its trainer (SIGTERM)")
        process.send_signal(signal.SIGTERM)

  codes = sweep.execute([run], echo=echo, watch=lambda _, process: report(process),
                        on_finish=lambda r, code, seconds: sweep.add_seconds(workdir, r.name, seconds))
  report()
  done = files.read_json(os.path.join(run.workdir, files.DONE_FILE))
  code = codes.get(run.name, 0)
  if pruned:
    step, value = pruned[0]
    files.write_json(os.path.join(run.workdir, PRUNED_FILE), {"step": step, metric: value, "trial": trial.number})
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return "pruned"
  if done is not None and isinstance(done.get(metric), (int, float)):
    study.tell(trial, float(done[metric]))
    return "finished"
  if code != 0:
    trial.set_user_attr("exit_code", code)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return "failed"
  raise Stopped(f"trial {run.name}: its trainer stopped before finishing (was it sent SIGTERM?); rerun the search "
                "to resume it")


def _recover(study, echo: Callable[[str], None]) -> None:
  """Trials left running by a killed search: marked failed, and queued again with the same settings and workdir."""
  import optuna

  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    if "run" in trial.user_attrs:
      echo(f"[resume] {trial.user_attrs['run']}: left running by an interrupted search; running it again with the "
           "same settings")
      study.enqueue_trial(trial.params, user_attrs={"run": trial.user_attrs["run"], "retry_of": trial.number})


def trial_seed(seed: int, finished: int) -> int:
  """The sampler's seed for the trial drawn after `finished` trials (distinct streams for distinct seeds)."""
  return int(np.random.SeedSequence([seed, finished]).generate_state(1)[0])


def _next_name(study) -> str:
  """trial<NNN> after the names in use: numbered by runs, not by Optuna's trials (a retried trial is a new one)."""
  used = {t.user_attrs["run"] for t in study.get_trials(deepcopy=False) if "run" in t.user_attrs}
  index = len(used)
  while f"trial{index:03d}" in used:
    index += 1
  return f"trial{index:03d}"


def _sampler(name: str, seed: int, startup_trials: int):
  import optuna
  if name == "random":
    return optuna.samplers.RandomSampler(seed=seed)
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)


def run_search(config_file: str, space: str, workdir: str, extra_flags: Sequence[str] = (), *, trials: int,
               sampler: str = "tpe", metric: str = "top1", pruner: str = "median", startup_trials: int = 3,
               seed: int = 0, echo: Callable[[str], None] = print) -> dict[str, int]:
  """Runs (or continues) a search until `trials` trials are finished, pruned or failed; writes its report.

  Returns:
    {'finished': n, 'pruned': n, 'failed': n} over all the study's trials.

  Raises:
    ValueError: bad settings (checked before anything is written), or a workdir searched with other settings.
  """
  if sampler not in SAMPLERS or pruner not in PRUNERS or metric not in METRICS:
    raise ValueError(f"sampler, pruner and metric must be one of {list(SAMPLERS)}, {list(PRUNERS)}, {list(METRICS)}; "
                     f"got {sampler!r}, {pruner!r}, {metric!r}")
  if trials < 1 or startup_trials < 0:
    raise ValueError(f"trials must be at least 1 and startup_trials at least 0; got {trials}, {startup_trials}")
  dims = parse_space(space)
  check(config_file, dims, extra_flags)
  wanted = settings(config_file, space, sampler=sampler, metric=metric, pruner=pruner, startup_trials=startup_trials,
                    seed=seed, extra_flags=extra_flags)
  check_manifest(workdir, wanted)
  import optuna

  optuna.logging.set_verbosity(optuna.logging.WARNING)
  os.makedirs(workdir, exist_ok=True)
  files.write_json(os.path.join(workdir, MANIFEST), wanted)
  study = optuna.create_study(
      study_name=STUDY, storage=f"sqlite:///{os.path.abspath(os.path.join(workdir, DATABASE))}", load_if_exists=True,
      direction=METRICS[metric],
      pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials) if pruner == "median" else
      optuna.pruners.NopPruner())
  command = shlex.join(["python", "-m", "experiments.search", f"--config={config_file}", f"--space={space}",
                        f"--sampler={sampler}", f"--trials={trials}", f"--metric={metric}", f"--pruner={pruner}",
                        f"--startup_trials={startup_trials}", f"--seed={seed}", f"--workdir={workdir}", *extra_flags])
  _recover(study, echo)
  try:
    while (done := sum(map(_is_finished, study.get_trials(deepcopy=False)))) < trials:
      study.sampler = _sampler(sampler, trial_seed(seed, done), startup_trials)
      trial = study.ask()
      params = {dim.key: dim.suggest(trial) for dim in dims}
      name = trial.user_attrs.get("run") or _next_name(study)
      trial.set_user_attr("run", name)
      run = trial_run(name, workdir, config_file, dims, params, extra_flags)
      echo(f"[trial {done + 1}/{trials}] {name}: " + " ".join(f"{k}={v}" for k, v in run.values.items()))
      outcome = run_trial(study, trial, run, metric=metric, workdir=workdir, echo=echo)
      echo(f"[{outcome}] {name}")
  except Stopped as stopped:
    echo(f"[stop] {stopped}")
  finally:
    for path in write_report(workdir, study, dims, metric=metric, command=command):
      echo(f"wrote {path}")
  states = [t.state.name for t in study.get_trials(deepcopy=False) if _is_finished(t)]
  return {"finished": states.count("COMPLETE"), "pruned": states.count("PRUNED"), "failed": states.count("FAIL")}


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
_STATUS = {"COMPLETE": "finished", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "incomplete"}


def result_rows(workdir: str, study, dims: Sequence[Dimension], metric: str) -> list[dict[str, Any]]:
  """One row per trial workdir (the latest trial of each: a rerun supersedes a trial left by a kill)."""
  labels = grid_lib.axis_labels([grid_lib.Axis(d.key, ("",)) for d in dims])
  seconds = sweep.recorded_seconds(workdir)
  latest = {}
  for trial in study.get_trials(deepcopy=False):
    if "run" in trial.user_attrs and trial.state.name in _STATUS:
      latest[trial.user_attrs["run"]] = trial
  rows = []
  for name, trial in sorted(latest.items()):
    run_dir = os.path.join(workdir, name)
    status = _STATUS[trial.state.name] if trial.state.name != "FAIL" or "exit_code" in trial.user_attrs \
        else "incomplete"
    evals = _eval_values(run_dir, metric)
    value = trial.value if trial.state.name == "COMPLETE" else (evals[-1][1] if evals else None)
    summary = results.summarize(sweep.read_metrics(run_dir))
    if name in seconds:
      summary["wall_time_s"] = seconds[name]
    rows.append({"run": name, "trial": trial.number,
                 **{labels[d.key]: trial.params.get(d.key) for d in dims}, "status": status, metric: value,
                 "at_step": evals[-1][0] if evals else None, **summary})
  return rows


def best_row(rows: Sequence[dict[str, Any]], metric: str) -> dict[str, Any] | None:
  finished = [r for r in rows if r["status"] == "finished" and r[metric] is not None]
  if not finished:
    return None
  sign = 1 if METRICS[metric] == "maximize" else -1
  return max(finished, key=lambda r: sign * r[metric])


def write_report(workdir: str, study, dims: Sequence[Dimension], *, metric: str, command: str = "") -> list[str]:
  """Writes results.csv, results.md, search.png and (with metrics) loss.png and error.png into `workdir`."""
  from resnet_jax import plots  # matplotlib: imported only when plotting.

  rows = result_rows(workdir, study, dims, metric)
  labels = grid_lib.axis_labels([grid_lib.Axis(d.key, ("",)) for d in dims])
  columns = ["run", "trial", *labels.values(), "status", metric, "at_step", *sweep.RESULT_COLUMNS[1:]]
  written = [os.path.join(workdir, "results.csv"), os.path.join(workdir, "results.md")]
  results.write_csv(written[0], rows, columns)
  best = best_row(rows, metric)
  preamble = (f"`{metric}`: the final evaluation of a finished trial, the last evaluation a pruned or unfinished "
              f"trial reported (at `at_step`). Errors are 1 - top-1.")
  if best:
    preamble += (f" Best: {best['run']}, {metric} {best[metric]:.4g}, with "
                 + ", ".join(f"{labels[d.key]}={format_value(best[labels[d.key]])}" for d in dims) + ".")
  if command:
    preamble = f"Command:\n\n    {command}\n\n{preamble}"
  results.write_markdown(written[1], rows, columns, preamble)
  points = {labels[d.key]: [(r[labels[d.key]], r[metric], r["status"]) for r in rows
                            if r["status"] in ("finished", "pruned") and r[metric] is not None
                            and not (isinstance(r[metric], float) and math.isnan(r[metric]))] for d in dims}
  if any(points.values()):
    path = os.path.join(workdir, "search.png")
    plots.plot_search(points, path, metric=metric, log_x=[labels[d.key] for d in dims if d.kind == "loguniform"])
    written.append(path)
  histories = {r["run"]: sweep.read_metrics(os.path.join(workdir, r["run"])) for r in rows}
  histories = {name: records for name, records in histories.items() if records}
  if histories:
    for name, plot in (("loss.png", plots.plot_loss), ("error.png", plots.plot_errors)):
      plot(histories, os.path.join(workdir, name))
      written.append(os.path.join(workdir, name))
  return written
