"""The benchmark's workload and timing protocol: the trainer's own step on synthetic on-device data, compiled ahead
of time and timed in windows, with the device facts (FLOPs, peak, memory, versions) that go beside the figures.

A workload is a config: configs/benchmark.py with the model, batch, dtype, image size and class count set, built by
the trainer's own `train.build` (models, optimizer, state) and stepped by the trainer's own mapped `train_step`.
Imports no TensorFlow or TFDS (the accelerator images have neither); it needs ml_collections for the config.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import time
from typing import Any

from resnet_jax import files
from resnet_jax import flops as flops_lib

CONFIG = "configs/benchmark.py"  # What every workload starts from (its optimizer is the peers').


# Global batch when --batch is not given: what fits and saturates one device of each platform, times devices.
DEFAULT_BATCH = {"cpu": {"imagenet": 8, "cifar": 128}, "gpu": {"imagenet": 256, "cifar": 512},
                 "tpu": {"imagenet": 256, "cifar": 512}}


# ----------------------------------------------------------------------------------------------------------------
# The workload
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Workload:
  """What one measurement trains: everything that changes the compiled step."""
  model: str
  batch: int
  dtype: str
  image_size: int
  num_classes: int
  variant: str | None = None
  sync_batch_stats: bool = True

  @property
  def family(self) -> str:
    return "cifar" if self.model.startswith("cifar_") else "imagenet"

  def config_overrides(self) -> list[str]:
    """The `--config.key=value` flags that turn configs/benchmark.py into this workload."""
    out = [f"--config.model.name={self.model}", f"--config.batch_size={self.batch}", f"--config.dtype={self.dtype}",
           f"--config.data.image_size={self.image_size}", f"--config.data.num_classes={self.num_classes}",
           f"--config.sync_batch_stats={self.sync_batch_stats}"]
    return out + ([f"--config.model.variant={self.variant}"] if self.variant else [])

  def config(self):
    """This workload as a training config (ml_collections), resolved and validated like any run's."""
    from resnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
    return config_lib.resolve(os.path.join(files.REPO_ROOT, CONFIG), self.config_overrides())

  def flags(self) -> list[str]:
    """Command-line flags that reproduce this workload."""
    out = [f"--model={self.model}", f"--batch={self.batch}", f"--dtype={self.dtype}",
           f"--image_size={self.image_size}", f"--num_classes={self.num_classes}",
           f"--sync_batch_stats={self.sync_batch_stats}"]
    return out + ([f"--variant={self.variant}"] if self.variant else [])


def resolve_workload(model: str, *, platform_name: str, device_count: int, batch: int | None = None,
                     dtype: str = "bfloat16", image_size: int | None = None, num_classes: int | None = None,
                     variant: str | None = None, sync_batch_stats: bool = True) -> Workload:
  """Fills the defaults that depend on the model family and the platform."""
  family = "cifar" if model.startswith("cifar_") else "imagenet"
  if batch is None:
    per_platform = DEFAULT_BATCH.get(platform_name, DEFAULT_BATCH["gpu"])[family]
    batch = per_platform if platform_name == "cpu" else per_platform * device_count
  if batch < 1:
    raise ValueError(f"--batch must be positive, got {batch}")
  if image_size is None:
    image_size = 32 if family == "cifar" else 224
  if num_classes is None:
    num_classes = 10 if family == "cifar" else 1000
  return Workload(model, batch, dtype, image_size, num_classes, variant, sync_batch_stats)


def timing_plan(steps: int, windows: int) -> tuple[int, int]:
  """(windows, steps per window) covering at most `steps` timed steps; raises on impossible requests."""
  if steps < 1 or windows < 1:
    raise ValueError(f"--steps ({steps}) and --windows ({windows}) must be at least 1")
  windows = min(windows, steps)
  return windows, steps // windows


# ----------------------------------------------------------------------------------------------------------------
# Our step
# ----------------------------------------------------------------------------------------------------------------
def _import_engine():
  """The package modules the step needs, with a clear message if the engine pulls in a missing dependency."""
  try:
    from resnet_jax import parallel, train  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"the benchmark times resnet_jax.train.train_step, but importing the engine failed: {e}. The engine "
        "must import only JAX-side packages at module level (no TensorFlow or TFDS), since the accelerator images "
        "do not have them.") from e
  return parallel, train


def build_step(workload: Workload, seed: int = 0, *, abstract: bool = False):
  """(step function, state, batch): the trainer's mapped step (`train.make_train_fn` of `train.build` of the
  workload's config), its initial state and a synthetic batch (`data.synthetic`), placed on the devices.

  With `abstract`, the state and batch are only shapes, dtypes and shardings (enough to compile the step): the
  compile-only relaunch then spends its time on the step alone.
  """
  import jax  # pylint: disable=g-import-not-at-top
  parallel, train = _import_engine()
  from resnet_jax import distributed  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import synthetic  # pylint: disable=g-import-not-at-top

  config = workload.config()
  distributed.validate_topology(config, jax.process_count(), jax.device_count())
  strategy = parallel.strategy(config.parallelism, parallel.data_mesh())
  info = synthetic.info(config.data)
  parts = train.build(config, info)
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
  make_state = jax.jit(lambda rng: parts.make_state(train.init_variables(parts.eval_model, rng, info.image_shape)),
                       out_shardings=strategy.replicated)
  make_batch = synthetic.batch_fn(config.batch_size, info.image_shape, info.num_classes, strategy.batch_sharding)
  place = jax.eval_shape if abstract else _run_once
  state, batch = place(make_state, init_rng), place(make_batch, jax.random.key(seed), 0)
  return train.make_train_fn(config, parts, strategy, dropout_rng), state, batch


def _run_once(fn, *args):
  """Calls jitted `fn`, compiled without XLA's backend optimisations on CPU, where they make the one-off
  initialisation compile many times slower (13 s instead of 2 s for a CIFAR ResNet-20) to save milliseconds."""
  import jax  # pylint: disable=g-import-not-at-top
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}
  return fn.lower(*args).compile(compiler_options=options)(*args)


def compile_step(step, state, batch) -> tuple[Any, dict]:
  """Compiles ahead of time; returns the executable and the seconds spent tracing+lowering and compiling."""
  start = time.perf_counter()
  lowered = step.lower(state, batch)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  done = time.perf_counter()
  return compiled, {"lower_s": lowered_at - start, "compile_s": done - lowered_at, "total_s": done - start}


def time_step(compiled, state, batch, *, warmup: int, windows: int, window: int) -> tuple[dict, Any]:
  """Runs the timing protocol (see benchmarks/peers/harness.py); returns the timings and the last metrics."""
  import jax  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  state, sums = compiled(state, batch)
  jax.block_until_ready(state)
  first = time.perf_counter() - start
  for _ in range(warmup):
    state, sums = compiled(state, batch)
  jax.block_until_ready(state)
  seconds, cpu_seconds = [], []
  for _ in range(windows):
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(window):
      # The state is donated: each step writes its outputs over the previous step's buffers.
      state, sums = compiled(state, batch)
    jax.block_until_ready(state)
    seconds.append(time.perf_counter() - start)
    cpu_seconds.append(time.process_time() - cpu_start)
  return {"first_step_s": first, "window_seconds": seconds, "window_cpu_seconds": cpu_seconds,
          "window_steps": window}, sums


def check_finite(sums) -> None:
  """Raises if the step produced non-finite metrics (a benchmark of a broken step is meaningless)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  for leaf in jax.tree.leaves(jax.device_get(sums)):
    if not np.all(np.isfinite(np.asarray(leaf, np.float64))):
      raise FloatingPointError(f"the benchmarked step produced non-finite metrics: {jax.device_get(sums)}")


# ----------------------------------------------------------------------------------------------------------------
# Device facts: peak FLOP/s, memory, versions
# ----------------------------------------------------------------------------------------------------------------
def memory_report(compiled, device) -> dict:
  """Peak device memory where the backend tracks it, and the compiled step's buffer sizes."""
  out: dict[str, Any] = {}
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats:
    out["peak_bytes_in_use"] = stats.get("peak_bytes_in_use")
    out["bytes_limit"] = stats.get("bytes_limit")
  else:
    out["peak_bytes_in_use"] = None  # The CPU backend keeps no allocator statistics.
  try:
    analysis = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    analysis = None
  for name in ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes",
               "generated_code_size_in_bytes"):
    value = getattr(analysis, name, None)
    if value is not None:
      out[f"compiled_{name}"] = int(value)
  return out


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def versions(device) -> dict:
  out = {p: _version(p) for p in ("jax", "jaxlib", "flax", "optax", "numpy")}
  out["python"] = platform.python_version()
  out["backend"] = getattr(getattr(device, "client", None), "platform_version", None)
  return out


def device_slug(device) -> str:
  """A file-name-friendly device name: 'cpu', 'nvidia-h200', 'tpu-v5-lite'."""
  kind = device.device_kind if device.platform != "cpu" else "cpu"
  return "".join(c if c.isalnum() else "-" for c in kind.lower()).strip("-")


# ----------------------------------------------------------------------------------------------------------------
# The whole measurement
# ----------------------------------------------------------------------------------------------------------------
def measure(workload: Workload, *, steps: int, windows: int, warmup: int, cache_dir: str) -> dict:
  """Compiles and times our step; returns the JSON-ready result (without peers or the relaunch)."""
  import jax  # pylint: disable=g-import-not-at-top
  _, train = _import_engine()

  train.enable_compilation_cache(cache_dir)
  device = jax.local_devices()[0]
  windows, window = timing_plan(steps, windows)
  load_start = os.getloadavg()
  step, state, batch = build_step(workload)
  compiled, compile_times = compile_step(step, state, batch)
  timing, sums = time_step(compiled, state, batch, warmup=warmup, windows=windows, window=window)
  check_finite(sums)

  per_window = [window * workload.batch / s for s in timing["window_seconds"]]
  images_per_sec = statistics.median(per_window)
  steps_per_sec = images_per_sec / workload.batch
  flops = flops_lib.step_flops(compiled)  # one device's share of one step
  peak, peak_source = flops_lib.device_peak_flops(device, workload.dtype)
  mfu = flops * steps_per_sec / peak if flops and peak else None
  return {
      # The config (file and overrides) says the rest: optimizer, parallelism, schedule.
      "workload": {**dataclasses.asdict(workload), "config": [CONFIG, *workload.config_overrides()],
                   "data": "synthetic, on device"},
      "device": {"platform": device.platform, "kind": device.device_kind, "slug": device_slug(device),
                 "count": jax.device_count(),
                 "processes": jax.process_count(),
                 "host_cpu": flops_lib.cpuinfo().get("model name"), "host_cores": os.cpu_count()},
      "images_per_sec": images_per_sec,
      "window_images_per_sec": per_window,
      "step_time_s": 1.0 / steps_per_sec,
      "first_step_s": timing["first_step_s"],
      # Host CPU seconds this process used per step (all threads): on a shared CPU machine, less sensitive to
      # other people's load than wall time. On accelerators it is the host's dispatch work only.
      "cpu_seconds_per_step": statistics.median(timing["window_cpu_seconds"]) / window,
      "timing": {"warmup_steps": warmup, "windows": windows, "steps_per_window": window},
      "compile": {"cold": compile_times, "cache_dir": cache_dir},
      "flops_per_step_per_device": flops,
      "flops_per_image": flops * jax.device_count() / workload.batch if flops else None,
      "peak_flops_per_device": peak,
      "peak_flops_source": peak_source,
      "mfu": mfu,
      "memory": memory_report(compiled, device),
      "versions": versions(device),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "loadavg": {"start": list(load_start), "end": list(os.getloadavg())},
  }


