"""What a run reports: metrics.jsonl, TensorBoard event files, console lines, the config, MFU and profiles.

Only the main process (JAX process 0) writes; on other processes every writer here is a no-op, so the engine can
call them unconditionally.

- `metrics.jsonl` holds one JSON object per line: `{"step": ..., "split": "train" | "eval", <metric>: ...}`. Each
  line is appended and flushed on its own, so a crash can at worst cut the last line short; `truncate_jsonl`
  rewrites the file atomically without the lines a resumed run will write again.
- TensorBoard scalars `<split>/<metric>` go to event files in the workdir. They are written with TensorFlow's
  summary ops, imported only when the first `Reporter` with TensorBoard enabled starts, and kept off accelerators.
- The workdir may be a local path or a URL that TensorFlow's file systems handle (gs://...); only URLs import
  TensorFlow for file access.
- Model FLOPs utilisation (MFU) is the FLOP rate of the compiled train step (XLA's cost analysis) over the peak
  rate of the device, from the `PEAK_FLOPS` table.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

METRICS_FILE = 'metrics.jsonl'
CONFIG_FILE = 'config.json'
PROFILE_DIR = 'profile'


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only for URLs such as gs://)
  return tf.io.gfile


def _is_url(path: str) -> bool:
  return '://' in path


def _makedirs(path: str) -> None:
  if _is_url(path):
    _gfile().makedirs(path)
  else:
    os.makedirs(path, exist_ok=True)


def _exists(path: str) -> bool:
  return _gfile().exists(path) if _is_url(path) else os.path.exists(path)


def _open(path: str, mode: str):
  return _gfile().GFile(path, mode) if _is_url(path) else open(path, mode)


def _atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers see either the old file or the complete new one.

  Atomic on POSIX file systems (os.replace); on object stores the final rename is a copy.
  """
  tmp = f'{path}.tmp{os.getpid()}'
  if _is_url(path):
    with _open(tmp, 'w') as f:
      f.write(text)
    _gfile().rename(tmp, path, overwrite=True)
    return
  with open(tmp, 'w') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_json(path: str, obj: Any) -> None:
  """Writes `obj` as indented JSON, atomically (a crash leaves the old file or the new one, never half)."""
  _atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + '\n')


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
  as_dict = config.to_dict() if hasattr(config, 'to_dict') else dict(config)
  _makedirs(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  # Anything JSON cannot hold (a dtype, a callable) is recorded by its string form rather than failing the run.
  _atomic_write_text(path, json.dumps(as_dict, indent=2, default=str) + '\n')
  return path


def load_config(workdir: str):
  """The ConfigDict a run in `workdir` was started with (from its config.json); JSON lists come back as tuples."""
  import ml_collections  # Not needed by the rest of this module (benchmarks run without it).

  path = os.path.join(workdir, CONFIG_FILE)
  if not _exists(path):
    raise FileNotFoundError(f'{path} does not exist: is {workdir!r} the --workdir of a training run?')
  with _open(path, 'r') as f:
    raw = json.load(f)

  def tuples(x):
    if isinstance(x, dict):
      return {k: tuples(v) for k, v in x.items()}
    return tuple(tuples(v) for v in x) if isinstance(x, list) else x

  return ml_collections.ConfigDict(tuples(raw))


def truncate_jsonl(path: str, step: int) -> int:
  """Drops the lines of a metrics file whose step is greater than `step`, by an atomic rewrite.

  Lines that do not parse (the cut-short last line of a crashed run) are dropped too. A missing file is left
  missing.

  Returns:
    The number of lines dropped.
  """
  if not _exists(path):
    return 0
  with _open(path, 'r') as f:
    lines = f.read().splitlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and isinstance(record.get('step'), int) and record['step'] <= step:
      kept.append(line)
  if len(kept) != len(lines):
    _atomic_write_text(path, ''.join(line + '\n' for line in kept))
  return len(lines) - len(kept)


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics file, in order."""
  with _open(path, 'r') as f:
    return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def _python_scalar(name: str, value: Any) -> int | float | bool:
  """Turns a metric (Python, NumPy or JAX scalar) into a Python number."""
  array = np.asarray(value)
  if array.size != 1:
    raise ValueError(f'Metric {name!r} must be a scalar, got shape {array.shape}.')
  return array.reshape(()).item()


# ----------------------------------------------------------------------------------------------------------------
# TensorBoard
# ----------------------------------------------------------------------------------------------------------------


class _EventWriter:
  """Scalars to TensorBoard event files through TensorFlow's summary ops.

  `tf.summary.scalar` lives in the tensorboard package, which TensorFlow no longer depends on; `tf.summary.write`
  with the 'scalars' plugin metadata produces the same events from TensorFlow alone.
  """

  def __init__(self, logdir: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top  (heavy, and only process 0 needs it)
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top
    try:
      # TensorFlow would otherwise reserve accelerator memory that JAX needs.
      tf.config.set_visible_devices([], 'GPU')
    except RuntimeError:
      pass  # TensorFlow already started; whoever started it chose its devices.
    self._tf = tf
    self._writer = tf.summary.create_file_writer(logdir)
    self._metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    tf = self._tf
    with tf.device('/cpu:0'), self._writer.as_default():
      for tag, value in scalars.items():
        tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=self._metadata)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


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
    return f'{days}d{hours:02d}h{minutes:02d}m'
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{secs:02d}s'
  return f'{secs}s'


def format_flops(flops: float) -> str:
  """'98.9 TFLOP', '3.1 GFLOP', ..."""
  for unit, scale in (('PFLOP', 1e15), ('TFLOP', 1e12), ('GFLOP', 1e9), ('MFLOP', 1e6)):
    if flops >= scale:
      return f'{flops / scale:.3g} {unit}'
  return f'{flops:.3g} FLOP'


def format_line(step: int, split: str, metrics: Mapping[str, Any], *, total_steps: int | None = None,
                eta_seconds: float | None = None) -> str:
  """One console line, e.g. `train step 120/1000  loss 0.5432  accuracy 0.8125  lr 0.1  812 img/s  ETA 3m04s`.

  The learning rate, images/s and MFU are recognised by their metric names 'learning_rate', 'images_per_sec' and
  'mfu' (a fraction); other metrics print as `name value`. Per-block metrics ('signal/...') are left to the
  metrics file and TensorBoard.
  """
  parts = [f'{split} step {step}/{total_steps}' if total_steps else f'{split} step {step}']
  for name, value in metrics.items():
    if value is None or '/' in name:
      continue
    if name == 'learning_rate':
      parts.append(f'lr {value:.4g}')
    elif name == 'images_per_sec':
      parts.append(f'{value:.1f} img/s')
    elif name == 'mfu':
      parts.append(f'MFU {value:.1%}')
    elif isinstance(value, float):
      parts.append(f'{name} {value:.4f}')
    else:
      parts.append(f'{name} {value}')
  if eta_seconds is not None:
    parts.append(f'ETA {format_duration(eta_seconds)}')
  return '  '.join(parts)


# ----------------------------------------------------------------------------------------------------------------
# Reporter
# ----------------------------------------------------------------------------------------------------------------


class Reporter:
  """Writes each logged step or evaluation to metrics.jsonl, TensorBoard and the console.

  On other processes than the main one it writes nothing (no files, no directories, no console lines).

  Usage:
    reporter = Reporter(workdir, total_steps=plan.total_steps, is_main=jax.process_index() == 0,
                        start_step=restored_step)
    reporter.set_step_flops(step_flops(compiled_train_step), dtype=config.dtype)
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
    self.metrics_path = os.path.join(workdir, METRICS_FILE)
    self._console = console if is_main else None
    self._events = None
    self._first_train: tuple[int, float] | None = None  # (step, time) of the first train record, for the ETA
    self._flops: float | None = None  # per device and step
    self._peak: float | None = None  # per device
    self._profile: ProfileWindow | None = None
    if not is_main:
      return
    _makedirs(workdir)
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
      if name in ('step', 'split'):
        raise ValueError(f"A metric may not be named {name!r}: 'step' and 'split' are the record's keys.")
      values[name] = _python_scalar(name, value)
    finite = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
    # wall_time (Unix seconds) lets tools measure a run's duration from its metrics file alone.
    line = json.dumps({'step': step, 'split': split, **finite, 'wall_time': round(time.time(), 3)})
    # Opened per record: each line reaches the OS whole and no handle outlives a crash.
    with _open(self.metrics_path, 'a') as f:
      f.write(line + '\n')
    if self._events is not None:
      self._events.write(step, {f'{split}/{k}': float(v) for k, v in values.items()})
    eta = None
    if split == 'train':
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
      self._peak, source = device_peak_flops(device, dtype)
    else:
      self._peak, source = peak_flops(device_kind, dtype), 'resnet_jax.reporting.PEAK_FLOPS'
    self._flops = flops
    if self._console is None:
      return
    if flops is None:
      self._console('MFU not reported: XLA gave no FLOP count for the train step.')
    elif self._peak is None:
      self._console(f'Train step: {format_flops(flops)} per device. MFU not reported: no peak rate for '
                    f'{device_kind!r} in {_dtype_name(dtype)} (add it to reporting.PEAK_FLOPS).')
    else:
      how = f'; {source}' if source.startswith('estimate') else ''  # datasheet figures need no comment
      self._console(f'Train step: {format_flops(flops)} per device; peak {format_flops(self._peak)}/s '
                    f'({device_kind}, {_dtype_name(dtype)}{how}).')

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
      record['learning_rate'] = lr
    if seconds is not None and seconds > 0:
      if images is not None:
        record['images_per_sec'] = images / seconds
      if num_steps and self._flops and self._peak:
        record['mfu'] = self._flops * num_steps / seconds / self._peak
    self.write(step, 'train', record)

  def write_eval(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records evaluation metrics."""
    self.write(step, 'eval', metrics)

  def maybe_profile(self, step: int, profile_steps: Sequence[int] | None, block_on: Any = None) -> None:
    """Traces steps `[start, stop)` given as `profile_steps = (start, stop)` (None: no trace) into workdir/profile.

    Call after each step with the number of steps completed; `block_on` (e.g. the train state) is waited for
    before the trace stops, so that it holds the traced steps' device work.
    """
    if profile_steps is None:
      return
    if self._profile is None:
      if len(profile_steps) != 2 or not 0 <= profile_steps[0] < profile_steps[1]:
        raise ValueError(f'profile_steps must be (start, stop) with 0 <= start < stop, got {profile_steps!r}.')
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
# Model FLOPs utilisation
# ----------------------------------------------------------------------------------------------------------------

# Dense (no sparsity) peak FLOP/s of one JAX device, from the vendors' datasheets, by `device.device_kind` and
# compute dtype. Datasheet peaks are the usual MFU denominator; they are above what a matmul reaches in practice,
# so MFU here reads lower than against a measured rate. For NVIDIA Ampere and Hopper the float32 entry is the
# TF32 tensor-core rate, which XLA may use for float32 matmuls and convolutions at JAX's default precision. TPU
# float32 is left out: its rate depends on the precision setting (the number of bfloat16 passes). On TPU v2 and
# v3 each chip has two JAX devices (cores); from v4 on one device is one chip. Unknown kinds report no MFU.
_T = 1e12
PEAK_FLOPS: dict[str, dict[str, float]] = {
    'NVIDIA H200': {'bfloat16': 989 * _T, 'float16': 989 * _T, 'float32': 495 * _T},
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989 * _T, 'float16': 989 * _T, 'float32': 495 * _T},
    'NVIDIA H100 PCIe': {'bfloat16': 756 * _T, 'float16': 756 * _T, 'float32': 378 * _T},
    'NVIDIA A100-SXM4-80GB': {'bfloat16': 312 * _T, 'float16': 312 * _T, 'float32': 156 * _T},
    'NVIDIA A100-SXM4-40GB': {'bfloat16': 312 * _T, 'float16': 312 * _T, 'float32': 156 * _T},
    'NVIDIA A100-PCIE-40GB': {'bfloat16': 312 * _T, 'float16': 312 * _T, 'float32': 156 * _T},
    'NVIDIA A100 80GB PCIe': {'bfloat16': 312 * _T, 'float16': 312 * _T, 'float32': 156 * _T},
    # V100 has no bfloat16 tensor cores; float16 is its tensor-core rate.
    'Tesla V100-SXM2-16GB': {'float16': 125 * _T, 'float32': 15.7 * _T},
    'Tesla V100-SXM2-32GB': {'float16': 125 * _T, 'float32': 15.7 * _T},
    'Tesla V100-PCIE-16GB': {'float16': 112 * _T, 'float32': 14 * _T},
    'Tesla V100-PCIE-32GB': {'float16': 112 * _T, 'float32': 14 * _T},
    'TPU v2': {'bfloat16': 22.5 * _T},
    'TPU v3': {'bfloat16': 61.5 * _T},
    'TPU v4': {'bfloat16': 275 * _T},
    'TPU v5 lite': {'bfloat16': 197 * _T},  # v5e
    'TPU v5': {'bfloat16': 459 * _T},  # v5p
    'TPU v5p': {'bfloat16': 459 * _T},
    'TPU v6 lite': {'bfloat16': 918 * _T},  # v6e (Trillium)
}


_DTYPE_ALIASES = {'bf16': 'bfloat16', 'fp16': 'float16', 'fp32': 'float32'}


def _dtype_name(dtype: Any) -> str:
  if isinstance(dtype, str):
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
  return jnp.dtype(dtype).name


def peak_flops(device_kind: str, dtype: Any) -> float | None:
  """Peak FLOP/s of one device of `device_kind` computing in `dtype`, or None where unknown (e.g. CPUs)."""
  return PEAK_FLOPS.get(device_kind, {}).get(_dtype_name(dtype))


def device_peak_flops(device: Any, dtype: Any) -> tuple[float | None, str]:
  """Peak FLOP/s of one JAX device computing in `dtype`, and where the figure comes from.

  Accelerators: the datasheet table `PEAK_FLOPS`. CPU devices in float32: `cpu_peak_flops`'s estimate for the
  host, shared by the host's CPU devices (simulated devices split the same cores).
  """
  peak = peak_flops(device.device_kind, dtype)
  if peak:
    return peak, f'resnet_jax.reporting.PEAK_FLOPS[{device.device_kind!r}][{_dtype_name(dtype)!r}] (datasheet, dense)'
  if device.platform == 'cpu' and _dtype_name(dtype) == 'float32':
    total, how = cpu_peak_flops()
    return (total / jax.local_device_count('cpu') if total else None), how
  return None, f'unknown: add {device.device_kind!r} in {_dtype_name(dtype)} to resnet_jax.reporting.PEAK_FLOPS'


def cpuinfo() -> dict[str, str]:
  """The first processor's fields from /proc/cpuinfo ({} where there is none)."""
  try:
    with open('/proc/cpuinfo') as f:
      text = f.read().split('\n\n')[0]
  except OSError:
    return {}
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(':')
    fields[key.strip()] = value.strip()
  return fields


def cpu_peak_flops(info: Mapping[str, str] | None = None, cores: int | None = None) -> tuple[float | None, str]:
  """Estimated float32 peak FLOP/s of this host's CPUs, and how it was estimated.

  cores x clock x FLOPs per cycle per core, where a core issues two fused multiply-adds per cycle on vectors of
  its widest full-rate unit: 512 bits on Intel AVX-512 and AMD Zen 5 (64 FLOPs), 256 bits on AVX2 and Zen 4,
  whose AVX-512 runs as two 256-bit halves (32 FLOPs); 8 without FMA. None where the clock is unknown.
  """
  info = cpuinfo() if info is None else info
  if cores is None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
  try:
    mhz = float(info.get('cpu MHz', ''))
  except ValueError:
    return None, 'unknown: /proc/cpuinfo has no clock'
  cpu_flags = set(info.get('flags', '').split())
  amd = info.get('vendor_id') == 'AuthenticAMD'
  if 'avx512f' in cpu_flags and (not amd or int(info.get('cpu family', '0')) >= 26):
    per_cycle = 64
  elif 'fma' in cpu_flags:
    per_cycle = 32
  else:
    per_cycle = 8
  return (cores * mhz * 1e6 * per_cycle,
          f'estimate: {cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle ({info.get("model name", "?")})')


def step_flops(compiled: Any) -> float | None:
  """FLOPs of one call of a compiled step on one device, from XLA's cost analysis; None where unavailable.

  For a computation partitioned over several devices (jit with shardings, shard_map, pmap) XLA analyses the
  per-device program, so this is the work of one device. A multiply-add counts as two FLOPs.

  Args:
    compiled: the result of `jax.jit(f).lower(*args).compile()`.
  """
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it; MFU is then omitted)
    return None
  # Older JAX versions returned one dict per program in a list.
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  flops = analysis.get('flops') if isinstance(analysis, Mapping) else None
  return float(flops) if flops is not None and flops > 0 else None


def mfu(flops_per_step: float | None, steps_per_sec: float, device_kind: str, dtype: Any) -> float | None:
  """Model FLOPs utilisation: achieved FLOP/s of one device over its peak (a fraction), or None if unknown.

  Args:
    flops_per_step: per-device FLOPs of one train step (`step_flops`).
    steps_per_sec: measured train steps per second.
    device_kind: `jax.devices()[0].device_kind`.
    dtype: the compute dtype ('bfloat16', 'float32', ...).
  """
  peak = peak_flops(device_kind, dtype)
  if not flops_per_step or not peak:
    return None
  return flops_per_step * steps_per_sec / peak


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
      raise ValueError(f'Profile first_step and num_steps must be non-negative, got {first_step}, {num_steps}.')
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


# -- Console --------------------------------------------------------------------------------------------------------

# Libraries whose INFO lines (every checkpoint step, every dataset lookup) bury a script's own output.
CHATTY_LIBRARIES = ("orbax", "tensorflow_datasets", "jax")


class _QuietLibraries(logging.Filter):
  """Drops INFO and DEBUG records emitted from files of the `CHATTY_LIBRARIES` packages."""

  def __init__(self):
    super().__init__()
    self.prefixes = tuple(os.path.join(location, "") for name in CHATTY_LIBRARIES
                          for location in _package_locations(name))

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not record.pathname.startswith(self.prefixes)


def _package_locations(name: str) -> list[str]:
  spec = importlib.util.find_spec(name)
  return list(spec.submodule_search_locations or []) if spec else []


def quiet_library_logs() -> None:
  """Keeps the INFO lines of Orbax, TFDS and JAX off absl's console handler (warnings and errors still show)."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.get_absl_handler().addFilter(_QuietLibraries())
