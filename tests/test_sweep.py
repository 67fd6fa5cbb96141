"""Sweeps: grids (resnet_jax.grid), planning and resuming (resnet_jax.sweep), results tables (resnet_jax.results),
atomic writes, ready-made ablations, the script."""
import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from resnet_jax import files, grid, results, sweep
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = os.path.join(REPO, "configs", "shapes.py")


# --- Grid parsing ---------------------------------------------------------------------------------------------
def test_parse_grid_keeps_axis_order_and_values_as_written():
  axes = grid.parse_grid("model.name=cifar_resnet20,cifar_resnet56  seed=0,1")
  assert axes == [grid.Axis("model.name", ("cifar_resnet20", "cifar_resnet56")), grid.Axis("seed", ("0", "1"))]


def test_tuple_values_keep_their_commas_and_spaces_inside_brackets():
  (axis,) = grid.parse_grid("model.head_hidden=(64,),(64, 64),(),[8,8]")
  assert axis.values == ("(64,)", "(64, 64)", "()", "[8,8]")


def test_combinations_are_the_full_product_first_axis_slowest():
  combos = grid.combinations(grid.parse_grid("a.x=1,2 b=p,q,r"))
  assert len(combos) == 6
  assert combos[0] == {"a.x": "1", "b": "p"} and combos[1] == {"a.x": "1", "b": "q"}
  assert combos[-1] == {"a.x": "2", "b": "r"}


@pytest.mark.parametrize("text, message", [
    ("", "the grid is empty"),
    ("   ", "the grid is empty"),
    ("model.name", "has no '='"),
    ("model.name=", "empty value"),
    ("model.name=a,,b", "empty value"),
    ("model.name=a, model.x=1", "empty value"),
    ("model.name=a model.name=b", "appears twice"),
    ("model.name=a,a", "repeats the value"),
    ("1model=2", "is not a config key"),
    ("model..name=2", "is not a config key"),
    ("model.head_hidden=(64,", "unterminated bracket"),
    ("model.head_hidden=64)", "unbalanced"),
])
def test_bad_grids_say_what_is_wrong(text, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    grid.parse_grid(text)


# --- Run naming ---------------------------------------------------------------------------------------------------
def test_run_names_use_short_labels_and_filesystem_safe_values():
  axes = grid.parse_grid("model.width=0.5 model.shortcut=none model.head_hidden=(64,64),() data.name='a/b'")
  labels = grid.axis_labels(axes)
  names = [grid.run_name(c, labels) for c in grid.combinations(axes)]
  assert names == ["width=0.5,shortcut=none,head_hidden=64x64,name=a_b",
                   "width=0.5,shortcut=none,head_hidden=empty,name=a_b"]


def test_axes_sharing_a_last_part_are_labelled_by_their_whole_key():
  axes = grid.parse_grid("model.name=a data.name=b seed=1")
  assert grid.axis_labels(axes) == {"model.name": "model.name", "data.name": "data.name", "seed": "seed"}


# --- Planning (configs resolved as the trainer resolves them) ----------------------------------------------------
DEPTHS = "model.name=cifar_resnet20,cifar_resnet56"


def test_plan_builds_each_runs_trainer_flags(tmp_path):
  axes = grid.parse_grid(f"{DEPTHS} model.shortcut=A,none")
  runs = sweep.plan(SHAPES, [axes[0]], str(tmp_path), ["--config.num_steps=4"])
  assert [r.name for r in runs] == ["name=cifar_resnet20", "name=cifar_resnet56"]
  assert runs[1].args == (f"--config={SHAPES}", f"--workdir={tmp_path}/name=cifar_resnet56",
                          "--config.model.name=cifar_resnet56", "--config.num_steps=4")
  runs = sweep.plan(SHAPES, axes, str(tmp_path))
  assert len(runs) == 4
  assert runs[3].name == "name=cifar_resnet56,shortcut=none"
  assert runs[3].args[2:] == ("--config.model.name=cifar_resnet56", "--config.model.shortcut=none")
  assert runs[3].workdir == os.path.join(str(tmp_path), "name=cifar_resnet56,shortcut=none")
  assert runs[3].command("python")[:3] == ["python", "-m", "experiments.train"]


def test_top_level_fields_are_grid_keys_too(tmp_path):
  runs = sweep.plan(SHAPES, grid.parse_grid("seed=0,1 model.shortcut=A"), str(tmp_path))
  assert [r.name for r in runs] == ["seed=0,shortcut=A", "seed=1,shortcut=A"]
  assert "--config.seed=1" in runs[1].args
  with pytest.raises(ValueError, match="grid key 'seed' is also set by --config.seed"):
    sweep.plan(SHAPES, grid.parse_grid("seed=0,1"), str(tmp_path), ["--config.seed=3"])


def test_cumulative_steps_add_their_flags_row_by_row(tmp_path):
  """An ablation's STEPS: each row keeps the flags of the rows above and adds its own (a later setting of a field
  wins), as the rows of Bag of Tricks' tables; the step is the first axis and names the runs."""
  steps = (("baseline", ("--config.model.shortcut=B",)), ("+ label smoothing", ("--config.label_smoothing=0.1",)),
           ("+ shortcut A", ("--config.model.shortcut=A",)))
  axes, step_flags = sweep.sweep_axes("seed=0,1", steps)
  runs = sweep.plan(SHAPES, axes, str(tmp_path), ["--config.num_steps=4"], step_flags=step_flags)
  assert [r.name for r in runs][:3] == ["step=0baseline,seed=0", "step=0baseline,seed=1",
                                        "step=1+_label_smoothing,seed=0"]
  assert runs[2].args[2:] == ("--config.model.shortcut=B", "--config.label_smoothing=0.1", "--config.seed=0",
                              "--config.num_steps=4")
  last = runs[-1].args
  assert last.index("--config.model.shortcut=A") > last.index("--config.model.shortcut=B")
  with pytest.raises(ValueError, match="grid key 'label_smoothing' is also set"):
    sweep.plan(SHAPES, [*axes, grid.Axis("label_smoothing", ("0.2",))], str(tmp_path), step_flags=step_flags)


def test_plan_checks_every_run_with_the_given_check(tmp_path):
  seen = []

  def check(config):
    seen.append(config.model.activation)
    if config.model.activation == "tanh":
      raise ValueError("no tanh here")

  with pytest.raises(ValueError, match="run activation=tanh: no tanh here"):
    sweep.plan(SHAPES, grid.parse_grid("model.activation=relu,tanh"), str(tmp_path), check=check)
  assert seen == ["relu", "tanh"]


@pytest.mark.parametrize("text, extra, message", [
    ("model.nam=cifar_resnet20", (), r"unknown config field config.model.nam.*did you mean config.model.name"),
    ("model.width=wide", (), "could not convert string to float"),
    ("model.zero_init_residual=maybe", (), "zero_init_residual"),
    ("model.shortcut=A", ("--config.model.shortcut=B",), "also set by --config.model.shortcut"),
    ("model.shortcut=A", ("--config.num_step=4",), r"did you mean config.num_steps"),
])
def test_bad_grids_against_the_config_say_what_is_wrong(tmp_path, text, extra, message):
  with pytest.raises(ValueError, match=message):
    sweep.plan(SHAPES, grid.parse_grid(text), str(tmp_path), list(extra))


def test_missing_config_file_is_named(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    sweep.plan(str(tmp_path / "nope.py"), grid.parse_grid("model.shortcut=A"), str(tmp_path))


# --- Status, resuming, the manifest --------------------------------------------------------------------------
def _write_metrics(workdir, records, trailing=""):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, files.METRICS_FILE), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
    f.write(trailing)


def _records(train_top1, eval_top1, *, steps=(2, 4), start=1000.0):
  out = []
  for i, step in enumerate(steps):
    out.append({"step": step, "split": "train", "loss": 2.0 - 0.5 * i, "top1": train_top1[i], "lr": 0.1,
                "wall_time": start + 10 * i})
  out.append({"step": steps[-1], "split": "eval", "loss": 1.5, "top1": eval_top1[-1], "top5": 1.0,
              "signal/stage1/block0": 0.5, "signal/stage2/block0": 0.7, "signal/stage1/block1": 0.6,
              "signal/stage10/block0": 0.9, "wall_time": start + 25})
  if len(eval_top1) > 1:
    out.insert(1, {"step": steps[0], "split": "eval", "loss": 1.8, "top1": eval_top1[0], "wall_time": start + 5})
  return out


def test_run_status_done_resume_new(tmp_path):
  done, started, fresh = (str(tmp_path / n) for n in ("done", "started", "fresh"))
  _write_metrics(done, _records([0.1, 0.2], [0.3]))
  files.write_json(os.path.join(done, files.DONE_FILE), {"step": 4})
  _write_metrics(started, _records([0.1, 0.2], [0.3]))
  os.makedirs(os.path.join(str(tmp_path), "checkpoint_only", "checkpoints"))
  assert sweep.run_status(done) == sweep.DONE
  assert sweep.run_status(started) == sweep.RESUME
  assert sweep.run_status(str(tmp_path / "checkpoint_only")) == sweep.RESUME
  assert sweep.run_status(fresh) == sweep.NEW


FAKE_TRAINER = textwrap.dedent("""\
    #!{python}
    # Stands in for `python -m experiments.train`: logs its flags, fails for runs named *fail*, else marks done.
    import json, os, sys
    workdir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir=")][0]
    with open(os.path.join(os.path.dirname(workdir), "calls.txt"), "a") as f:
      f.write(os.path.basename(workdir) + "\\n")
    print("training", workdir)
    if "fail" in workdir:
      sys.exit(3)
    if "sleep" in workdir:
      import time; time.sleep(120)
    open(os.path.join(workdir, "done.json"), "w").write(json.dumps({{"step": 4}}))
""")


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "fake_python"
  path.write_text(FAKE_TRAINER.format(python=sys.executable))
  path.chmod(0o755)
  return str(path)


@pytest.mark.parametrize("parallel", [1, 2])
def test_execute_skips_finished_runs_resumes_interrupted_ones_and_reports_failures(tmp_path, fake_python, parallel):
  workdir = tmp_path / "sweep"
  runs = sweep.plan(SHAPES, grid.parse_grid("model.name=cifar_resnet20,cifar_resnet32,fail"),
                    str(workdir))
  finished, interrupted, failing = runs
  _write_metrics(finished.workdir, _records([0.1, 0.2], [0.3]))
  files.write_json(os.path.join(finished.workdir, files.DONE_FILE), {})
  _write_metrics(interrupted.workdir, _records([0.1, 0.2], [0.3]))
  lines, finished_calls = [], []
  codes = sweep.execute(runs, parallel=parallel, python=fake_python, echo=lines.append, poll_seconds=0.05,
                        on_finish=lambda run, code, seconds: finished_calls.append((run.name, code, seconds)))
  assert codes == {interrupted.name: 0, failing.name: 3}
  assert sorted((name, code) for name, code, _ in finished_calls) == sorted(codes.items())
  assert all(0 < seconds < 60 for _, _, seconds in finished_calls)
  assert sorted((workdir / "calls.txt").read_text().split()) == sorted([interrupted.name, failing.name])
  assert any(line.startswith("[skip] " + finished.name) for line in lines)
  assert any(line.startswith("[resume] " + interrupted.name) for line in lines)
  assert any(line.startswith("[fail] " + failing.name) for line in lines)
  assert "training" in open(os.path.join(failing.workdir, sweep.LOG_FILE)).read()
  # Rerunning retries only what is not finished.
  codes = sweep.execute(runs, parallel=parallel, python=fake_python, echo=lines.append, poll_seconds=0.05)
  assert codes == {failing.name: 3}


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc")
def test_a_stopped_sweep_stops_its_trainers(tmp_path, fake_python):
  planned = sweep.plan(SHAPES, grid.parse_grid("model.name=sleep1,sleep2"), str(tmp_path / "sweep"))

  def interrupt_at_second_start(line):
    if line.startswith("[start] " + planned[1].name):
      raise KeyboardInterrupt  # Ctrl-C while the first trainer runs.

  start = time.time()
  with pytest.raises(KeyboardInterrupt):
    sweep.execute(planned, parallel=2, python=fake_python, echo=interrupt_at_second_start, poll_seconds=0.05)
  assert time.time() - start < 60  # The sleeping trainer was stopped, not waited for.
  assert not runs.processes_mentioning(str(tmp_path / "sweep"))


def test_manifest_refuses_to_resume_a_run_with_other_flags(tmp_path):
  axes = grid.parse_grid(DEPTHS)
  runs = sweep.plan(SHAPES, axes, str(tmp_path), ["--config.num_steps=4"])
  files.write_json(str(tmp_path / sweep.MANIFEST), sweep.check_manifest(str(tmp_path), runs))
  changed = sweep.plan(SHAPES, axes, str(tmp_path), ["--config.num_steps=8"])
  sweep.check_manifest(str(tmp_path), changed)  # Nothing started yet: any flags are fine.
  _write_metrics(runs[1].workdir, _records([0.1, 0.2], [0.3]))
  with pytest.raises(ValueError, match="name=cifar_resnet56 .* was started with different flags"):
    sweep.check_manifest(str(tmp_path), changed)
  # Recorded trainer time survives a replanning.
  sweep.add_seconds(str(tmp_path), runs[0].name, 7.0)
  files.write_json(str(tmp_path / sweep.MANIFEST), sweep.check_manifest(str(tmp_path), runs))
  assert sweep.recorded_seconds(str(tmp_path)) == {runs[0].name: 7.0}
  # Extending the grid keeps the old runs and adds the new.
  extended = sweep.plan(SHAPES, grid.parse_grid(f"{DEPTHS},cifar_resnet110"), str(tmp_path),
                        ["--config.num_steps=4"])
  assert sorted(sweep.check_manifest(str(tmp_path), extended)["runs"]) == [
      "name=cifar_resnet110", "name=cifar_resnet20", "name=cifar_resnet56"]


# --- Metrics and the results table ---------------------------------------------------------------------------
def test_read_metrics_skips_a_cut_line_and_keeps_the_latest_record_of_a_step(tmp_path):
  records = [{"step": 2, "split": "train", "loss": 9.0}, {"step": 4, "split": "train", "loss": 8.0},
             {"step": 4, "split": "eval", "top1": 0.1}, {"step": 4, "split": "train", "loss": 7.0}]
  _write_metrics(str(tmp_path), records, trailing='{"step": 6, "split": "tr')
  read = sweep.read_metrics(str(tmp_path))
  assert [(r["step"], r["split"], r.get("loss")) for r in read] == [(2, "train", 9.0), (4, "eval", None),
                                                                    (4, "train", 7.0)]
  assert sweep.read_metrics(str(tmp_path / "absent")) == []


def test_summarize_final_and_best_errors_steps_and_wall_time():
  summary = results.summarize(_records([0.25, 0.75], [0.5, 0.375]))
  assert summary == {"final_train_loss": 1.5, "final_train_error": 0.25, "final_test_error": 0.625,
                     "best_test_error": 0.5, "steps": 4, "wall_time_s": 25.0}
  assert results.summarize([]) == dict.fromkeys(summary)


def test_signal_profile_is_in_network_order_from_the_last_eval():
  profile = results.signal_profile(_records([0.1, 0.2], [0.3]))
  assert profile == [("stage1/block0", 0.5), ("stage1/block1", 0.6), ("stage2/block0", 0.7),
                     ("stage10/block0", 0.9)]


def test_results_table_has_one_row_per_run_with_the_grid_columns(tmp_path):
  axes = grid.parse_grid(f"{DEPTHS} model.shortcut=A,none")
  runs = sweep.plan(SHAPES, axes, str(tmp_path))
  for i, run in enumerate(runs[:3]):
    _write_metrics(run.workdir, _records([0.5, 0.5 + 0.1 * i], [0.5, 0.6]))
  files.write_json(os.path.join(runs[0].workdir, files.DONE_FILE), {})
  sweep.add_seconds(str(tmp_path), runs[1].name, 30.0)
  sweep.add_seconds(str(tmp_path), runs[1].name, 12.5)  # A resumed run: the times add up.
  written = sweep.write_report(str(tmp_path), runs, axes, command="python -m experiments.sweep ...",
                               codes={runs[2].name: 1})
  assert sorted(os.path.basename(p) for p in written) == ["error.png", "loss.png", "results.csv", "results.md",
                                                         "signal.png"]
  with open(tmp_path / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["run", "name", "shortcut", "status", "final_train_loss", "final_train_error",
                           "final_test_error", "best_test_error", "steps", "wall_time_s"]
  assert [r["run"] for r in rows] == [r.name for r in runs]
  assert [(r["name"], r["shortcut"], r["status"]) for r in rows] == [
      ("cifar_resnet20", "A", "finished"), ("cifar_resnet20", "none", "incomplete"), ("cifar_resnet56", "A", "failed"),
      ("cifar_resnet56", "none", "not started")]
  # Wall time: the trainer time the sweep recorded, else the span of the metrics' time stamps.
  assert [r["wall_time_s"] for r in rows] == ["25.0", "42.5", "25.0", ""]
  assert float(rows[2]["final_train_error"]) == pytest.approx(0.3)
  assert float(rows[2]["best_test_error"]) == pytest.approx(0.4)
  assert rows[3]["final_test_error"] == ""
  markdown = (tmp_path / "results.md").read_text()
  assert "python -m experiments.sweep ..." in markdown
  table = [line for line in markdown.splitlines() if line.startswith("|")]
  assert len(table) == 2 + len(runs)
  assert "| 30.00 |" in table[4]  # final train error of the third run, in percent
  for name in ("error.png", "loss.png", "signal.png"):
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


# --- Atomic writes ---------------------------------------------------------------------------------------------
class _Unprintable:
  def __str__(self):
    raise RuntimeError("crash while writing")


def test_results_files_are_never_left_half_written(tmp_path):
  path = str(tmp_path / "results.csv")
  results.write_csv(path, [{"run": "a", "x": 1}], ["run", "x"])
  before = open(path).read()
  rows = [{"run": "b", "x": 2}, {"run": "c", "x": _Unprintable()}]
  with pytest.raises(RuntimeError, match="crash while writing"):
    results.write_csv(path, rows, ["run", "x"])
  assert open(path).read() == before
  with pytest.raises(RuntimeError):
    results.write_markdown(str(tmp_path / "results.md"), rows, ["run", "x"])
  assert sorted(os.listdir(tmp_path)) == ["results.csv"]


# --- Ready-made ablations -------------------------------------------------------------------------------------
EXPECTED_ABLATIONS = ["activations", "bag_of_tricks", "depth_budget", "depth_study", "head_conv", "head_mlp",
                      "head_pool", "plain_vs_residual", "resnet_tweaks", "shortcuts", "stem_pool", "zero_init"]


def test_every_ready_made_ablation_is_listed_and_plans(tmp_path):
  assert sweep.ablation_names() == EXPECTED_ABLATIONS
  readme = open(os.path.join(sweep.ablation_dir(), "README.md")).read()
  for name in EXPECTED_ABLATIONS:
    ablation = sweep.load_ablation(name)
    assert f"`{name}`" in readme and ablation.doc
    axes, step_flags = sweep.sweep_axes(ablation.grid, ablation.steps)
    runs = sweep.plan(os.path.join(REPO, ablation.config), axes, str(tmp_path), list(ablation.flags),
                      step_flags=step_flags)
    assert len(runs) >= 2


def test_ablation_runs_pass_the_models_own_validation(tmp_path):
  pytest.importorskip("resnet_jax.train")  # The engine builds the model exactly as training will.
  for name in EXPECTED_ABLATIONS:
    ablation = sweep.load_ablation(name)
    axes, step_flags = sweep.sweep_axes(ablation.grid, ablation.steps)
    sweep.plan(os.path.join(REPO, ablation.config), axes, str(tmp_path), list(ablation.flags),
               check=sweep.check_model, step_flags=step_flags)
  with pytest.raises(ValueError, match="zero_init_residual"):
    sweep.plan(SHAPES, grid.parse_grid("model.shortcut=none model.zero_init_residual=true"), str(tmp_path),
               check=sweep.check_model)


def test_unknown_ablation_lists_the_valid_names():
  with pytest.raises(ValueError, match="choose one of .*'shortcuts'"):
    sweep.load_ablation("shortcut")


# --- The script --------------------------------------------------------------------------------------------------
def _sweep_script(*args, timeout=120):
  return subprocess.run([sys.executable, "-m", "experiments.sweep", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def test_script_rejects_a_bad_grid_with_its_message_and_no_traceback(tmp_path):
  result = _sweep_script("--grid=model.shortcut=A model.shortcut=B", f"--workdir={tmp_path}")
  assert result.returncode != 0
  assert "appears twice" in result.stderr and "Traceback" not in result.stderr
  assert not os.listdir(tmp_path)


def test_script_names_the_valid_ablations(tmp_path):
  result = _sweep_script("--ablation=shortcut", f"--workdir={tmp_path}")
  assert result.returncode != 0 and "choose one of" in result.stderr and "Traceback" not in result.stderr


def test_dry_run_lists_the_plan_and_writes_nothing(tmp_path):
  pytest.importorskip("resnet_jax.train")
  lines = []
  codes = sweep.run_sweep(SHAPES, DEPTHS, str(tmp_path / "sweep"), ["--config.num_steps=4"],
                          dry_run=True, echo=lines.append)
  assert codes == {}
  assert [line.split()[:2] for line in lines] == [["new", "name=cifar_resnet20"], ["new", "name=cifar_resnet56"]]
  assert "--config.model.name=cifar_resnet56 --config.num_steps=4" in lines[1]
  assert not os.path.exists(tmp_path / "sweep")


# --- End to end ----------------------------------------------------------------------------------------------------
TINY = runs.FOUR_STEP_FLAGS


@pytest.mark.slow
def test_tiny_sweep_end_to_end_and_resume(tmp_path, shapes_small):
  workdir = tmp_path / "sweep"
  args = ["--config=configs/shapes.py", "--grid=model.shortcut=A,none model.activation=relu,tanh",
          f"--workdir={workdir}", *TINY, shapes_small]
  result = _sweep_script(*args, timeout=1200)
  assert result.returncode == 0, result.stdout + result.stderr
  with open(workdir / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["run"] for r in rows] == ["shortcut=A,activation=relu", "shortcut=A,activation=tanh",
                                      "shortcut=none,activation=relu", "shortcut=none,activation=tanh"]
  assert all(r["status"] == "finished" and r["steps"] == "4" for r in rows)
  for row in rows:  # The table's test error is the engine's final evaluation.
    final = json.load(open(workdir / row["run"] / files.DONE_FILE))
    assert float(row["final_test_error"]) == pytest.approx(1.0 - final["top1"])
  for name in ("results.md", "loss.png", "error.png", "signal.png"):
    assert (workdir / name).stat().st_size > 0
  # A second invocation trains nothing and rewrites the same table.
  result = _sweep_script(*args)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.count("[skip]") == 4 and "[start]" not in result.stdout
  with open(workdir / "results.csv") as f:
    assert list(csv.DictReader(f)) == rows


def _rows_without_timing(path):
  with open(path) as f:
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_a_sweep_killed_mid_run_and_rerun_ends_with_the_same_results(tmp_path, shapes_small):
  """kill -9 of the sweep itself while its first run trains: the trainer is told to stop (it checkpoints), no
  results file is left half-written, and a rerun ends with the uninterrupted sweep's results.csv. Run by CI."""
  grid = "--grid=model.shortcut=A,none"
  flags = [*TINY, "--config.num_steps=12", "--config.log_every_steps=1", shapes_small]
  whole = tmp_path / "whole"
  result = _sweep_script("--config=configs/shapes.py", grid, f"--workdir={whole}", *flags, timeout=1200)
  assert result.returncode == 0, result.stdout + result.stderr
  broken = tmp_path / "broken"
  args = [sys.executable, "-m", "experiments.sweep", "--config=configs/shapes.py", grid, f"--workdir={broken}",
          *flags]
  with runs.running(subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(broken / "shortcut=A") >= 5, proc, what="step 5 of the first run")
    proc.kill()
    proc.wait()
  # The orphaned trainer got SIGTERM, saved and stopped; the sweep had written no results yet.
  deadline = time.time() + 120
  while runs.processes_mentioning(str(broken)) and time.time() < deadline:
    time.sleep(0.2)
  assert not runs.processes_mentioning(str(broken)), "the trainer went on training without its sweep"
  assert not (broken / "results.csv").exists()
  result = _sweep_script("--config=configs/shapes.py", grid, f"--workdir={broken}", *flags, timeout=1200)
  assert result.returncode == 0, result.stdout + result.stderr
  assert "[resume] shortcut=A" in result.stdout
  assert _rows_without_timing(broken / "results.csv") == _rows_without_timing(whole / "results.csv")
