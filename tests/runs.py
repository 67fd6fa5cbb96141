"""Helpers for tests that train real (tiny) runs: configs, command-line flags, subprocesses, run directories.

A tiny run is a half-width CIFAR ResNet-20 on the built-in `shapes/small` dataset (2k train / 500 test, 32x32),
with batch 32 and a few steps; `TINY` lists what it overrides in configs/shapes.py. Tests pass the session's
prepared data dir and XLA cache dir (tests/conftest.py fixtures) so that every run after the first one reads its
compiled programs from the cache.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from resnet_jax import finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Fields a tiny run overrides; also passed as --config.* flags to subprocess runs.
TINY = {
    "data.builder_config": "small",
    "model.width": 0.5,
    "batch_size": 32,
    "eval_batch_size": 100,
    "num_epochs": None,
    "num_steps": 6,
    "log_every_steps": 2,
    "eval_every_epochs": None,
    "checkpoint_every_steps": 3,
    "schedule.warmup_epochs": None,
    "schedule.warmup_steps": 2,
}


# Trainer flags of a four-step run (batch 32 on shapes/small, checkpoints every 2 steps) for tests that drive the
# scripts (sweep, lesion) end to end; add `--config.data.data_dir=...`.
FOUR_STEP_FLAGS = ["--config.data.builder_config=small", "--config.num_epochs=None", "--config.num_steps=4",
                   "--config.schedule.warmup_epochs=0", "--config.batch_size=32", "--config.eval_batch_size=100",
                   "--config.log_every_steps=2", "--config.checkpoint_every_steps=2"]


def _values(data_dir, cache_dir, overrides) -> dict:
  return {**TINY, "data.data_dir": data_dir, "compilation_cache_dir": cache_dir, **overrides}


def tiny_config(data_dir, cache_dir, **overrides):
  """configs/shapes.py with `TINY` and `overrides` ('a.b' keys) applied."""
  from configs import shapes
  config = shapes.get_config()
  for key, value in _values(data_dir, cache_dir, overrides).items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny_flags(data_dir, cache_dir, **overrides) -> list[str]:
  """The same settings as `tiny_config`, as --config.* flags for experiments/train.py."""
  return [f"--config.{k}={v}" for k, v in _values(data_dir, cache_dir, overrides).items()]


def device_env(devices: int, extra_env=None) -> dict[str, str]:
  """This process's environment with `devices` simulated CPU devices for JAX."""
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **(extra_env or {})}


def start(module: str, args, *, devices: int, extra_env=None) -> subprocess.Popen:
  """Starts `python -m module args` on `devices` simulated CPU devices.

  Its stdout and stderr go to one temporary file (`output(proc)` reads it), not to a pipe: a pipe nobody reads
  while the test watches the run would fill up and stall the run.
  """
  env = device_env(devices, extra_env)
  fd, log_path = tempfile.mkstemp(prefix="run-", suffix=".log")
  os.close(fd)
  with open(log_path, "ab") as log:  # The child keeps its own descriptor, in append mode.
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
  proc.log_path = log_path
  return proc


def output(proc: subprocess.Popen) -> str:
  """Everything the process started by `start` has written so far."""
  with open(proc.log_path, errors="replace") as f:
    return f.read()


def run_subprocess(args, *, devices, extra_env=None):
  """Starts `python -m experiments.train args` (see `start`)."""
  return start("experiments.train", args, devices=devices, extra_env=extra_env)


def finish(proc: subprocess.Popen, timeout: float = 600, *, expect_rc: int = 0) -> str:
  """Waits for `proc`, checks its exit code, returns its output."""
  proc.wait(timeout=timeout)
  out = output(proc)
  os.remove(proc.log_path)
  assert proc.returncode == expect_rc, f"exit code {proc.returncode}, expected {expect_rc}:\n{out[-6000:]}"
  return out


@contextlib.contextmanager
def running(proc: subprocess.Popen):
  """Kills `proc` (only it) if the block leaves while it still runs, e.g. because an assertion failed."""
  try:
    yield proc
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def run(module: str, args, *, devices: int, expect_rc: int = 0, timeout: float = 600) -> str:
  """Runs `python -m module args` to completion (see `start`, `finish`) and returns its output."""
  return finish(start(module, args, devices=devices), timeout, expect_rc=expect_rc)


def last_logged_step(workdir) -> int:
  """The largest step of a complete line in the run's metrics.jsonl (0 if none yet)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    text = f.read()
  step = 0
  for line in text.splitlines(keepends=True):
    if line.endswith("\n"):  # The line being written may be cut short.
      step = max(step, json.loads(line)["step"])
  return step


def wait_for(condition, proc: subprocess.Popen, *, what: str, timeout: float = 300, poll: float = 0.01):
  """Polls `condition()` until it is truthy and returns its value; fails if `proc` ends first or on timeout."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    value = condition()
    if value:
      return value
    if proc.poll() is not None:
      out = output(proc)
      raise AssertionError(f"the run ended (exit code {proc.returncode}) before {what}:\n{out[-6000:]}")
    time.sleep(poll)
  proc.kill()
  raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def final_params(workdir):
  """{'params', 'batch_stats'} of a run's latest committed checkpoint, as numpy."""
  return finetune.load_params(workdir)


def train_records(workdir) -> dict[int, dict]:
  """step -> the train record of metrics.jsonl; fails on a step written twice."""
  from resnet_jax import files
  records = [r for r in files.read_records(os.path.join(workdir, "metrics.jsonl")) if r["split"] == "train"]
  steps = [r["step"] for r in records]
  assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
  return {r["step"]: r for r in records}


def assert_trees_close(a, b, *, rtol, atol):
  """Same structure, and every leaf close (rtol = atol = 0 asks for bitwise equality)."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    name = jax.tree_util.keystr(path)
    if rtol == 0 and atol == 0:
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    else:
      np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol, err_msg=name)


def without_head(tree: dict) -> dict:
  """A variables collection (e.g. params) without its classifier."""
  return {k: v for k, v in tree.items() if k != "head"}


def data_config(**overrides):
  """configs/default.py's `config.data` (every field the input pipeline reads) with `overrides` applied."""
  from configs import default
  config = default.get_config().data
  for key, value in overrides.items():
    config[key] = value
  return config


def corrupt_copy(data_dir, tmp_path, split, index):
  """A TFDS data dir under tmp_path holding a copy of shapes/small whose `split` has the image of its record
  `index` replaced by bytes that do not decode."""
  import shutil

  import tensorflow as tf
  import tensorflow_datasets as tfds

  source = tfds.builder("shapes", config="small", data_dir=data_dir)
  target = tmp_path / "shapes" / "small" / str(source.version)
  shutil.copytree(source.data_dir, target)
  (path,) = [p for p in target.iterdir() if f"-{split}.tfrecord" in p.name]
  records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
  example = tf.train.Example.FromString(records[index])
  example.features.feature["image"].bytes_list.value[0] = b"\x89PNG this is not an image"
  records[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)
  return str(tmp_path)


def record_index_at(config, position, *, local_batch):
  """The index, in the train split's stored order, of the record a one-process run with seed 0 reads at `position`
  of epoch 0."""
  from resnet_jax.data import datasets, pipeline, tfrecords
  builder = datasets.builder_for(config)
  cache = tfrecords.load_records(builder, "train") if config.cache else None
  records = pipeline.epoch_records(builder, "train", seed=0, epoch=0, cache_records=cache, local_batch=local_batch,
                                   shuffle_buffer=config.shuffle_buffer)
  (_, _, record), = records.skip(position).take(1).as_numpy_iterator()
  stored = list(tfrecords.read_split(builder, "train").as_numpy_iterator())
  return stored.index(record)


def processes_mentioning(text: str) -> list[int]:
  """Process ids whose command line contains `text` (Linux: read from /proc)."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if text.encode() in f.read():
          found.append(int(pid))
    except OSError:
      pass
  return found


def read_events(workdir: str) -> dict[tuple[int, str], float]:
  """{(step, tag): value} of every scalar in the TensorBoard event files in `workdir`, read back by TensorFlow (as
  TensorBoard reads them: tensorboardX writes simple values)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars[(event.step, value.tag)] = (value.simple_value if value.WhichOneof("value") == "simple_value"
                                            else float(tf.make_ndarray(value.tensor)))
  return scalars
