"""Seeded studies (resnet_jax.study): statistics over seeds, the summary files and plots a sweep with a seed axis
writes, the lesion studies an ablation asks for, and the depth study's command end to end (slow)."""
import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from resnet_jax import files, grid, study, sweep
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(train_top1, eval_top1, signal=(1.0, 0.5)):
  """Metrics records: training windows every 10 steps, then one evaluation with branch signals."""
  records = [{"step": 10 * (i + 1), "split": "train", "top1": t, "loss": 2.0 - t} for i, t in enumerate(train_top1)]
  records.append({"step": 10 * len(train_top1), "split": "eval", "top1": eval_top1,
                  **{f"signal/stage1/block{i}": s for i, s in enumerate(signal)}})
  return records


def test_escape_step_is_the_first_window_past_the_threshold():
  assert study.escape_step(_records([0.1, 0.15, 0.25, 0.5], 0.6)) == 30
  assert study.escape_step(_records([0.1, 0.2], 0.2)) is None  # 0.2 itself does not pass.
  assert study.escape_step(_records([0.1, 0.35], 0.4), threshold=0.3) == 20


def test_seed_axes_group_runs_by_their_other_values():
  axes = grid.parse_grid("seed=0,1 model.name=cifar_resnet20 model.shortcut=none,A")
  assert study.has_seeds(axes) and not study.has_seeds(grid.parse_grid("seed=0 model.shortcut=A,none"))
  assert study.configuration({"seed": "1", "model.name": "cifar_resnet20", "model.shortcut": "A"}, axes) == \
      "name=cifar_resnet20,shortcut=A"


def _fake_sweep(tmp_path, finished):
  """A sweep workdir whose runs hold the given records (a run with None is left unstarted)."""
  axes = grid.parse_grid("seed=0,1,2 model.shortcut=none,A")
  plan = sweep.plan(os.path.join(REPO, "configs", "shapes.py"), axes, str(tmp_path), [])
  for run in plan:
    records = finished.get(run.name)
    if records is None:
      continue
    os.makedirs(os.path.join(run.workdir, files.CHECKPOINT_DIR))
    files.write_json(os.path.join(run.workdir, files.CONFIG_FILE), {})
    with open(os.path.join(run.workdir, files.METRICS_FILE), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in records)
    files.write_json(os.path.join(run.workdir, files.DONE_FILE), {"top1": records[-1]["top1"]})
  return axes, plan


def test_summary_over_seeds_counts_finished_runs_only_and_states_the_spread(tmp_path):
  finished = {
      "seed=0,shortcut=none": _records([0.1, 0.3], 0.70, (1.0, 0.8)),
      "seed=1,shortcut=none": _records([0.1, 0.1], 0.60, (1.2, 0.6)),
      "seed=2,shortcut=none": _records([0.25, 0.3], 0.80, (0.8, 0.7)),
      "seed=0,shortcut=A": _records([0.5, 0.9], 0.95),
      # seed=1,shortcut=A unstarted; seed=2,shortcut=A finished:
      "seed=2,shortcut=A": _records([0.1, 0.9], 0.85),
  }
  axes, plan = _fake_sweep(tmp_path, finished)
  written = sweep.write_report(str(tmp_path), plan, axes)
  for name in study.SUMMARY_FILES:
    assert os.path.join(str(tmp_path), name) in written and os.path.getsize(tmp_path / name) > 0, name
  with open(tmp_path / "summary.csv") as f:
    rows = {r["shortcut"]: r for r in csv.DictReader(f)}
  plain, residual = rows["none"], rows["A"]
  assert (plain["seeds"], residual["seeds"]) == ("3", "2")
  assert float(plain["final_test_error_mean"]) == pytest.approx(0.30)  # Errors 0.3, 0.4, 0.2.
  assert float(plain["final_test_error_std"]) == pytest.approx(0.10)
  assert (float(plain["final_test_error_min"]), float(plain["final_test_error_max"])) == pytest.approx((0.2, 0.4))
  assert float(residual["final_test_error_mean"]) == pytest.approx(0.10)
  # Escape steps: plain 20, never (left out), 10; residual 10 and 20.
  assert float(plain["escape_step_mean"]) == pytest.approx(15.0) and float(residual["escape_step_mean"]) == 15.0
  text = (tmp_path / "summary.md").read_text()
  assert "| none | 3 | 30.0 ± 10.0 (20.0-40.0) |" in text and "| A | 2 | 10.0 ± 7.1 (5.0-15.0) |" in text


def test_the_report_of_a_grid_without_seeds_has_no_summary(tmp_path):
  axes = grid.parse_grid("model.shortcut=none,A")
  plan = sweep.plan(os.path.join(REPO, "configs", "shapes.py"), axes, str(tmp_path), [])
  sweep.write_report(str(tmp_path), plan, axes)
  assert not any((tmp_path / name).exists() for name in study.SUMMARY_FILES)


def test_lesions_need_finished_runs(tmp_path):
  with pytest.raises(ValueError, match="needs the finished run"):
    sweep.run_lesions(str(tmp_path), ["seed=0,name=cifar_resnet56,shortcut=A"])


def test_the_depth_study_lesions_its_deepest_residual_net():
  ablation = sweep.load_ablation("depth_study")
  axes = grid.parse_grid(ablation.grid)
  names = [r.name for r in sweep.plan(os.path.join(REPO, ablation.config), axes, "/nowhere", list(ablation.flags))]
  assert len(names) == 24 and ablation.lesion == ("seed=0,name=cifar_resnet56,shortcut=A",)
  assert set(ablation.lesion) <= set(names)


@pytest.mark.slow
def test_the_depth_study_command_runs_end_to_end_on_a_tiny_budget(tmp_path, shapes_data_dir, xla_cache_dir):
  """`experiments.sweep --ablation=depth_study`, each of its 24 runs cut to 4 steps and a 200-image evaluation:
  every run finishes, the summary has 8 configurations of 3 seeds, and the lesion of the ResNet-56 is written."""
  workdir = tmp_path / "study"
  args = [sys.executable, "-m", "experiments.sweep", "--ablation=depth_study", f"--workdir={workdir}",
          f"--config.data.data_dir={shapes_data_dir}", f"--config.compilation_cache_dir={xla_cache_dir}",
          "--config.num_epochs=None", "--config.num_steps=4", "--config.eval_every_steps=2",
          "--config.checkpoint_every_steps=2", "--config.log_every_steps=2", "--config.schedule.warmup_epochs=0",
          "--config.data.eval_split=test[:200]", "--config.eval_batch_size=100"]
  result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=3600, env=runs.device_env(1))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  with open(workdir / "summary.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 8 and {r["seeds"] for r in rows} == {"3"}
  lesioned = workdir / "seed=0,name=cifar_resnet56,shortcut=A"
  with open(lesioned / "lesion.csv") as f:
    assert len(list(csv.DictReader(f))) == 27  # One row per block of a ResNet-56.
  assert "[lesion] seed=0,name=cifar_resnet56,shortcut=A" in result.stdout


ABLATION_FILES = os.path.join(REPO, "benchmarks", "ablations")


# resnet_tweaks keeps the sweep's summary as sweep_summary.csv: its summary.md is benchmarks' own table.
@pytest.mark.parametrize("name, summary", [("depth_study", "summary.csv"), ("resnet_tweaks", "sweep_summary.csv"),
                                           ("bag_of_tricks", "summary.csv")])
def test_the_committed_study_tables_come_from_the_committed_run_records(tmp_path, name, summary):
  """benchmarks/ablations/NAME/runs holds every finished run's records (no checkpoints); the sweep's report written
  from them must be the committed results.csv and summary.csv, figure for figure."""
  workdir = tmp_path / name
  shutil.copytree(os.path.join(ABLATION_FILES, name, "runs"), workdir)
  manifest = os.path.join(ABLATION_FILES, name, sweep.MANIFEST)
  if os.path.exists(manifest):  # The trainers' own run times, where the sweep recorded them.
    shutil.copy(manifest, workdir / sweep.MANIFEST)
  ablation = sweep.load_ablation(name)
  axes, step_flags = sweep.sweep_axes(ablation.grid, ablation.steps)
  plan = sweep.plan(os.path.join(REPO, ablation.config), axes, str(workdir), list(ablation.flags),
                    step_flags=step_flags)
  # Every committed run is finished (no half-run records); a study still running commits whole runs as they end.
  committed = [run for run in plan if os.path.exists(run.workdir)]
  assert committed and all(sweep.run_status(run.workdir) == sweep.DONE for run in committed)
  sweep.write_report(str(workdir), plan, axes)
  for file, committed_file in (("results.csv", "results.csv"), ("summary.csv", summary)):
    with open(workdir / file) as ours, open(os.path.join(ABLATION_FILES, name, committed_file)) as committed:
      assert list(csv.DictReader(ours)) == list(csv.DictReader(committed)), file


def test_the_committed_bag_of_tricks_table_comes_from_the_committed_run_records():
  folder = os.path.join(ABLATION_FILES, "bag_of_tricks")
  result = subprocess.run([sys.executable, os.path.join(folder, "summary.py")], capture_output=True, text=True,
                          check=True)
  with open(os.path.join(folder, "table.md")) as f:
    assert result.stdout == f.read()
  assert "| 4 | + zero-gamma | 3 |" in result.stdout and "not run" not in result.stdout


def test_report_only_writes_the_report_of_what_is_there_and_trains_nothing(tmp_path):
  finished = {"seed=0,shortcut=A": _records([0.5, 0.9], 0.95), "seed=1,shortcut=A": _records([0.4, 0.8], 0.90)}
  _, plan = _fake_sweep(tmp_path, finished)
  manifest = os.path.join(tmp_path, sweep.MANIFEST)
  files.write_json(manifest, {"runs": {}})
  codes = sweep.run_sweep(os.path.join(REPO, "configs", "shapes.py"), "seed=0,1,2 model.shortcut=none,A",
                          str(tmp_path), report_only=True, echo=lambda line: None)
  assert codes == {}
  assert files.read_json(manifest) == {"runs": {}}  # Left as it was.
  assert [run.name for run in plan if sweep.run_status(run.workdir) != sweep.NEW] == list(finished)
  with open(tmp_path / "summary.csv") as f:
    rows = {r["shortcut"]: r for r in csv.DictReader(f)}
  assert set(rows) == {"A"} and rows["A"]["seeds"] == "2"  # No row for a configuration with no finished run.


def _criteria_module():
  path = os.path.join(ABLATION_FILES, "depth_study", "criteria.py")
  spec = importlib.util.spec_from_file_location("depth_study_criteria", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _summary_table(train_a, test_a, train_plain, range_points=2.0):
  table = {}
  for depth, tr, te, pl in zip((20, 32, 44, 56), train_a, test_a, train_plain):
    half = range_points / 200
    table[depth, "A"] = {"final_train_error_mean": tr, "final_test_error_mean": te,
                         "final_train_error_min": tr - half, "final_train_error_max": tr + half}
    table[depth, "none"] = {"final_train_error_mean": pl}
  return table


def test_the_depth_study_criteria_are_checked_as_written():
  criteria = _criteria_module()
  paper = _summary_table([0.10, 0.08, 0.06, 0.04], [0.12, 0.10, 0.08, 0.07], [0.2, 0.3, 0.4, 0.5])
  assert [holds for *_, holds in criteria.check(paper, 3600)] == [True] * 5
  # Each failure is seen on its own: one inversion, a gap inside the seed spread, a test-error reversal, a plain
  # net that does not degrade, a study over budget.
  inverted = _summary_table([0.10, 0.08, 0.09, 0.04], [0.12, 0.10, 0.08, 0.07], [0.2, 0.3, 0.4, 0.5])
  assert [holds for *_, holds in criteria.check(inverted, 3600)] == [False, True, True, True, True]
  noisy = _summary_table([0.10, 0.08, 0.06, 0.04], [0.12, 0.10, 0.08, 0.07], [0.2, 0.3, 0.4, 0.5], 7.0)
  assert [holds for *_, holds in criteria.check(noisy, 3600)][1] is False
  memorised = _summary_table([0.10, 0.08, 0.06, 0.04], [0.12, 0.10, 0.11, 0.07], [0.2, 0.3, 0.4, 0.5])
  assert [holds for *_, holds in criteria.check(memorised, 3600)][2] is False
  plain = _summary_table([0.10, 0.08, 0.06, 0.04], [0.12, 0.10, 0.08, 0.07], [0.2, 0.3, 0.3, 0.5])
  assert [holds for *_, holds in criteria.check(plain, 3600)][3] is False
  assert [holds for *_, holds in criteria.check(paper, 3 * 3600)][4] is False
  assert criteria.check(paper)[4][2] is None


def test_the_committed_criteria_check_comes_from_the_committed_summary():
  folder = os.path.join(ABLATION_FILES, "depth_study")
  result = subprocess.run([sys.executable, "-m", "benchmarks.ablations.depth_study.criteria"], cwd=REPO,
                          capture_output=True, text=True, check=True)
  with open(os.path.join(folder, "criteria_check.md")) as f:
    assert result.stdout == f.read()
