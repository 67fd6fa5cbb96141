"""Lesion study: refused for plain networks, one table row and one bar per block, written atomically."""
import csv
import json
import os
import subprocess
import sys

import pytest

from resnet_jax import config as config_lib
from resnet_jax import files, lesion
from tests import runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_dir(tmp_path, shortcut):
  """A workdir holding the config.json a training run of `configs/shapes.py` with this shortcut would save."""
  config = config_lib.resolve(os.path.join(REPO, "configs", "shapes.py"), [f"--config.model.shortcut={shortcut}"])
  workdir = tmp_path / f"run_{shortcut}"
  workdir.mkdir()
  (workdir / files.CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2))
  return str(workdir)


def _lesion(*args):
  return subprocess.run([sys.executable, "-m", "experiments.lesion", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=120)


def test_plain_networks_are_refused_with_the_reason(tmp_path):
  config = config_lib.load_run_config(_run_dir(tmp_path, "none"))
  with pytest.raises(ValueError, match="not defined for a plain network.*no identity path"):
    lesion.check_defined(config.model)
  with pytest.raises(ValueError, match="plain network"):
    lesion.study(config, str(tmp_path))  # Refused before any checkpoint is looked for.


@pytest.mark.parametrize("shortcut", ["A", "B", "C"])
def test_residual_networks_are_accepted(tmp_path, shortcut):
  config = config_lib.load_run_config(_run_dir(tmp_path, shortcut))
  lesion.check_defined(config.model)
  config.model.shortcut = None  # The model's default shortcut is residual too.
  lesion.check_defined(config.model)


def test_script_refuses_a_plain_run_without_a_traceback(tmp_path):
  workdir = _run_dir(tmp_path, "none")
  result = _lesion(f"--workdir={workdir}")
  assert result.returncode != 0
  assert "not defined for a plain network" in result.stderr and "Traceback" not in result.stderr
  assert sorted(os.listdir(workdir)) == [files.CONFIG_FILE]  # Nothing written.


def test_script_names_a_directory_that_is_not_a_run(tmp_path):
  result = _lesion(f"--workdir={tmp_path}")
  assert result.returncode != 0 and "has no config.json" in result.stderr


def test_lesion_row_reports_the_change_against_the_intact_network():
  row = lesion.row(4, "stage2/block1", False, {"top1": 0.75, "loss": 0.9}, {"top1": 0.875})
  assert row == {"block": 4, "path": "stage2/block1", "changes_shape": False, "top1": 0.75, "error": 0.25,
                 "loss": 0.9, "delta_top1": -0.125}


def test_lesion_files_have_one_row_and_one_bar_per_block(tmp_path):
  baseline = {"top1": 0.9, "loss": 0.3}
  plan = [(f"stage{1 + i // 3}/block{i % 3}", i in (3, 6)) for i in range(9)]  # A ResNet-20's nine blocks.
  rows = [lesion.row(i, path, changes, {"top1": 0.9 - 0.01 * i, "loss": 0.3}, baseline)
          for i, (path, changes) in enumerate(plan)]
  paths = lesion.write(str(tmp_path), lesion.LesionResult(step=390, baseline=baseline, rows=rows))
  assert [os.path.basename(p) for p in paths] == ["lesion.csv", "lesion.md", "lesion.png"]
  with open(tmp_path / "lesion.csv") as f:
    table = list(csv.DictReader(f))
  assert list(table[0]) == list(lesion.COLUMNS)
  assert [r["path"] for r in table] == [p for p, _ in plan]
  assert [float(r["delta_top1"]) for r in table] == pytest.approx([-0.01 * i for i in range(9)])
  markdown = (tmp_path / "lesion.md").read_text()
  assert "step 390" in markdown and "top-1 90.00 %" in markdown
  assert len([line for line in markdown.splitlines() if line.startswith("|")]) == 2 + 9
  assert (tmp_path / "lesion.png").read_bytes()[:4] == b"\x89PNG"


# --- End to end: train a tiny residual net, then lesion it --------------------------------------------------------
TINY = runs.FOUR_STEP_FLAGS


@pytest.mark.slow
def test_lesion_of_a_tiny_trained_resnet20_has_one_row_per_block(tmp_path, shapes_small):
  workdir = str(tmp_path / "run")
  command = [sys.executable, "-m", "experiments.train", "--config=configs/shapes.py", "--config.model.shortcut=A",
             f"--workdir={workdir}", *TINY, shapes_small]
  train = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert train.returncode == 0, train.stdout + train.stderr
  result = _lesion(f"--workdir={workdir}")
  assert result.returncode == 0, result.stdout + result.stderr
  output = result.stdout + result.stderr  # The libraries' INFO lines (TFDS, Orbax) are kept quiet.
  assert "Load dataset info" not in output and "dataset_info.py" not in output, output[-3000:]
  with open(os.path.join(workdir, "lesion.csv")) as f:
    rows = list(csv.DictReader(f))
  assert [r["path"] for r in rows] == [f"stage{s}/block{b}" for s in (1, 2, 3) for b in range(3)]
  assert [r["changes_shape"] for r in rows] == ["False"] * 3 + ["True", "False", "False"] * 2
  assert all(0.0 <= float(r["top1"]) <= 1.0 for r in rows)
  assert os.path.getsize(os.path.join(workdir, "lesion.png")) > 0
  # Every delta is relative to the intact network, which is the trained run's final evaluation.
  final = json.load(open(os.path.join(workdir, files.DONE_FILE)))
  for row in rows:
    assert float(row["top1"]) - float(row["delta_top1"]) == pytest.approx(final["top1"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_a_lesion_study_killed_and_rerun_writes_the_same_table(tmp_path, shapes_small):
  """kill -9 half-way through the blocks: nothing is written (no half table), and a rerun writes the table an
  uninterrupted study writes. Run by CI."""
  workdir = str(tmp_path / "run")
  command = [sys.executable, "-m", "experiments.train", "--config=configs/shapes.py", f"--workdir={workdir}", *TINY,
             shapes_small]
  assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=600).returncode == 0
  result = _lesion(f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  whole = open(os.path.join(workdir, "lesion.csv")).read()
  for name in ("lesion.csv", "lesion.md", "lesion.png"):
    os.remove(os.path.join(workdir, name))
  proc = runs.start("experiments.lesion", [f"--workdir={workdir}"], devices=1)
  with runs.running(proc):
    runs.wait_for(lambda: "block 3 (" in runs.output(proc), proc, what="block 3")
    proc.kill()
    proc.wait()
  assert not any(name.startswith("lesion") for name in os.listdir(workdir))
  result = _lesion(f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr
  assert open(os.path.join(workdir, "lesion.csv")).read() == whole
