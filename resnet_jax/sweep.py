"""Sweeps: a grid of settings (`resnet_jax.grid`) applied to one config file, each combination an ordinary training
run (`python -m experiments.train`) in its own workdir, then one results table and the plots of all of them.

Because every run is an ordinary run, a sweep resumes exactly as a run does: a run counts as finished once its
workdir holds `done.json` (written by the engine with the final metrics), and a started run without it is resumed
from its latest checkpoint. The manifest `sweep.json` records each run's flags, so that a rerun with other flags
is refused rather than mixing two experiments in one curve, and the seconds its trainers ran.

Ready-made sweeps live in configs/ablations/ (`load_ablation`).
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from resnet_jax import config as config_lib
from resnet_jax import files, results, study
from resnet_jax import grid as grid_lib

TRAIN_MODULE = "experiments.train"
MANIFEST = "sweep.json"  # What each run of a sweep workdir was started with.
LOG_FILE = "train.log"  # The trainer's console output, per run.

# The results table's columns after the run name and the grid's keys (errors are fractions: 1 - top1).
RESULT_COLUMNS = ("status", "final_train_loss", "final_train_error", "final_test_error", "best_test_error",
                  "steps", "wall_time_s")

# Run status: finished (skipped), started and to be resumed, or not started.
DONE, RESUME, NEW = "done", "resume", "new"


# ----------------------------------------------------------------------------------------------------------------
# Planning: each run's config resolved as the trainer resolves it
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Run:
  """One combination of a sweep: its name, workdir, grid values (as written) and trainer flags."""
  name: str
  workdir: str
  values: dict[str, str]
  args: tuple[str, ...]

  def command(self, python: str = sys.executable) -> list[str]:
    return [python, "-m", TRAIN_MODULE, *self.args]


STEP_KEY = "step"  # The axis of an ablation's cumulative steps (`steps_axis`): not a config field.


def steps_axis(steps: Sequence[tuple[str, Sequence[str]]]) -> tuple[grid_lib.Axis, dict[str, tuple[str, ...]]]:
  """An axis of cumulative steps (a table's rows, each adding settings to the one above, as in Bag of Tricks' tables)
  and each step's flags: those of every step up to it, in order (a later step's setting of a field wins).

  Args:
    steps: (label, trainer flags it adds), first to last.
  """
  flags, cumulative = [], {}
  for index, (label, added) in enumerate(steps):
    flags = [*flags, *added]
    cumulative[f"{index}{grid_lib.format_value(label)}"] = tuple(flags)
  return grid_lib.Axis(STEP_KEY, tuple(cumulative)), cumulative


def sweep_axes(grid: str, steps: Sequence[tuple[str, Sequence[str]]] = ()):
  """(axes, step flags) of a grid string and an ablation's cumulative steps (the first axis, where given)."""
  axes = grid_lib.parse_grid(grid)
  if not steps:
    return axes, None
  step, step_flags = steps_axis(steps)
  return [step, *axes], step_flags


def plan(config_file: str, axes: Sequence[grid_lib.Axis], workdir: str, extra_flags: Sequence[str] = (), *,
         check: Callable[[ml_collections.ConfigDict], None] | None = None,
         step_flags: dict[str, tuple[str, ...]] | None = None) -> list[Run]:
  """The sweep's runs, each validated by resolving its config as the trainer will.

  Args:
    config_file: the --config value ('configs/shapes.py').
    axes: the parsed grid.
    workdir: the sweep's directory; run R trains in workdir/R.
    extra_flags: trainer flags passed to every run (e.g. '--config.num_steps=100').
    check: called with every run's resolved config (e.g. to build its model): raise ValueError to reject it.
    step_flags: the flags of each value of the `STEP_KEY` axis, where the axes hold one (`steps_axis`).

  Raises:
    ValueError: a grid key is also set by an extra flag or a step, or a run's config is invalid.
  """
  extra_keys = {config_lib.override_key(f) for f in extra_flags if f.startswith(config_lib.PREFIX)}
  step_keys = {config_lib.override_key(f) for flags in (step_flags or {}).values() for f in flags}
  for axis in axes:
    if axis.key in extra_keys | step_keys:
      raise ValueError(f"grid key {axis.key!r} is also set by --config.{axis.key}: set it in one place only")
  config_overrides = [f for f in extra_flags if f.startswith(config_lib.PREFIX)]
  labels = grid_lib.axis_labels(axes)
  runs = []
  for combination in grid_lib.combinations(axes):
    name = grid_lib.run_name(combination, labels)
    overrides = []
    for key, value in combination.items():
      overrides += step_flags[value] if key == STEP_KEY else [f"{config_lib.PREFIX}{key}={value}"]
    try:
      config = config_lib.resolve(config_file, [*overrides, *config_overrides])
      if check is not None:
        check(config)
    except ValueError as error:
      raise ValueError(f"run {name}: {error}") from None
    run_dir = os.path.join(workdir, name)
    runs.append(Run(name, run_dir, combination, (f"--config={config_file}", f"--workdir={run_dir}", *overrides,
                                                 *extra_flags)))
  names = [r.name for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"two runs would share a name (and workdir) in {names}: make the grid's values distinct "
                     "after formatting (letters, digits and ._+- are kept)")
  return runs


def check_model(config: ml_collections.ConfigDict) -> None:
  """Builds the run's model (no parameters, no compilation) so impossible knob combinations fail before training."""
  from resnet_jax import train  # The engine (and JAX) only when a sweep is actually planned.

  train.check_model(config)


def run_status(workdir: str) -> str:
  """DONE when the engine marked the run complete, RESUME when it has started, else NEW."""
  if os.path.exists(os.path.join(workdir, files.DONE_FILE)):
    return DONE
  started = any(os.path.exists(os.path.join(workdir, f))
                for f in (files.METRICS_FILE, files.CHECKPOINT_DIR, files.CONFIG_FILE))
  return RESUME if started else NEW


def check_manifest(workdir: str, runs: Sequence[Run]) -> dict[str, Any]:
  """Returns the sweep manifest updated with `runs`; raises if a started run was started with other flags.

  A resumed run must continue the training it began: resuming `depth=20` with a different learning rate would
  silently mix two experiments in one curve.
  """
  manifest = files.read_json(os.path.join(workdir, MANIFEST)) or {"runs": {}}
  for run in runs:
    before = manifest["runs"].get(run.name)
    if before and list(before["args"]) != list(run.args) and run_status(run.workdir) != NEW:
      raise ValueError(
          f"run {run.name} in {run.workdir} was started with different flags:\n  before: {' '.join(before['args'])}"
          f"\n  now:    {' '.join(run.args)}\nUse another --workdir, or delete {run.workdir} to train it afresh.")
    manifest["runs"].setdefault(run.name, {})["args"] = list(run.args)
  return manifest


def add_seconds(workdir: str, name: str, seconds: float) -> None:
  """Adds `seconds` of trainer wall time to run `name` in the sweep manifest (summed over invocations)."""
  path = os.path.join(workdir, MANIFEST)
  manifest = files.read_json(path) or {"runs": {}}
  entry = manifest["runs"].setdefault(name, {})
  entry["seconds"] = entry.get("seconds", 0.0) + seconds
  files.write_json(path, manifest)


def recorded_seconds(workdir: str) -> dict[str, float]:
  """{run name: trainer wall time} from the sweep manifest, for the runs that have one."""
  manifest = files.read_json(os.path.join(workdir, MANIFEST)) or {"runs": {}}
  return {name: entry["seconds"] for name, entry in manifest["runs"].items() if "seconds" in entry}


# ----------------------------------------------------------------------------------------------------------------
# Execution
# ----------------------------------------------------------------------------------------------------------------
def execute(runs: Sequence[Run], *, parallel: int = 1, python: str = sys.executable,
            echo: Callable[[str], None] = print, poll_seconds: float = 0.5,
            on_finish: Callable[[Run, int, float], None] | None = None,
            watch: Callable[[Run, subprocess.Popen], None] | None = None) -> dict[str, int]:
  """Trains `runs` as subprocesses, `parallel` at a time, skipping finished ones; returns {name: exit code}.

  Each run's console output is appended to its workdir's train.log, and `on_finish(run, exit code, seconds)` is
  called as each trainer exits. `watch(run, process)`, if given, is called for every running trainer at every poll
  (a search reads the run's metrics there, and may stop the trainer with SIGTERM). If the sweep stops early (Ctrl-C,
  SIGTERM, an error, or on Linux even SIGKILL), the trainers still running receive SIGTERM, on which they checkpoint
  and stop: the next invocation resumes them rather than leaving them training unattended.
  """
  on_finish = on_finish or (lambda run, code, seconds: None)
  if parallel < 1:
    raise ValueError(f"parallel must be at least 1, got {parallel}")
  todo = []
  for run in runs:
    if run_status(run.workdir) == DONE:
      echo(f"[skip] {run.name}: finished")
    else:
      todo.append(run)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [files.REPO_ROOT, env.get("PYTHONPATH")]))
  codes = {}
  active = {}  # name -> (run, process, log file, start time)
  with _sigterm_raises():
    try:
      while todo or active:
        while todo and len(active) < parallel:
          run = todo.pop(0)
          os.makedirs(run.workdir, exist_ok=True)
          log = open(os.path.join(run.workdir, LOG_FILE), "a")
          verb = "resume" if run_status(run.workdir) == RESUME else "start"
          echo(f"[{verb}] {run.name}: {shlex.join(run.command(python)[1:])}")
          process = subprocess.Popen(run.command(python), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=_stop_with_parent)
          active[run.name] = (run, process, log, time.time())
        for name, (run, process, log, start) in list(active.items()):
          if process.poll() is None:
            if watch is not None:
              watch(run, process)
            continue
          log.close()
          del active[name]
          codes[name] = process.returncode
          seconds = time.time() - start
          outcome = ("[done] {}: finished" if process.returncode == 0 else
                     f"[fail] {{}}: FAILED (exit code {process.returncode})").format(name)
          echo(f"{outcome} in {seconds:.0f} s; log: {os.path.join(run.workdir, LOG_FILE)}")
          on_finish(run, process.returncode, seconds)
        if active:
          time.sleep(poll_seconds)
    finally:
      for name, (_, process, _, _) in active.items():
        echo(f"[stop] {name}: asking the trainer to checkpoint and stop (SIGTERM)")
        process.send_signal(signal.SIGTERM)
      for run, process, log, start in active.values():
        try:
          process.wait(timeout=300)
        except subprocess.TimeoutExpired:
          process.kill()
          process.wait()
        log.close()
        on_finish(run, process.returncode, time.time() - start)
  return codes


def _stop_with_parent() -> None:
  """In a trainer about to start: asks Linux to send it SIGTERM when the sweep dies, even by SIGKILL, so that it
  checkpoints and stops instead of training on unattended (and holding its workdir's lock)."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass  # Not Linux: a sweep killed by SIGKILL leaves its trainers running; SIGTERM and Ctrl-C still stop them.


@contextlib.contextmanager
def _sigterm_raises():
  """Turns SIGTERM into SystemExit while active, so cleanup (stopping the trainers) runs; main thread only."""
  import threading
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handler(signum, frame):
    del frame
    raise SystemExit(128 + signum)

  previous = signal.signal(signal.SIGTERM, handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
def read_metrics(workdir: str) -> list[dict]:
  """A run's metrics.jsonl records, each (split, step) once (see `files.latest_records`)."""
  return files.latest_records(files.read_records(os.path.join(workdir, files.METRICS_FILE)))


def result_rows(runs: Sequence[Run], axes: Sequence[grid_lib.Axis], codes: dict[str, int] | None = None,
                seconds: dict[str, float] | None = None) -> list[dict[str, Any]]:
  """One results row per run: name, grid values (columns by axis label), status and `summarize` figures.

  The status is 'finished', 'failed' (the trainer exited with an error in this invocation, per `codes`),
  'incomplete' (started, not finished) or 'not started'. The wall time is the run's entry in `seconds` (the time
  its trainer processes ran) where there is one, else the span of its metrics' wall_time stamps.
  """
  labels = grid_lib.axis_labels(axes)
  rows = []
  for run in runs:
    summary = results.summarize(read_metrics(run.workdir))
    status = {DONE: "finished", RESUME: "incomplete", NEW: "not started"}[run_status(run.workdir)]
    if status != "finished" and (codes or {}).get(run.name, 0) != 0:
      status = "failed"
    if (seconds or {}).get(run.name) is not None:
      summary["wall_time_s"] = seconds[run.name]
    rows.append({"run": run.name, **{labels[k]: v for k, v in run.values.items()}, "status": status, **summary})
  return rows


def result_columns(axes: Sequence[grid_lib.Axis]) -> list[str]:
  return ["run", *grid_lib.axis_labels(axes).values(), *RESULT_COLUMNS]


def shortcut_groups(runs: Sequence[Run], axes: Sequence[grid_lib.Axis]) -> dict[str, str] | None:
  """{run name: 'plain' | 'residual'} when the grid has a shortcut axis (plain = shortcut 'none'), else None."""
  keys = [a.key for a in axes if a.key.rsplit(".", 1)[-1] == "shortcut"]
  if not keys:
    return None
  return {r.name: "plain" if r.values[keys[0]].lower() == "none" else "residual" for r in runs}


def write_report(workdir: str, runs: Sequence[Run], axes: Sequence[grid_lib.Axis], *, command: str = "",
                 codes: dict[str, int] | None = None) -> list[str]:
  """Writes results.csv, results.md and the plots (loss.png, error.png, signal.png) into `workdir`; for a grid
  with seeds, also the summary over seeds (`resnet_jax.study`).

  Args:
    workdir: the sweep's directory.
    runs, axes: the sweep's plan and grid.
    command: the command line that reproduces the sweep, quoted at the top of results.md.
    codes: exit codes of the runs trained by this invocation (`execute`), to mark failed runs.

  Returns:
    The paths written. Plots without data (no metrics at all, or no signal metrics) are skipped.
  """
  from resnet_jax import plots  # matplotlib: imported only when plotting.

  rows = result_rows(runs, axes, codes, recorded_seconds(workdir))
  columns = result_columns(axes)
  written = [os.path.join(workdir, "results.csv"), os.path.join(workdir, "results.md")]
  results.write_csv(written[0], rows, columns)
  preamble = ("Errors are 1 - top-1. Wall time: seconds the run's trainer processes ran, summed over the sweep's "
              "invocations (start-up, data preparation, compilation and evaluation included); for a run trained "
              "outside the sweep, the span of its metrics' time stamps.")
  if command:
    preamble = f"Command:\n\n    {command}\n\n{preamble}"
  results.write_markdown(written[1], rows, columns, preamble)

  histories = {r.name: read_metrics(r.workdir) for r in runs}
  histories = {name: records for name, records in histories.items() if records}
  groups = shortcut_groups(runs, axes)
  if histories:
    for name, plot in (("loss.png", plots.plot_loss), ("error.png", plots.plot_errors)):
      plot(histories, os.path.join(workdir, name), groups=groups)
      written.append(os.path.join(workdir, name))
  signals = {name: results.signal_profile(records) for name, records in histories.items()}
  signals = {name: profile for name, profile in signals.items() if profile}
  if signals:
    plots.plot_signal(signals, os.path.join(workdir, "signal.png"))
    written.append(os.path.join(workdir, "signal.png"))
  if study.has_seeds(axes):  # Seeds taken together: summary.md (mean, spread) and the plots with bands.
    written += study.write_report(workdir, rows, histories, axes, {r.name: r.values for r in runs}, groups)
  return written


# ----------------------------------------------------------------------------------------------------------------
# The whole sweep
# ----------------------------------------------------------------------------------------------------------------
def run_sweep(config_file: str, grid: str, workdir: str, extra_flags: Sequence[str] = (), *, parallel: int = 1,
              dry_run: bool = False, report_only: bool = False, steps: Sequence[tuple[str, Sequence[str]]] = (),
              echo: Callable[[str], None] = print) -> dict[str, int]:
  """Plans, trains (skipping finished runs, resuming started ones) and reports a sweep; returns the exit codes.

  With `steps` (an ablation's STEPS: (label, flags added), cumulative), they are the grid's first axis, `step`.

  With `report_only`, nothing is trained and the manifest is left as it is: the report is written from the runs the
  workdir holds (a partial sweep's, or run records copied in from elsewhere).

  Raises:
    ValueError: a bad grid or config, an impossible model, or a started run whose flags changed. Nothing is
      trained or written then.
  """
  axes, step_flags = sweep_axes(grid, steps)
  runs = plan(config_file, axes, workdir, extra_flags, check=check_model, step_flags=step_flags)
  manifest = check_manifest(workdir, runs)
  if dry_run:
    for run in runs:
      echo(f"{run_status(run.workdir):6s} {run.name}\n       {shlex.join(run.command()[1:])}")
    return {}
  codes = {}
  if not report_only:
    files.write_json(os.path.join(workdir, MANIFEST), manifest)
    codes = execute(runs, parallel=parallel, echo=echo,
                    on_finish=lambda run, code, seconds: add_seconds(workdir, run.name, seconds))
  command = shlex.join(["python", "-m", "experiments.sweep", f"--config={config_file}", f"--grid={grid}",
                        f"--workdir={workdir}", *extra_flags])
  if steps:
    command += "  (and the ablation's steps: " + "; ".join(label for label, _ in steps) + ")"
  for path in write_report(workdir, runs, axes, command=command, codes=codes):
    echo(f"wrote {path}")
  return codes


# ----------------------------------------------------------------------------------------------------------------
# Ready-made ablations (configs/ablations/NAME.py: CONFIG, GRID, FLAGS and LESION as data)
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Ablation:
  """A named sweep definition: config spec, grid and extra trainer flags."""
  name: str
  config: str
  grid: str
  flags: tuple[str, ...]
  doc: str
  lesion: tuple[str, ...] = ()  # Runs (names in the sweep's workdir) whose lesion study follows the sweep.
  steps: tuple[tuple[str, tuple[str, ...]], ...] = ()  # Cumulative steps, (label, flags added): the `step` axis.


def ablation_dir() -> str:
  return os.path.join(files.REPO_ROOT, "configs", "ablations")


def ablation_names() -> list[str]:
  return sorted(f[:-3] for f in os.listdir(ablation_dir()) if f.endswith(".py") and not f.startswith("_"))


def load_ablation(name: str) -> Ablation:
  """Reads configs/ablations/NAME.py, a file of literal assignments (CONFIG, GRID, FLAGS, LESION, STEPS), without
  running it.

  Raises:
    ValueError: unknown name (lists the valid ones) or a file without CONFIG and GRID.
  """
  if name not in ablation_names():
    raise ValueError(f"unknown ablation {name!r}; choose one of {ablation_names()}")
  with open(os.path.join(ablation_dir(), f"{name}.py")) as f:
    module = ast.parse(f.read())
  values = {}
  for node in module.body:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
      values[node.targets[0].id] = ast.literal_eval(node.value)
  missing = {"CONFIG", "GRID"} - set(values)
  if missing:
    raise ValueError(f"configs/ablations/{name}.py does not define {sorted(missing)}")
  return Ablation(name, values["CONFIG"], values["GRID"], tuple(values.get("FLAGS", ())),
                  ast.get_docstring(module) or "", tuple(values.get("LESION", ())),
                  tuple((label, tuple(flags)) for label, flags in values.get("STEPS", ())))


def run_lesions(workdir: str, names: Sequence[str], *, python: str = sys.executable,
                echo: Callable[[str], None] = print) -> dict[str, int]:
  """The lesion study (`experiments.lesion`) of each named run of a sweep, once: a run that already has its
  lesion.png (the study's last file) is skipped. Output goes to the run's lesion.log; returns {name: exit code}.

  Raises:
    ValueError: a name that is not a finished run of the sweep.
  """
  codes = {}
  for name in names:
    run_dir = os.path.join(workdir, name)
    if run_status(run_dir) != DONE:
      raise ValueError(f"the lesion study of {name!r} needs the finished run {run_dir}")
    if os.path.exists(os.path.join(run_dir, "lesion.png")):
      echo(f"[skip] lesion of {name}: {run_dir}/lesion.png exists")
      continue
    echo(f"[lesion] {name}")
    with open(os.path.join(run_dir, "lesion.log"), "a") as log:
      codes[name] = subprocess.call([python, "-m", "experiments.lesion", f"--workdir={run_dir}"], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=files.REPO_ROOT)
    echo(f"[{'done' if codes[name] == 0 else 'failed'}] lesion of {name}: {run_dir}/lesion.md")
  return codes
