"""Hyperparameter search (resnet_jax.search): the space syntax, real Optuna studies whose trials are real training
runs, pruning (the trainer is stopped), continuing a search, and the script's errors."""
import csv
import os
import subprocess
import sys
import time

import pytest

from resnet_jax import files, search
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = "configs/shapes.py"
# Trials of 4 steps of a ResNet-8 on shapes/small, evaluated after steps 2 and 4.
TINY = [*runs.FOUR_STEP_FLAGS, "--config.model.name=cifar_resnet8", "--config.eval_every_epochs=None",
        "--config.eval_every_steps=2"]


def test_space_syntax():
  dims = search.parse_space("schedule.base_lr=loguniform(0.01,1)  optimizer.weight_decay=uniform(0,1e-3) "
                            "model.shortcut=choice(A,B) model.width=int(1,4)")
  assert dims == [search.Dimension("schedule.base_lr", "loguniform", (0.01, 1.0)),
                  search.Dimension("optimizer.weight_decay", "uniform", (0.0, 1e-3)),
                  search.Dimension("model.shortcut", "choice", ("A", "B")),
                  search.Dimension("model.width", "int", (1, 4))]
  assert search.format_value(0.1234567891234) == "0.1234567891234" and search.format_value("A") == "A"


@pytest.mark.parametrize("text, message", [
    ("", "the search space is empty"),
    ("schedule.base_lr", "write key=loguniform"),
    ("schedule.base_lr=normal(0,1)", "unknown kind 'normal'"),
    ("schedule.base_lr=loguniform(0,1)", "must be positive"),
    ("schedule.base_lr=uniform(1,0.5)", "low bound must be below"),
    ("schedule.base_lr=uniform(a,1)", "'a' is not a number"),
    ("model.width=int(1.5,3)", "not a whole number"),
    ("model.shortcut=choice(A)", "two or more distinct"),
    ("model.shortcut=choice(A,A)", "two or more distinct"),
    ("a=uniform(0,1) a=uniform(0,2)", "appears twice"),
    ("1a=uniform(0,1)", "is not a config key"),
])
def test_bad_spaces_say_what_is_wrong(text, message):
  with pytest.raises(ValueError, match=message):
    search.parse_space(text)


def test_settings_are_checked_as_the_trainer_resolves_them_before_anything_is_written(tmp_path):
  workdir = tmp_path / "s"
  with pytest.raises(ValueError, match=r"search setting schedule\.base_lr=-1.0: .*base_lr"):
    search.run_search(SHAPES, "schedule.base_lr=uniform(-1,1)", str(workdir), trials=1)
  with pytest.raises(ValueError, match="modle"):
    search.run_search(SHAPES, "modle.name=choice(cifar_resnet20,cifar_resnet8)", str(workdir), trials=1)
  with pytest.raises(ValueError, match="also set by --config.schedule.base_lr"):
    search.run_search(SHAPES, "schedule.base_lr=uniform(0.1,1)", str(workdir), ["--config.schedule.base_lr=0.1"],
                      trials=1)
  assert not workdir.exists()


def _rows(path):
  with open(path) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_random_search_runs_trials_reports_and_continues_without_repeating(tmp_path, shapes_small):
  """Two trials train, the report is written; a rerun asking for three keeps both (their files untouched) and
  trains one more; changing a setting of the search is refused."""
  workdir = str(tmp_path / "search")
  space = "schedule.base_lr=loguniform(0.01,1) model.shortcut=choice(A,B)"
  flags = [*TINY, shapes_small]
  counts = search.run_search(SHAPES, space, workdir, flags, trials=2, sampler="random", pruner="none", seed=3)
  assert counts == {"finished": 2, "pruned": 0, "failed": 0}
  rows = _rows(os.path.join(workdir, "results.csv"))
  assert [r["run"] for r in rows] == ["trial000", "trial001"] and {r["status"] for r in rows} == {"finished"}
  for row in rows:
    done = files.read_json(os.path.join(workdir, row["run"], files.DONE_FILE))
    assert float(row["top1"]) == done["top1"]
    config = files.read_json(os.path.join(workdir, row["run"], files.CONFIG_FILE))
    assert config["schedule"]["base_lr"] == float(row["base_lr"]) and 0.01 <= config["schedule"]["base_lr"] <= 1
    assert config["model"]["shortcut"] == row["shortcut"]
  for name in ("results.md", "search.png", "loss.png", "error.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  assert "Best: trial00" in open(os.path.join(workdir, "results.md")).read()
  stamps = {r["run"]: os.stat(os.path.join(workdir, r["run"], files.DONE_FILE)).st_mtime_ns for r in rows}

  counts = search.run_search(SHAPES, space, workdir, flags, trials=3, sampler="random", pruner="none", seed=3)
  assert counts == {"finished": 3, "pruned": 0, "failed": 0}
  rows3 = _rows(os.path.join(workdir, "results.csv"))
  assert [r["run"] for r in rows3] == ["trial000", "trial001", "trial002"]
  assert rows3[:2] == rows[:2] or [r["base_lr"] for r in rows3[:2]] == [r["base_lr"] for r in rows]
  assert stamps == {n: os.stat(os.path.join(workdir, n, files.DONE_FILE)).st_mtime_ns for n in stamps}

  with pytest.raises(ValueError, match="holds a search with other settings:\n  seed: before 3, now 4"):
    search.run_search(SHAPES, space, workdir, flags, trials=3, sampler="random", pruner="none", seed=4)


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_a_pruned_trial_has_its_trainer_stopped_and_is_never_resumed(tmp_path, shapes_small):
  """Optuna's threshold pruner (top-1 below 0.99 is pruned at the first evaluation) on a real trial: the trainer gets
  SIGTERM at step 2's evaluation, checkpoints and stops before its last step; the trial is recorded as pruned."""
  optuna = pytest.importorskip("optuna")
  workdir = str(tmp_path / "search")
  os.makedirs(workdir)
  study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(lower=0.99), direction="maximize")
  trial = study.ask()
  dims = search.parse_space("schedule.base_lr=uniform(0.1,0.2)")
  params = {d.key: d.suggest(trial) for d in dims}
  flags = [*TINY, "--config.num_steps=40", "--config.eval_every_steps=2", shapes_small]
  run = search.trial_run("trial000", workdir, SHAPES, dims, params, flags)
  assert search.run_trial(study, trial, run, metric="top1", workdir=workdir, echo=print) == "pruned"
  assert study.trials[0].state == optuna.trial.TrialState.PRUNED
  pruned = files.read_json(os.path.join(run.workdir, search.PRUNED_FILE))
  assert pruned["trial"] == 0 and pruned["step"] >= 2 and pruned["top1"] < 0.99
  assert not os.path.exists(os.path.join(run.workdir, files.DONE_FILE))
  assert runs.last_logged_step(run.workdir) < 40


def test_script_errors_are_one_line(tmp_path):
  def script(*args):
    return subprocess.run([sys.executable, "-m", "experiments.search", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
  for args, message in [((), "--workdir is required"),
                        ((f"--workdir={tmp_path / 'a'}",), "--space is required"),
                        ((f"--workdir={tmp_path / 'a'}", "--space=lr"), "write key=loguniform")]:
    result = script(*args)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
  assert not (tmp_path / "a").exists()


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc")
def test_a_search_killed_mid_trial_and_rerun_continues_it(tmp_path, shapes_small):
  """kill -9 of the search while its first trial trains: the trainer is told to stop (it checkpoints), and a rerun
  of the same command resumes that trial with the same sampled settings, then trains the second. Run by CI."""
  workdir = str(tmp_path / "search")
  args = [f"--config={SHAPES}", "--space=schedule.base_lr=loguniform(0.01,1)", "--trials=2", "--sampler=random",
          "--pruner=none", "--seed=3", f"--workdir={workdir}", *TINY, "--config.num_steps=30",
          "--config.eval_every_steps=10", shapes_small]
  first = os.path.join(workdir, "trial000")
  with runs.running(runs.start("experiments.search", args, devices=1)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(first) >= 2, proc, what="a logged step of the first trial")
    base_lr = files.read_json(os.path.join(first, files.CONFIG_FILE))["schedule"]["base_lr"]
    proc.kill()
    proc.wait()
  os.remove(proc.log_path)
  # The orphaned trainer got SIGTERM, saved and stopped.
  deadline = time.time() + 120
  while runs.processes_mentioning(workdir) and time.time() < deadline:
    time.sleep(0.2)
  assert not runs.processes_mentioning(workdir), "the trainer went on training without its search"
  assert runs.last_logged_step(first) < 30

  out = runs.run("experiments.search", args, devices=1, timeout=1200)
  assert "[resume] trial000" in out, out[-6000:]
  rows = _rows(os.path.join(workdir, "results.csv"))
  assert [(r["run"], r["status"]) for r in rows] == [("trial000", "finished"), ("trial001", "finished")], rows
  assert files.read_json(os.path.join(first, files.CONFIG_FILE))["schedule"]["base_lr"] == base_lr
  assert float(rows[0]["base_lr"]) == base_lr
  assert runs.last_logged_step(first) == 30
