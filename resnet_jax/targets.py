"""The accelerators `resnet_jax.aot` compiles for: chips with their datasheet figures, targets named as Cloud names
accelerator types, and their devices as libtpu or JAX's CUDA plugin describes them (no device is used).

`tpu:v4-8` and `tpu:v5p-8` count TensorCores (4 chips of 2 cores; one JAX device per chip), `tpu:v5e-4` and
`tpu:v6e-4` count chips; `tpu:2xv5p-8` is two slices. GPUs: `gpu:h100` (one), `gpu:h100x8` (one host of 8),
`gpu:2xh100x8` (two hosts).
"""
from __future__ import annotations

import dataclasses
import os
import re

import jax

GiB = 1024**3
GPU_MEMORY_FRACTION = 0.75  # What JAX preallocates of a GPU by default (XLA_PYTHON_CLIENT_MEM_FRACTION).
TARGETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")


# ----------------------------------------------------------------------------------------------------------------
# Chips and targets
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Chip:
  """One accelerator chip (one JAX device): its datasheet figures and how to describe it to the compiler."""
  name: str
  platform: str  # "tpu" or "gpu"
  peak_bf16: float  # Dense bfloat16 FLOP/s.
  hbm_bytes: int  # Nominal memory.
  bandwidth: float  # Memory bandwidth, bytes/s.
  source: str
  tpu_name: str | None = None  # libtpu's topology prefix ("v5p")
  gpu_spec: str | None = None  # A GpuTargetConfigProto text file in TARGETS_DIR.

  @property
  def usable_bytes(self) -> int:
    """The memory XLA may use for one program: all of a TPU's HBM (the compiler itself refuses a program larger than
    it), 75 % of a GPU's (JAX's default preallocation; XLA_PYTHON_CLIENT_MEM_FRACTION changes it)."""
    return int(self.hbm_bytes * (GPU_MEMORY_FRACTION if self.platform == "gpu" else 1.0))

  @property
  def usable_rule(self) -> str:
    if self.platform == "gpu":
      return f"{GPU_MEMORY_FRACTION:.0%} of {self.hbm_bytes / GiB:.1f} GiB (JAX's default GPU preallocation)"
    return f"the chip's {self.hbm_bytes / GiB:.1f} GiB of HBM (the TPU compiler refuses more)"


CHIPS = {
    "v4": Chip("TPU v4", "tpu", 275e12, 32 * GiB, 1200e9, "cloud.google.com/tpu/docs/v4", tpu_name="v4"),
    "v5e": Chip("TPU v5e", "tpu", 197e12, 16 * GiB, 819e9, "cloud.google.com/tpu/docs/v5e", tpu_name="v5e"),
    "v5p": Chip("TPU v5p", "tpu", 459e12, 95 * GiB, 2765e9, "cloud.google.com/tpu/docs/v5p", tpu_name="v5p"),
    "v6e": Chip("TPU v6e", "tpu", 918e12, 32 * GiB, 1640e9, "cloud.google.com/tpu/docs/v6e", tpu_name="v6e"),
    # device_memory_size of XLA's own target descriptions (84,942,979,072 and 151,397,597,184 bytes).
    "h100": Chip("NVIDIA H100 SXM 80GB", "gpu", 989e12, 84_942_979_072, 3.35e12,
                 "NVIDIA H100 datasheet (dense bf16, SXM); memory from XLA's h100_sxm target description",
                 gpu_spec="h100_sxm.txtpb"),
    "h200": Chip("NVIDIA H200 SXM 141GB", "gpu", 989e12, 151_397_597_184, 4.8e12,
                 "NVIDIA H200 datasheet (dense bf16, SXM); memory from XLA's h200 target description",
                 gpu_spec="h200.txtpb"),
}

# TPU generations whose accelerator type counts TensorCores (2 per chip, one JAX device per chip: megacore).
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}
# Slice shapes (chips) as Cloud provisions them: 3-D tori for v4/v5p, 2-D for v5e/v6e.
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
              512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
GPUS_PER_HOST = 8

EXAMPLE_TARGETS = ("tpu:v4-8", "tpu:v5e-4", "tpu:v5e-8", "tpu:v5p-8", "tpu:v6e-4", "tpu:v5p-128", "tpu:2xv5p-8",
                   "gpu:h100", "gpu:h200", "gpu:h100x8", "gpu:h200x8")


@dataclasses.dataclass(frozen=True)
class Target:
  """A named slice or GPU set: `chips` devices of `chip` in `slices` slices (or hosts, for GPUs)."""
  name: str
  chip: Chip
  chips: int  # Devices in all.
  slices: int = 1
  topology: str = ""  # libtpu's "v5p:2x2x1", or the GPU topology "slices x hosts x gpus per host".

  @property
  def platform(self) -> str:
    return self.chip.platform


def _usage() -> str:
  return (f"targets are tpu:<v4|v5p>-<TensorCores> (2 per chip), tpu:<v5e|v6e>-<chips>, with N slices "
          f"tpu:Nx<type>, and gpu:<h100|h200>[x<GPUs, at most {GPUS_PER_HOST} per host>], with N hosts "
          f"gpu:Nx<h100|h200>x<GPUs per host>; for example {', '.join(EXAMPLE_TARGETS)}")


def parse_target(name: str) -> Target:
  """The `Target` of a name such as 'tpu:v5p-8', 'tpu:2xv5p-8', 'gpu:h100x8' or 'gpu:2xh200x8'.

  Raises:
    ValueError: an unknown or malformed name, or a slice size Cloud does not provision (one line, with examples).
  """
  platform, _, rest = name.partition(":")
  match = re.fullmatch(r"(?:(\d+)x)?(.+)", rest)
  count = int(match.group(1)) if match and match.group(1) else 1
  body = match.group(2) if match else ""
  if platform == "tpu":
    tpu = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", body)
    if not tpu or count < 1:
      raise ValueError(f"unknown target {name!r}: {_usage()}")
    generation, units = tpu.group(1), int(tpu.group(2))
    cores = _CORES_PER_CHIP[generation]
    chips, left = divmod(units, cores)
    shapes = _SHAPES_3D if cores == 2 else _SHAPES_2D
    if left or chips not in shapes:
      sizes = ", ".join(f"{generation}-{c * cores}" for c in sorted(shapes))
      raise ValueError(f"{name!r}: Cloud provisions {generation} slices of {sizes}.")
    return Target(name, CHIPS[generation], chips * count, count, f"{generation}:{shapes[chips]}")
  if platform == "gpu":
    gpu = re.fullmatch(r"(h100|h200)(?:x(\d+))?", body)
    if not gpu:
      raise ValueError(f"unknown target {name!r}: {_usage()}")
    per_host = int(gpu.group(2) or 1)
    if not 1 <= per_host <= GPUS_PER_HOST:
      raise ValueError(f"{name!r}: a host has 1 to {GPUS_PER_HOST} GPUs; for more, name hosts: gpu:2x{gpu.group(1)}x8.")
    return Target(name, CHIPS[gpu.group(1)], per_host * count, count, f"1x{count}x{per_host}")
  raise ValueError(f"unknown target {name!r}: {_usage()}")


def target_devices(target: Target) -> list:
  """The target's devices as the compiler describes them (no device is used).

  Raises:
    ImportError: the accelerator's JAX package is missing (one line saying what to install).
  """
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  version = jax.__version__
  if target.platform == "tpu":
    try:
      import libtpu  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise ImportError(f'{target.name} needs libtpu: pip install "jax[tpu]=={version}"') from None
    generation = target.topology.split(":")[0]
    layout = {}
    if _CORES_PER_CHIP[generation] == 2:  # v4 and v5p chips are one JAX device of 2 TensorCores ("megacore").
      layout["chip_config_name"] = "megacore"
    elif target.chips // target.slices == 8:  # A v5e-8 / v6e-8 is one host of 8 chips (larger slices: 4 per host).
      layout["chips_per_host_bounds"] = (2, 4, 1)
    topology = topologies.get_topology_desc(target.topology, platform="tpu", num_slices=target.slices, **layout)
  else:
    if not _has_cuda_plugin():
      raise ImportError(f"{target.name} needs JAX's CUDA plugin: pip install \"jax[cuda13]=={version}\" (about 5 GB; "
                        "run with JAX_PLATFORMS=cpu where there is no GPU)")
    with open(os.path.join(TARGETS_DIR, target.chip.gpu_spec)) as f:
      spec = f.read()
    topology = topologies.get_topology_desc(platform="cuda", topology=target.topology, target_config=spec)
  devices = list(topology.devices)
  if len(devices) != target.chips:
    raise RuntimeError(f"{target.name}: the compiler describes {len(devices)} devices, expected {target.chips}.")
  return devices


def _has_cuda_plugin() -> bool:
  import importlib.util  # pylint: disable=g-import-not-at-top
  return any(importlib.util.find_spec(m) is not None for m in ("jax_cuda13_plugin", "jax_cuda12_plugin"))


def versions() -> dict:
  """The versions a compile depends on."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  out = {}
  for package in ("jax", "jaxlib", "libtpu", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax"):
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out
