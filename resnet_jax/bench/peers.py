"""The peers the benchmark runs beside our step: one script each in benchmarks/peers/, run in its own process with
our workload and timing protocol, and what each can measure where.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from resnet_jax import files
from resnet_jax.bench.workload import Workload


@dataclasses.dataclass(frozen=True)
class Peer:
  """A peer script in benchmarks/peers/ and what it can measure."""
  script: str
  models: tuple[str, ...]  # our model names whose workload it reproduces
  requires: tuple[str, ...]  # Python modules it imports
  platforms: tuple[str, ...]  # JAX platforms whose hardware it can run on
  extra_args: tuple[str, ...] = ()
  layout_note: str = ""


_CIFAR_NETS = tuple(f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110, 1202))
PEERS = {
    "keras": Peer("keras_resnet50.py", ("resnet50",), ("tensorflow", "keras"), ("cpu",),
                  layout_note="Keras ResNet50 is the v1 layout; pass --variant=v1 for equal work"),
    "torch_eager": Peer("torch_resnet50.py", ("resnet50",), ("torch",), ("cpu", "gpu")),
    "torch_compile": Peer("torch_resnet50.py", ("resnet50",), ("torch",), ("cpu", "gpu"),
                          extra_args=("--compile_mode=default",)),
    "torch_cifar": Peer("torch_cifar_resnet.py", _CIFAR_NETS, ("torch",), ("cpu", "gpu")),
    "torch_cifar_compile": Peer("torch_cifar_resnet.py", _CIFAR_NETS, ("torch",), ("cpu", "gpu"),
                                extra_args=("--compile_mode=default",)),
}
_PEER_DEVICE = {"cpu": "cpu", "gpu": "cuda"}


def check_peer_names(names: Sequence[str]) -> None:
  unknown = [n for n in names if n not in PEERS]
  if unknown:
    raise ValueError(f"unknown peer(s) {unknown}; choose from {sorted(PEERS)}")


def peer_skip_reason(name: str, workload: Workload, platform_name: str, peer: Peer | None = None) -> str | None:
  """Why peer `name` (described by `peer`, default PEERS[name]) cannot run against this workload here, or None."""
  peer = PEERS[name] if peer is None else peer
  if workload.model not in peer.models:
    return f"peer {name!r} reproduces {', '.join(peer.models[:3])}{'...' if len(peer.models) > 3 else ''}, " \
           f"not {workload.model}"
  if platform_name not in peer.platforms:
    return f"peer {name!r} runs on {'/'.join(peer.platforms)}, and this run is on {platform_name}"
  missing = [m for m in peer.requires if importlib.util.find_spec(m) is None]
  if missing:
    return f"missing Python module(s) {missing}"
  return None


def peer_module(name: str) -> str:
  """The module that runs peer `name` (`python -m MODULE`, from the repository root)."""
  return "benchmarks.peers." + PEERS[name].script.removesuffix(".py")


def peer_command(name: str, workload: Workload, *, platform_name: str, warmup: int, windows: int, window: int,
                 out: str) -> list[str]:
  """The command line that runs peer `name` on this workload with our timing protocol."""
  peer = PEERS[name]
  cmd = [sys.executable, "-m", peer_module(name), f"--batch={workload.batch}",
         f"--image_size={workload.image_size}", f"--dtype={workload.dtype}",
         f"--device={_PEER_DEVICE.get(platform_name, 'cpu')}", f"--warmup={warmup}", f"--windows={windows}",
         f"--window={window}", f"--out={out}", *peer.extra_args]
  if peer.script == "torch_cifar_resnet.py":
    cmd.append(f"--depth={workload.model.removeprefix('cifar_resnet')}")
  return cmd


def run_peer(name: str, workload: Workload, *, platform_name: str, warmup: int, windows: int, window: int,
             timeout: float) -> dict:
  """Runs one peer in its own process; returns its result ('ok', 'skipped' or 'failed')."""
  reason = peer_skip_reason(name, workload, platform_name)
  if reason:
    return {"peer": name, "status": "skipped", "reason": reason}
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "peer.json")
    cmd = peer_command(name, workload, platform_name=platform_name, warmup=warmup, windows=windows, window=window,
                       out=out)
    # Our XLA flags are not the peer's: TensorFlow's XLA would read them too (and reject flags it does not know).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=files.REPO_ROOT)
    except subprocess.TimeoutExpired:
      return {"peer": name, "status": "failed", "reason": f"no result within --peer_timeout={timeout:.0f} s"}
    if os.path.exists(out):
      with open(out) as f:
        result = json.load(f)
    else:
      result = {"peer": name, "status": "failed",
                "reason": f"exit code {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
  # Reproducible as written (from the repository root), no temporary paths.
  result["command"] = shlex.join(["python", *cmd[1:3]] + [a for a in cmd[3:] if not a.startswith("--out=")])
  if PEERS[name].layout_note and workload.variant != "v1":
    result["note"] = PEERS[name].layout_note
  return result
