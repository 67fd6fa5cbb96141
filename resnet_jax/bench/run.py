"""The whole benchmark: our step measured in a child process, the warm-cache relaunch in another, each peer in its own,
round after round, combined into one result with medians and our ratio to each peer.

`experiments/benchmark.py` is its command line; its child processes are that script with --role=measure and
--role=compile. See that script for what is reported.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from resnet_jax import files, xla_flags
from resnet_jax.bench import peers as peers_lib
from resnet_jax.bench.workload import Workload, timing_plan


# ----------------------------------------------------------------------------------------------------------------
# Compilation cache and the relaunch
# ----------------------------------------------------------------------------------------------------------------
def run_child(role: str, child_flags: Sequence[str], timeout: float) -> dict:
  """Runs this script with --role=`role` in a fresh process and returns the JSON it writes.

  The child inherits this process's environment, including the merged $XLA_FLAGS (part of the cache key), and
  not its command line: JAX also hashes command-line arguments that start with "--xla" into cache keys.
  """
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, f"{role}.json")
    cmd = [sys.executable, "-m", "experiments.benchmark", f"--role={role}", f"--out={out}", *child_flags]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=files.REPO_ROOT)
    wall = time.perf_counter() - start
    if proc.returncode or not os.path.exists(out):
      raise RuntimeError(f"`{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    with open(out) as f:
      result = json.load(f)
  result["process_wall_s"] = wall  # interpreter start, imports, set-up and the work itself
  return result


def probe_platform(timeout: float = 300) -> str:
  """JAX's default platform ('cpu', 'gpu', 'tpu'), found in a throw-away process so that this one never holds an
  accelerator (nor fixes its XLA flags before they are chosen)."""
  code = "import jax; print(jax.default_backend())"
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                        cwd=files.REPO_ROOT)
  if proc.returncode:
    raise RuntimeError(f"could not start JAX to find the platform: {proc.stderr[-3000:]}")
  return proc.stdout.split()[-1]


def xla_flags_for(platform_name: str, use_platform_flags: bool, extra_flags: str = "") -> str:
  """The XLA flags a run adds on `platform_name`: the trainer's (resnet_jax/xla_flags.py, if wanted), then the
  user's own."""
  chosen = xla_flags.PLATFORM_XLA_FLAGS.get(platform_name, ()) if use_platform_flags else ()
  return " ".join(f for f in (*chosen, extra_flags) if f)


def configure_xla(extra_flags: str) -> str:
  """Appends `extra_flags` to $XLA_FLAGS (read when the backend starts, so call this before touching a device)."""
  merged = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), extra_flags) if f).strip()
  if merged:
    os.environ["XLA_FLAGS"] = merged
  return merged


# ----------------------------------------------------------------------------------------------------------------
# Rounds and their summary
# ----------------------------------------------------------------------------------------------------------------
def combine_rounds(rounds: Sequence[dict]) -> dict:
  """One result from rounds of {'ours': measure result, 'peers': {name: peer result}}.

  Throughputs are medians over rounds. A peer's `ratio` is the median of the per-round ratios of our images/s to
  its images/s, so each ratio compares two measurements taken minutes apart; `cpu_time_ratio` is the same from CPU
  seconds per step, a cross-check on a loaded CPU machine (runtimes that spin while waiting, like OpenMP and Eigen,
  charge the spinning to the process, which favours whichever side spins less).
  """
  if not rounds:
    raise ValueError("no rounds to combine")
  ours = [r["ours"] for r in rounds]
  result = json.loads(json.dumps(ours[0]))  # a deep copy of the first round's full record
  images_per_sec = statistics.median(o["images_per_sec"] for o in ours)
  result["images_per_sec"] = images_per_sec
  result["step_time_s"] = result["workload"]["batch"] / images_per_sec
  result["cpu_seconds_per_step"] = statistics.median(o["cpu_seconds_per_step"] for o in ours)
  if result.get("mfu"):
    result["mfu"] *= images_per_sec / ours[0]["images_per_sec"]
  result["rounds"] = [{"images_per_sec": r["ours"]["images_per_sec"],
                       "cpu_seconds_per_step": r["ours"]["cpu_seconds_per_step"],
                       "loadavg_start": r["ours"]["loadavg"]["start"],
                       "peers": {n: p.get("images_per_sec") for n, p in r["peers"].items()}} for r in rounds]
  result["peers"] = {}
  for name in rounds[0]["peers"]:
    runs = [(r["ours"], r["peers"][name]) for r in rounds]
    ok = [(o, p) for o, p in runs if p.get("status") == "ok" and p.get("images_per_sec")]
    if not ok:
      result["peers"][name] = runs[0][1]
      continue
    peer = json.loads(json.dumps(ok[0][1]))
    peer["images_per_sec"] = statistics.median(p["images_per_sec"] for _, p in ok)
    peer["step_time_s"] = result["workload"]["batch"] / peer["images_per_sec"]
    peer["ratio"] = statistics.median(o["images_per_sec"] / p["images_per_sec"] for o, p in ok)
    cpu = [(o, p) for o, p in ok if p.get("cpu_seconds_per_step") and o.get("cpu_seconds_per_step")]
    if cpu:
      peer["cpu_seconds_per_step"] = statistics.median(p["cpu_seconds_per_step"] for _, p in cpu)
      peer["cpu_time_ratio"] = statistics.median(p["cpu_seconds_per_step"] / o["cpu_seconds_per_step"]
                                                 for o, p in cpu)
    peer["rounds_ok"] = len(ok)
    result["peers"][name] = peer
  return result


def summary(result: dict) -> str:
  """A few lines for the console."""
  w, c = result["workload"], result["compile"]
  mfu = f"{100 * result['mfu']:.1f} %" if result.get("mfu") else "n/a"
  lines = [
      f"{w['model']} batch {w['batch']} {w['dtype']} {w['image_size']}px on {result['device']['count']} x "
      f"{result['device']['kind']}",
      f"  ours: {result['images_per_sec']:.2f} images/s  step {1e3 * result['step_time_s']:.1f} ms  MFU {mfu}  "
      f"(CPU {result['cpu_seconds_per_step']:.2f} s/step, load {result['loadavg']['start'][0]:.1f})",
      f"  compile: cold {c['cold']['total_s']:.2f} s (trace+lower {c['cold']['lower_s']:.2f} s)" +
      (f", warm relaunch {c['warm']['total_s']:.2f} s (trace+lower {c['warm']['lower_s']:.2f} s)"
       if "warm" in c else ""),
  ]
  if len(result.get("rounds", ())) > 1:
    per_round = ", ".join(f"{r['images_per_sec']:.2f}" for r in result["rounds"])
    lines.append(f"  {len(result['rounds'])} rounds, medians below; ours per round: {per_round} images/s")
  for name, peer in result.get("peers", {}).items():
    if peer.get("status") == "ok":
      cpu = (f"  (CPU {peer['cpu_seconds_per_step']:.2f} s/step, ratio {peer['cpu_time_ratio']:.2f}x)"
             if "cpu_time_ratio" in peer else "")
      lines.append(f"  {name}: {peer['images_per_sec']:.2f} images/s  ours/peer = {peer['ratio']:.2f}x{cpu}")
    else:
      lines.append(f"  {name}: {peer.get('status')}: {peer.get('reason')}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The whole benchmark, and its child processes
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Options:
  """Everything a benchmark invocation is asked for (the flags of experiments/benchmark.py)."""
  model: str = "resnet50"
  batch: int | None = None
  dtype: str = "bfloat16"
  image_size: int | None = None
  num_classes: int | None = None
  variant: str | None = None
  sync_batch_stats: bool = True
  steps: int = 20
  windows: int = 5
  warmup: int = 3
  peers: tuple[str, ...] = ()
  rounds: int = 1
  peer_timeout: float = 3600
  out: str | None = None
  compilation_cache_dir: str | None = None
  warm_compile: bool = True
  extra_xla_flags: str = ""
  platform_xla_flags: bool = True

  def measure_flags(self) -> list[str]:
    """The workload and timing flags, forwarded to the measuring child."""
    names = ("model", "batch", "dtype", "image_size", "num_classes", "variant", "sync_batch_stats", "steps",
             "windows", "warmup")
    return [f"--{n}={getattr(self, n)}" for n in names if getattr(self, n) is not None]


def child(role: str, options: Options) -> None:
  """The work of a child process: 'measure' (our step) or 'compile' (the warm-cache relaunch); writes options.out."""
  from resnet_jax.bench import workload as workload_lib

  configure_xla(options.extra_xla_flags)  # The parent passes its choice through $XLA_FLAGS, not this option.
  import jax
  workload = workload_lib.resolve_workload(
      options.model, platform_name=jax.default_backend(), device_count=jax.device_count(), batch=options.batch,
      dtype=options.dtype, image_size=options.image_size, num_classes=options.num_classes, variant=options.variant,
      sync_batch_stats=options.sync_batch_stats)
  if role == "measure":
    result = workload_lib.measure(workload, steps=options.steps, windows=options.windows, warmup=options.warmup,
                                  cache_dir=options.compilation_cache_dir)
  else:
    from resnet_jax import train
    train.enable_compilation_cache(options.compilation_cache_dir)
    result = {"compile": workload_lib.compile_step(*workload_lib.build_step(workload, abstract=True))[1]}
  files.write_json(options.out, result, indent=1)


def run(options: Options, argv: Sequence[str]) -> dict:
  """Our step and every peer, each in a process of its own, one after the other (no process holds accelerator memory
  or threads while another is measured: JAX reserves most of a GPU's memory); returns the combined result and
  writes it to options.out (default: benchmarks/<device>_<model>_b<batch>_<dtype>.json).

  Raises:
    ValueError: an unknown peer or a non-positive round count.
  """
  peers_lib.check_peer_names(options.peers)
  if options.rounds < 1:
    raise ValueError(f"--rounds must be at least 1, got {options.rounds}")
  windows, window = timing_plan(options.steps, options.windows)
  platform_name = probe_platform()
  configure_xla(xla_flags_for(platform_name, options.platform_xla_flags, options.extra_xla_flags))
  fresh_cache = options.compilation_cache_dir is None
  cache_dir = tempfile.mkdtemp(prefix="resnet_jax_xla_cache_") if fresh_cache else options.compilation_cache_dir
  rounds, warm = [], None
  for index in range(options.rounds):
    ours = run_child("measure", [*options.measure_flags(), f"--compilation_cache_dir={cache_dir}"],
                     timeout=options.peer_timeout)
    workload = Workload(**{f.name: ours["workload"][f.name] for f in dataclasses.fields(Workload)})
    if index == 0 and options.warm_compile:
      warm = run_child("compile", [*workload.flags(), f"--compilation_cache_dir={cache_dir}"],
                       timeout=options.peer_timeout)
    peers = {name: peers_lib.run_peer(name, workload, platform_name=platform_name, warmup=options.warmup,
                                      windows=windows, window=window, timeout=options.peer_timeout)
             for name in options.peers}
    rounds.append({"ours": ours, "peers": peers})

  result = combine_rounds(rounds)  # the first round's record, with medians over rounds
  result["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  result["command"] = shlex.join(["python", "-m", "experiments.benchmark", *argv])
  result["timing"]["measure_process_wall_s"] = result.pop("process_wall_s")
  result["compile"]["cache_was_empty"] = fresh_cache
  if warm:
    result["compile"]["warm"] = {**warm["compile"], "process_wall_s": warm["process_wall_s"]}
  result["loadavg"]["after_peers"] = list(os.getloadavg())
  if fresh_cache:
    shutil.rmtree(cache_dir, ignore_errors=True)
    result["compile"]["cache_dir"] = "(temporary, removed)"

  out = options.out or os.path.join(
      "runs", "benchmarks", f"{result['device']['slug']}_{workload.model}_b{workload.batch}_{workload.dtype}.json")
  files.write_json(out, result, indent=1)
  print(summary(result))
  print(f"  written to {out}")
  return result
