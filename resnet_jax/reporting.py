"""What a run reports: metrics.jsonl, TensorBoard event files, console lines, the config, MFU and profiles.

Only the main process (JAX process 0) writes; on other processes every writer here is a no-op, so the engine can
call them unconditionally.

- `metrics.jsonl` holds one JSON object per line: `{"step": ..., "split": "train" | "eval", <metric>: ...}`. Each
  line is appended and flushed on its own, so a crash can at worst cut the last line short; `truncate_jsonl`
  rewrites the file atomically without the lines a resumed run will write again.
- TensorBoard scalars `<split>/<metric>` go to event files in the workdir, written by tensorboardX (no TensorFlow
  needed).
- The workdir may be a local path or a URL that TensorFlow's file systems handle (gs://...); only URLs import
  TensorFlow for file access.
- Model FLOPs utilisation (MFU) is the FLOP rate of the compiled train step over the device's peak (see
  `resnet_jax.flops`).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from resnet_jax import files
from resnet_jax import flops as flops_lib

PROFILE_DIR = "profile"


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def save_config(config: Any, workdir: str, *, is_main: bool = True) -> str | None:
  """Writes the resolved config to `workdir/config.json` atomically (on the main process only).

  Args:
    config: an ml_collections ConfigDict (or FrozenConfigDict) or a plain mapping.
    workdir: the run directory; created if missing.
    is_main: whether this is the process that writes.

  Returns:
    The path written, or None on other processes.
  """
  if not is_main:
    return None
  as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  path = os.path.join(workdir, files.CONFIG_FILE)
  files.write_json(path, as_dict, sort_keys=False)  # In the config's own order.
  return path


def truncate_jsonl(path: str, step: int) -> int:
  """Drops the records of a metrics file whose step is greater than `step`, by an atomic rewrite.

  Lines that do not parse (the cut-short last line of a crashed run) are dropped too. A missing file is left
  missing.

  Returns:
    The number of lines dropped.
  """
  if not files.exists(path):
    return 0
  with files.open_file(path) as f:
    lines = f.read().splitlines()
  kept = [r for r in files.read_records(path) if r["step"] <= step]
  if len(kept) != len(lines):
    files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
  return len(lines) - len(kept)


def _python_scalar(name: str, value: Any) -> int | float | bool:
  """Turns a metric (Python, NumPy or JAX scalar) into a Python number."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f"Metric {name!r} must be a scalar, got shape {array.shape}.")
  return array.reshape(()).item()


# ----------------------------------------------------------------------------------------------------------------
# TensorBoard
# ----------------------------------------------------------------------------------------------------------------


class _EventWriter:
  """Scalars to TensorBoard event files through tensorboardX, which needs no TensorFlow: synthetic-data runs on an
  accelerator image without TensorFlow write them too. A URL workdir (gs://...) is written through TensorFlow's
  file systems, like every other run file (`files.open_file`)."""

  def __init__(self, logdir: str):
    SummaryWriter, record_writer = _tensorboardx()  # pylint: disable=invalid-name
    if files.is_url(logdir):
      record_writer.register_writer_factory(logdir.split("://")[0], _RunFileFactory())
    # Flushed by `write` itself, after every record.
    self._writer = SummaryWriter(logdir=logdir, max_queue=1000, flush_secs=3600)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    for tag, value in scalars.items():
      self._writer.add_scalar(tag, value, global_step=step)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _tensorboardx():
  """tensorboardX's SummaryWriter and record_writer, imported without PyTorch.

  tensorboardX's writer module imports torch whenever it is installed, only to accept torch tensors, which a JAX run
  never passes. Loaded beside JAX and TensorFlow, torch costs seconds and hundreds of MB per process, and its triton
  import has crashed processes; so unless torch is already loaded, its import fails for the length of this one (as if
  it were not installed), and is free again afterwards.
  """
  block = "torch" not in sys.modules
  if block:
    sys.modules["torch"] = None  # What an import of a missing package meets: ImportError, which tensorboardX catches.
  try:
    from tensorboardX import SummaryWriter, record_writer  # pylint: disable=g-import-not-at-top
  finally:
    if block and sys.modules.get("torch", "absent") is None:
      del sys.modules["torch"]
  return SummaryWriter, record_writer


class _RunFileFactory:
  """tensorboardX's writer factory for URLs, opening files as `files.open_file` does."""

  def open(self, path: str):
    return files.open_file(path, "wb")

  def directory_check(self, path: str) -> None:
    files.makedirs(path)


# ----------------------------------------------------------------------------------------------------------------
# Console
# ----------------------------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
  """'1d02h03m', '2h03m', '3m04s' or '5s'."""
  seconds = int(round(seconds))
  days, rest = divmod(seconds, 86400)
  hours, rest = divmod(rest, 3600)
  minutes, secs = divmod(rest, 60)
  if days:
    return f"{days}d{hours:02d}h{minutes:02d}m"
  if hours:
    return f"{hours}h{minutes:02d}m"
  if minutes:
    return f"{minutes}m{secs:02d}s"
  return f"{secs}s"


def format_flops(flops: float) -> str:
  """'98.9 TFLOP', '3.1 GFLOP', ..."""
  for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if flops >= scale:
      return f"{flops / scale:.3g} {unit}"
  return f"{flops:.3g} FLOP"


def format_line(step: int, split: str, metrics: Mapping[str, Any], *, total_steps: int | None = None,
                eta_seconds: float | None = None) -> str:
  """One console line, e.g. `train step 120/1000  loss 0.5432  accuracy 0.8125  lr 0.1  812 img/s  ETA 3m04s`.

  The learning rate, images/s and MFU are recognised by their metric names 'learning_rate', 'images_per_sec' and
  'mfu' (a fraction); other metrics print as `name value`. Per-block metrics ('signal/...') are left to the
  metrics file and TensorBoard.
  """
  parts = [f"{split} step {step}/{total_steps}" if total_steps else f"{split} step {step}"]
  for name, value in metrics.items():
    if value is None or "/" in name:
      continue
    if name == "learning_rate":
      parts.append(f"lr {value:.4g}")
    elif name == "images_per_sec":
      parts.append(f"{value:.1f} img/s")
    elif name == "mfu":
      parts.append(f"MFU {value:.1%}")
    elif isinstance(value, float):
      parts.append(f"{name} {value:.4f}")
    else:
      parts.append(f"{name} {value}")
  if eta_seconds is not None:
    parts.append(f"ETA {format_duration(eta_seconds)}")
  return "  ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Reporter
# ----------------------------------------------------------------------------------------------------------------


class Reporter:
  """Writes each logged step or evaluation to metrics.jsonl, TensorBoard and the console.

  On other processes than the main one it writes nothing (no files, no directories, no console lines).

  Usage:
    reporter = Reporter(workdir, total_steps=plan.total_steps, is_main=jax.process_index() == 0,
                        start_step=restored_step)
    reporter.set_step_flops(flops.step_flops(compiled_train_step), dtype=config.dtype)
    reporter.write_train(step, {'loss': ..., 'accuracy': ...}, lr=..., num_steps=..., images=..., seconds=...)
    reporter.write_eval(step, {'loss': ..., 'top1': ..., 'top5': ...})
    reporter.close()
  """

  def __init__(self, workdir: str, *, total_steps: int, is_main: bool, start_step: int | None = None,
               tensorboard: bool = True, console: Callable[[str], None] | None = print):
    """Opens the run's reports.

    Args:
      workdir: the run directory (created if missing).
      total_steps: the training length, for progress and ETA.
      is_main: whether this process writes (JAX process 0).
      start_step: the step the run starts or resumes from (0 for a fresh run). If given, records already in
        metrics.jsonl with a larger step are dropped, since this run writes those steps again (the same as
        calling `truncate_after(start_step)`).
      tensorboard: whether to write TensorBoard event files.
      console: where console lines go (e.g. `print` or `logging.info`); None for no console output.
    """
    self.workdir = workdir
    self.total_steps = total_steps
    self.is_main = is_main
    self.metrics_path = os.path.join(workdir, files.METRICS_FILE)
    self._console = console if is_main else None
    self._events = None
    self._first_train: tuple[int, float] | None = None  # (step, time) of the first train record, for the ETA
    self._flops: float | None = None  # per device and step
    self._peak: float | None = None  # per device
    self._profile: ProfileWindow | None = None
    if not is_main:
      return
    files.makedirs(workdir)
    if start_step is not None:
      truncate_jsonl(self.metrics_path, start_step)
    if tensorboard:
      self._events = _EventWriter(workdir)

  def eta_seconds(self, step: int) -> float | None:
    """Time to `total_steps` at the mean rate since the first train record (so evals and saves are included)."""
    if self._first_train is None:
      return None
    first_step, first_time = self._first_train
    if step <= first_step:
      return None
    return (self.total_steps - step) * (time.monotonic() - first_time) / (step - first_step)

  def write(self, step: int, split: str, metrics: Mapping[str, Any]) -> None:
    """Records the metrics of one step for `split` ('train', 'eval', ...).

    Values may be Python, NumPy or JAX scalars. Non-finite values are written as null in metrics.jsonl (JSON has
    no NaN) and as they are to TensorBoard.

    Raises:
      ValueError: a metric is not a scalar or is named 'step' or 'split'.
    """
    if not self.is_main:
      return
    step = int(step)
    values = {}
    for name, value in metrics.items():
      if name in ("step", "split"):
        raise ValueError(f"A metric may not be named {name!r}: 'step' and 'split' are the record's keys.")
      values[name] = _python_scalar(name, value)
    finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    # wall_time (Unix seconds) lets tools measure a run's duration from its metrics file alone.
    line = json.dumps({"step": step, "split": split, **finite, "wall_time": round(time.time(), 3)})
    # Opened per record: each line reaches the OS whole and no handle outlives a crash.
    with files.open_file(self.metrics_path, "a") as f:
      f.write(line + "\n")
    if self._events is not None:
      self._events.write(step, {f"{split}/{k}": float(v) for k, v in values.items()})
    eta = None
    if split == "train":
      if self._first_train is None:
        self._first_train = (step, time.monotonic())
      eta = self.eta_seconds(step)
    if self._console is not None:
      self._console(format_line(step, split, values, total_steps=self.total_steps, eta_seconds=eta))

  def set_step_flops(self, flops: float | None, *, dtype: Any, device_kind: str | None = None) -> None:
    """Sets the per-device FLOPs of one train step (`step_flops`), so that `write_train` can report MFU.

    Args:
      flops: per-device FLOPs of the compiled train step, or None if unknown (MFU is then omitted).
      dtype: the compute dtype, which selects the device's peak rate.
      device_kind: the device kind, looked up in `PEAK_FLOPS`; by default `jax.devices()[0]`, whose peak is
        `device_peak_flops` (CPU devices get an estimate).
    """
    if device_kind is None:
      device = jax.devices()[0]
      device_kind = device.device_kind
      self._peak, source = flops_lib.device_peak_flops(device, dtype)
    else:
      self._peak, source = flops_lib.peak_flops(device_kind, dtype), "resnet_jax.flops.PEAK_FLOPS"
    self._flops = flops
    if self._console is None:
      return
    if flops is None:
      self._console("MFU not reported: XLA gave no FLOP count for the train step.")
    elif self._peak is None:
      self._console(f"Train step: {format_flops(flops)} per device. MFU not reported: no peak rate for "
                    f"{device_kind!r} in {flops_lib.dtype_name(dtype)} (add it to flops.PEAK_FLOPS).")
    else:
      how = f"; {source}" if source.startswith("estimate") else ""  # datasheet figures need no comment
      self._console(f"Train step: {format_flops(flops)} per device; peak {format_flops(self._peak)}/s "
                    f"({device_kind}, {flops_lib.dtype_name(dtype)}{how}).")

  def write_train(self, step: int, metrics: Mapping[str, Any], *, lr: float | None = None,
                  num_steps: int | None = None, images: int | None = None, seconds: float | None = None) -> None:
    """Records training metrics, adding the learning rate and the throughput of the last window of steps.

    Args:
      step: the number of steps completed.
      metrics: the window's metrics (e.g. loss and accuracy).
      lr: the learning rate of the last step, recorded as 'learning_rate'.
      num_steps: steps in the window; with `seconds` and `set_step_flops` it gives 'mfu'.
      images: images in the window (over all devices); with `seconds` it gives 'images_per_sec'.
      seconds: wall time of the window.
    """
    record = dict(metrics)
    if lr is not None:
      record["learning_rate"] = lr
    if seconds is not None and seconds > 0:
      if images is not None:
        record["images_per_sec"] = images / seconds
      if num_steps and self._flops and self._peak:
        record["mfu"] = self._flops * num_steps / seconds / self._peak
    self.write(step, "train", record)

  def write_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records evaluation metrics."""
    self.write(step, "eval", metrics)

  def maybe_profile(self, step: int, profile_steps: Sequence[int] | None, block_on: Any = None) -> None:
    """Traces steps `[start, stop)` given as `profile_steps = (start, stop)` (None: no trace) into workdir/profile.

    Call after each step with the number of steps completed; `block_on` (e.g. the train state) is waited for
    before the trace stops, so that it holds the traced steps' device work.
    """
    if profile_steps is None:
      return
    if self._profile is None:
      if len(profile_steps) != 2 or not 0 <= profile_steps[0] < profile_steps[1]:
        raise ValueError(f"profile_steps must be (start, stop) with 0 <= start < stop, got {profile_steps!r}.")
      start, stop = profile_steps
      self._profile = ProfileWindow(self.workdir, first_step=start, num_steps=stop - start, is_main=self.is_main)
    self._profile.step(step, block_on)

  def truncate_after(self, step: int) -> int:
    """Drops records with a step greater than `step` from metrics.jsonl; returns how many were dropped."""
    if not self.is_main:
      return 0
    return truncate_jsonl(self.metrics_path, step)

  def close(self) -> None:
    if self._profile is not None:
      self._profile.close()
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self) -> Reporter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ----------------------------------------------------------------------------------------------------------------
# Profiling
# ----------------------------------------------------------------------------------------------------------------


class ProfileWindow:
  """Traces a chosen range of train steps with the JAX profiler into `workdir/profile` (main process only).

  Call `step(s)` before running step `s`: tracing starts before step `first_step` and stops before step
  `first_step + num_steps`, after waiting for the traced steps' results. Call `close()` when training ends, in
  case it ends inside the window. Open the trace with TensorBoard's profile plugin or Perfetto.
  """

  def __init__(self, workdir: str, *, first_step: int, num_steps: int, is_main: bool):
    if num_steps < 0 or first_step < 0:
      raise ValueError(f"Profile first_step and num_steps must be non-negative, got {first_step}, {num_steps}.")
    self.logdir = os.path.join(workdir, PROFILE_DIR)
    self.first_step = first_step
    self.end_step = first_step + num_steps
    self.enabled = is_main and num_steps > 0
    self.active = False

  def step(self, step: int, block_on: Any = None) -> None:
    """Starts or stops the trace as `step` enters or leaves the window; `block_on` is waited for before stopping."""
    if not self.enabled:
      return
    if not self.active and self.first_step <= step < self.end_step:
      jax.profiler.start_trace(self.logdir)
      self.active = True
    elif self.active and step >= self.end_step:
      self.close(block_on)

  def close(self, block_on: Any = None) -> None:
    if self.active:
      jax.block_until_ready(block_on)
      jax.profiler.stop_trace()
      self.active = False
      # One trace per run: a later step() past the window must not start another.
      self.enabled = False


