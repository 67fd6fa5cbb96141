"""What every peer shares: its command line, the timing protocol and the one JSON result it writes.

A peer is a standalone script run in its own process by `experiments.benchmark`, so that its framework's threads,
allocator and compiler caches never share a process with JAX. It imports nothing from `resnet_jax`.

Protocol (the same as the JAX side, so ratios compare like with like):
  * the first step is timed on its own and reported as `first_step_s` (it includes any compilation);
  * `--warmup` more steps run untimed;
  * `--windows` windows of `--window` steps are timed, each ending with one device synchronisation;
  * images/s is the median over windows (robust to a neighbour's burst of load on a shared machine);
  * the process's CPU seconds per step (all threads) are reported too: on a shared CPU they vary less with the
    neighbours' load than wall time does.

The result file holds one JSON object with `status` 'ok', 'skipped' (a requirement is missing: `reason` says
which) or 'failed' (written by the caller when the process dies without a result).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Sequence


def parser(description: str) -> argparse.ArgumentParser:
  """The flags every peer accepts (peers may add their own)."""
  p = argparse.ArgumentParser(description=description)
  p.add_argument("--batch", type=int, required=True, help="Images per training step.")
  p.add_argument("--image_size", type=int, required=True, help="Square input side in pixels.")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="Compute dtype.")
  p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="Where the step runs.")
  p.add_argument("--warmup", type=int, default=2, help="Untimed steps after the first one.")
  p.add_argument("--windows", type=int, default=5, help="Timed windows; images/s is their median.")
  p.add_argument("--window", type=int, default=2, help="Steps per timed window.")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", required=True, help="Path of the JSON result to write.")
  return p


def missing_modules(modules: Sequence[str]) -> list[str]:
  """The names in `modules` that cannot be imported here (checked without importing them)."""
  return [m for m in modules if importlib.util.find_spec(m) is None]


def write(path: str, result: dict) -> None:
  """Writes `result` atomically, so a reader never sees half a file."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def skip(path: str, peer: str, reason: str) -> None:
  """Records that `peer` cannot run here and why, then exits successfully (a skip is not an error)."""
  write(path, {"peer": peer, "status": "skipped", "reason": reason})
  print(f"{peer}: skipped: {reason}")
  sys.exit(0)


def time_steps(step: Callable[[], None], sync: Callable[[], None], *, warmup: int, windows: int,
               window: int) -> dict:
  """Runs the protocol above on `step` (which must not wait for the device) and `sync` (which must)."""
  if windows < 1 or window < 1:
    raise ValueError(f"windows={windows} and window={window} must both be at least 1")
  start = time.perf_counter()
  step()
  sync()
  first = time.perf_counter() - start
  for _ in range(warmup):
    step()
  sync()
  seconds, cpu_seconds = [], []
  for _ in range(windows):
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(window):
      step()
    sync()
    seconds.append(time.perf_counter() - start)
    cpu_seconds.append(time.process_time() - cpu_start)
  return {"first_step_s": first, "window_seconds": seconds, "window_cpu_seconds": cpu_seconds,
          "window_steps": window}


def summarize(timing: dict, batch: int) -> dict:
  """images/s per window, their median, and the median step time."""
  per_window = [timing["window_steps"] * batch / s for s in timing["window_seconds"]]
  median = statistics.median(per_window)
  out = {
      "images_per_sec": median,
      "window_images_per_sec": per_window,
      "step_time_s": batch / median,
      "first_step_s": timing["first_step_s"],
  }
  if timing.get("window_cpu_seconds"):
    # Process CPU seconds (all threads) per step: less sensitive than wall time to a shared machine's load.
    out["cpu_seconds_per_step"] = statistics.median(timing["window_cpu_seconds"]) / timing["window_steps"]
  return out


def environment() -> dict:
  """Facts that make a number reproducible: host, Python, load."""
  return {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
          "loadavg": list(os.getloadavg())}
