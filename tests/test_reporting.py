"""Tests for resnet_jax.reporting: metrics.jsonl, TensorBoard events, console lines, the saved config, MFU lines,
profiles."""
import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from resnet_jax import files, flops, reporting
from tests import runs


def _read(path):
  """metrics.jsonl records without their wall-clock stamps (checked once, in test_records_carry_wall_time)."""
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in files.read_records(path)]


def test_records_carry_wall_time(tmp_path):
  import time
  before = time.time()
  with reporting.Reporter(str(tmp_path), total_steps=10, is_main=True, start_step=0, tensorboard=False,
                          console=None) as rep:
    rep.write(1, "train", {"loss": 1.0})
  (record,) = files.read_records(os.path.join(str(tmp_path), files.METRICS_FILE))
  assert before - 1 <= record["wall_time"] <= time.time() + 1


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed: nothing to keep out")
def test_tensorboard_events_do_not_load_torch(tmp_path):
  """tensorboardX's writer imports torch where it is installed; a run's TensorBoard events must not (in a child
  process, so that the test process stays free of torch whatever happens)."""
  code = ("import sys; from resnet_jax import reporting\n"
          "with reporting.Reporter(sys.argv[1], total_steps=1, is_main=True, start_step=0, console=None) as rep:\n"
          "  rep.write(1, 'train', {'loss': 1.0})\n"
          "print(sorted(set(sys.modules) & {'torch', 'tensorboardX'}))\n"
          "import torch\n"  # Free again afterwards, for a program that wants it.
          "print(torch.zeros(1).shape)")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=runs.ROOT, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split("\n")[-3:-1] == ["['tensorboardX']", "torch.Size([1])"], result.stdout
  assert runs.read_events(str(tmp_path)) == {(1, "train/loss"): 1.0}


def test_jsonl_and_tensorboard_agree(tmp_path):
  workdir = str(tmp_path / "run")
  lines = []
  with reporting.Reporter(workdir, total_steps=100, is_main=True, start_step=0, console=lines.append) as rep:
    # 98.9 TFLOP per step on an H200 in bfloat16 (989 TFLOP/s peak): 10 steps in 4 s is 25 % MFU.
    rep.set_step_flops(98.9e12, dtype="bfloat16", device_kind="NVIDIA H200")
    rep.write_train(10, {"loss": jnp.float32(2.5), "accuracy": np.float32(0.25)}, lr=0.1, num_steps=10,
                    images=4000, seconds=4.0)
    rep.write_train(20, {"loss": 1.5, "accuracy": 0.5}, lr=0.05)
    rep.write_eval(20, {"loss": 1.75, "top1": 0.375, "top5": 0.875, "count": 1000})

  records = _read(os.path.join(workdir, files.METRICS_FILE))
  assert [(r["step"], r["split"]) for r in records] == [(10, "train"), (20, "train"), (20, "eval")]
  assert records[0] == {"step": 10, "split": "train", "loss": 2.5, "accuracy": 0.25, "learning_rate": 0.1,
                        "images_per_sec": 1000.0, "mfu": pytest.approx(0.25)}
  assert records[1] == {"step": 20, "split": "train", "loss": 1.5, "accuracy": 0.5, "learning_rate": 0.05}
  assert records[2]["count"] == 1000 and isinstance(records[2]["count"], int)

  from_jsonl = {(r["step"], f"{r['split']}/{k}"): v for r in records for k, v in r.items()
                if k not in ("step", "split")}
  from_events = runs.read_events(workdir)
  assert from_events.keys() == from_jsonl.keys()
  for key, value in from_jsonl.items():
    assert from_events[key] == pytest.approx(value, rel=1e-6), key  # TensorBoard stores float32

  # A line on the step's cost, then one per record with the known metrics formatted; ETA from the second train line.
  assert lines[0] == "Train step: 98.9 TFLOP per device; peak 989 TFLOP/s (NVIDIA H200, bfloat16)."
  assert lines[1] == "train step 10/100  loss 2.5000  accuracy 0.2500  lr 0.1  1000.0 img/s  MFU 25.0%"
  assert lines[2].startswith("train step 20/100  loss 1.5000  accuracy 0.5000  lr 0.05  ETA ")
  assert lines[3] == "eval step 20/100  loss 1.7500  top1 0.3750  top5 0.8750  count 1000"
  assert len(lines) == 4


def test_mfu_is_omitted_where_the_peak_is_unknown(tmp_path):
  lines = []
  with reporting.Reporter(str(tmp_path), total_steps=10, is_main=True, tensorboard=False,
                          console=lines.append) as rep:
    rep.set_step_flops(1e9, dtype="float32", device_kind="cpu")
    rep.write_train(1, {"loss": 1.0}, lr=0.1, num_steps=1, images=8, seconds=0.5)
  assert "no peak rate for 'cpu' in float32" in lines[0]
  assert _read(os.path.join(tmp_path, files.METRICS_FILE)) == [
      {"step": 1, "split": "train", "loss": 1.0, "learning_rate": 0.1, "images_per_sec": 16.0}]


def test_mfu_on_cpu_uses_the_host_estimate(tmp_path):
  peak, how = flops.cpu_peak_flops()
  if peak is None:
    pytest.skip(f"no CPU peak estimate on this host: {how}")
  lines = []
  with reporting.Reporter(str(tmp_path), total_steps=10, is_main=True, tensorboard=False,
                          console=lines.append) as rep:
    rep.set_step_flops(1e9, dtype="float32")  # this process's first device: a (simulated) CPU device
    rep.write_train(1, {"loss": 1.0}, lr=0.1, num_steps=1, images=8, seconds=0.5)
  per_device = peak / jax.local_device_count()
  assert "estimate:" in lines[0] and "per device; peak" in lines[0]
  record = _read(os.path.join(tmp_path, files.METRICS_FILE))[0]
  assert record["mfu"] == pytest.approx(1e9 * 2 / per_device)  # 2 steps/s


def test_only_the_main_process_writes(tmp_path):
  workdir = str(tmp_path / "run")
  lines = []
  rep = reporting.Reporter(workdir, total_steps=10, is_main=False, start_step=0, console=lines.append)
  rep.set_step_flops(1e9, dtype="bfloat16", device_kind="NVIDIA H200")
  rep.write_train(1, {"loss": 1.0}, lr=0.1, num_steps=1, images=8, seconds=1.0)
  rep.write_eval(1, {"top1": 1.0})
  rep.maybe_profile(0, (0, 2))
  assert rep.truncate_after(0) == 0
  rep.close()
  assert reporting.save_config({"a": 1}, workdir, is_main=False) is None
  profile = reporting.ProfileWindow(workdir, first_step=0, num_steps=2, is_main=False)
  profile.step(0)
  profile.close()
  assert not os.path.exists(workdir)
  assert not lines


def test_non_finite_values_are_null_in_jsonl(tmp_path):
  workdir = str(tmp_path)
  lines = []
  with reporting.Reporter(workdir, total_steps=10, is_main=True, start_step=0, tensorboard=False,
                          console=lines.append) as rep:
    rep.write(3, "train", {"loss": float("nan"), "accuracy": 0.5})
  with open(os.path.join(workdir, files.METRICS_FILE)) as f:
    text = f.read()
  record = json.loads(text)  # strict JSON
  record.pop("wall_time")
  assert record == {"step": 3, "split": "train", "loss": None, "accuracy": 0.5}
  assert "loss nan" in lines[0]


def test_bad_metrics_are_rejected(tmp_path):
  with reporting.Reporter(str(tmp_path), total_steps=10, is_main=True, start_step=0, tensorboard=False,
                          console=None) as rep:
    with pytest.raises(ValueError, match="must be a scalar"):
      rep.write(1, "train", {"loss": np.ones(3)})
    with pytest.raises(ValueError, match="may not be named 'step'"):
      rep.write(1, "train", {"step": 1})


def test_resume_drops_later_records_atomically(tmp_path):
  workdir = str(tmp_path)
  path = os.path.join(workdir, files.METRICS_FILE)
  with reporting.Reporter(workdir, total_steps=10, is_main=True, start_step=0, tensorboard=False,
                          console=None) as rep:
    for step in range(1, 6):
      rep.write(step, "train", {"loss": 1.0 / step})
    rep.write(4, "eval", {"top1": 0.5})
  with open(path, "a") as f:
    f.write('{"step": 6, "split": "tra')  # the cut-short last line of a crashed run

  # Resuming from the checkpoint of step 3: steps 4 and later will be written again.
  with reporting.Reporter(workdir, total_steps=10, is_main=True, start_step=3, tensorboard=False,
                          console=None) as rep:
    assert [r["step"] for r in _read(path)] == [1, 2, 3]
    rep.write(4, "train", {"loss": 0.2})
    assert rep.truncate_after(3) == 1
  assert os.listdir(workdir) == [files.METRICS_FILE]  # no temporary file left behind
  assert [r["step"] for r in _read(path)] == [1, 2, 3]
  assert reporting.truncate_jsonl(os.path.join(workdir, "missing.jsonl"), 0) == 0
  # Without start_step the file is left as it is.
  with reporting.Reporter(workdir, total_steps=10, is_main=True, tensorboard=False, console=None):
    pass
  assert [r["step"] for r in _read(path)] == [1, 2, 3]


def test_save_config_round_trips(tmp_path):
  config = ml_collections.ConfigDict({"seed": 0, "model": {"name": "cifar_resnet20", "lesion_blocks": (1, 2)},
                                      "num_epochs": None, "dtype": jnp.float32})
  path = reporting.save_config(config, str(tmp_path / "run"))
  with open(path) as f:
    saved = json.load(f)
  assert saved == {"seed": 0, "model": {"name": "cifar_resnet20", "lesion_blocks": [1, 2]}, "num_epochs": None,
                   "dtype": str(jnp.float32)}
  assert sorted(os.listdir(tmp_path / "run")) == [files.CONFIG_FILE]


def test_format_duration_and_flops():
  assert [reporting.format_duration(s) for s in (5, 184, 7380, 93780)] == ["5s", "3m04s", "2h03m", "1d02h03m"]
  assert [reporting.format_flops(f) for f in (3.1e9, 98.9e12, 500)] == ["3.1 GFLOP", "98.9 TFLOP", "500 FLOP"]


def test_profile_window_traces_the_chosen_steps(tmp_path):
  workdir = str(tmp_path)
  profile = reporting.ProfileWindow(workdir, first_step=2, num_steps=2, is_main=True)
  x = jnp.ones((16, 16))
  started, stopped = [], []
  for step in range(6):
    was_active = profile.active
    profile.step(step, block_on=x)
    started += [step] if profile.active and not was_active else []
    stopped += [step] if was_active and not profile.active else []
    x = x @ x / 16
  profile.close()
  assert (started, stopped) == ([2], [4])
  assert glob.glob(os.path.join(workdir, reporting.PROFILE_DIR, "**", "*.xplane.pb"), recursive=True)
  with pytest.raises(ValueError, match="non-negative"):
    reporting.ProfileWindow(workdir, first_step=-1, num_steps=2, is_main=True)


def test_reporter_profiles_the_configured_steps(tmp_path):
  workdir = str(tmp_path)
  with reporting.Reporter(workdir, total_steps=10, is_main=True, tensorboard=False, console=None) as rep:
    x = jnp.ones((8, 8))
    for step in range(1, 5):
      x = x @ x / 8
      rep.maybe_profile(step, (2, 3), block_on=x)
    with pytest.raises(ValueError, match=r"profile_steps must be \(start, stop\)"):
      reporting.Reporter(workdir, total_steps=10, is_main=True, tensorboard=False).maybe_profile(1, (3, 3))
  assert len(glob.glob(os.path.join(workdir, reporting.PROFILE_DIR, "**", "*.xplane.pb"), recursive=True)) == 1


def test_url_workdirs_go_through_tensorflow_file_systems():
  # 'ram://' is TensorFlow's in-memory file system: it stands in for gs:// here.
  workdir = f"ram://reporting_test_{os.getpid()}/run"
  with reporting.Reporter(workdir, total_steps=10, is_main=True, start_step=0, console=None) as rep:
    for step in (1, 2, 3):
      rep.write_train(step, {"loss": 1.0 / step})
    assert rep.truncate_after(2) == 1
    rep.write_eval(2, {"top1": 0.5})
  records = _read(os.path.join(workdir, files.METRICS_FILE))
  assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (2, "eval")]
  assert set(runs.read_events(workdir)) == {(1, "train/loss"), (2, "train/loss"), (3, "train/loss"), (2, "eval/top1")}
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(reporting.save_config({"seed": 1}, workdir)) as f:
    assert json.load(f) == {"seed": 1}
