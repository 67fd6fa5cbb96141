"""FLOPs and peak rates: XLA's count for a compiled step, each device's peak FLOP/s, model FLOPs utilisation (MFU).

MFU is the FLOP rate of the compiled train step (XLA's cost analysis, `step_flops`) over the peak rate of the device:
the datasheet table `PEAK_FLOPS` for accelerators, an estimate from /proc/cpuinfo for CPUs (`cpu_peak_flops`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

# Dense (no sparsity) peak FLOP/s of one JAX device, from the vendors' datasheets, by `device.device_kind` and
# compute dtype. Datasheet peaks are the usual MFU denominator; they are above what a matmul reaches in practice,
# so MFU here reads lower than against a measured rate. For NVIDIA Ampere and Hopper the float32 entry is the
# TF32 tensor-core rate, which XLA may use for float32 matmuls and convolutions at JAX's default precision. TPU
# float32 is left out: its rate depends on the precision setting (the number of bfloat16 passes). On TPU v2 and
# v3 each chip has two JAX devices (cores); from v4 on one device is one chip. Unknown kinds report no MFU.
_T = 1e12
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "NVIDIA H200": {"bfloat16": 989 * _T, "float16": 989 * _T, "float32": 495 * _T},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989 * _T, "float16": 989 * _T, "float32": 495 * _T},
    "NVIDIA H100 PCIe": {"bfloat16": 756 * _T, "float16": 756 * _T, "float32": 378 * _T},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312 * _T, "float16": 312 * _T, "float32": 156 * _T},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312 * _T, "float16": 312 * _T, "float32": 156 * _T},
    "NVIDIA A100-PCIE-40GB": {"bfloat16": 312 * _T, "float16": 312 * _T, "float32": 156 * _T},
    "NVIDIA A100 80GB PCIe": {"bfloat16": 312 * _T, "float16": 312 * _T, "float32": 156 * _T},
    # V100 has no bfloat16 tensor cores; float16 is its tensor-core rate.
    "Tesla V100-SXM2-16GB": {"float16": 125 * _T, "float32": 15.7 * _T},
    "Tesla V100-SXM2-32GB": {"float16": 125 * _T, "float32": 15.7 * _T},
    "Tesla V100-PCIE-16GB": {"float16": 112 * _T, "float32": 14 * _T},
    "Tesla V100-PCIE-32GB": {"float16": 112 * _T, "float32": 14 * _T},
    "TPU v2": {"bfloat16": 22.5 * _T},
    "TPU v3": {"bfloat16": 61.5 * _T},
    "TPU v4": {"bfloat16": 275 * _T},
    "TPU v5 lite": {"bfloat16": 197 * _T},  # v5e
    "TPU v5": {"bfloat16": 459 * _T},  # v5p
    "TPU v5p": {"bfloat16": 459 * _T},
    "TPU v6 lite": {"bfloat16": 918 * _T},  # v6e (Trillium)
}


_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def dtype_name(dtype: Any) -> str:
  """'bfloat16' for jnp.bfloat16, 'bf16' or 'bfloat16'."""
  if isinstance(dtype, str):
    dtype = _DTYPE_ALIASES.get(dtype, dtype)
  return jnp.dtype(dtype).name


def peak_flops(device_kind: str, dtype: Any) -> float | None:
  """Peak FLOP/s of one device of `device_kind` computing in `dtype`, or None where unknown (e.g. CPUs)."""
  return PEAK_FLOPS.get(device_kind, {}).get(dtype_name(dtype))


def device_peak_flops(device: Any, dtype: Any) -> tuple[float | None, str]:
  """Peak FLOP/s of one JAX device computing in `dtype`, and where the figure comes from.

  Accelerators: the datasheet table `PEAK_FLOPS`. CPU devices in float32: `cpu_peak_flops`'s estimate for the
  host, shared by the host's CPU devices (simulated devices split the same cores).
  """
  peak = peak_flops(device.device_kind, dtype)
  if peak:
    return peak, f"resnet_jax.flops.PEAK_FLOPS[{device.device_kind!r}][{dtype_name(dtype)!r}] (datasheet, dense)"
  if device.platform == "cpu" and dtype_name(dtype) == "float32":
    total, how = cpu_peak_flops()
    return (total / jax.local_device_count("cpu") if total else None), how
  return None, f"unknown: add {device.device_kind!r} in {dtype_name(dtype)} to resnet_jax.flops.PEAK_FLOPS"


def cpuinfo() -> dict[str, str]:
  """The first processor's fields from /proc/cpuinfo ({} where there is none)."""
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read().split("\n\n")[0]
  except OSError:
    return {}
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(":")
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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  try:
    mhz = float(info.get("cpu MHz", ""))
  except ValueError:
    return None, "unknown: /proc/cpuinfo has no clock"
  cpu_flags = set(info.get("flags", "").split())
  amd = info.get("vendor_id") == "AuthenticAMD"
  if "avx512f" in cpu_flags and (not amd or int(info.get("cpu family", "0")) >= 26):
    per_cycle = 64
  elif "fma" in cpu_flags:
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
  flops = analysis.get("flops") if isinstance(analysis, Mapping) else None
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
# Multiply-accumulates of a forward pass, counted as the literature counts them
# ----------------------------------------------------------------------------------------------------------------
def conventional_conv(next_fun, args, kwargs, context):
  """Flax method interceptor that makes XLA count MACs the way the literature does.

  Published MAC counts (He et al. 2015; torchvision; timm) charge every kernel tap at every output position,
  including taps over the zero padding; XLA's cost analysis skips those (about 2.9 % of ResNet-50). They also
  exclude BatchNorm, which XLA counts as arithmetic. So 2-D convolutions read an explicitly padded input that XLA may
  not fold back into the convolution, and BatchNorm passes its input through. Everything else (convolutions,
  grouped or not, the classifier, activations, pooling, attention, additions) is the forward pass as it is.
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  from resnet_jax import batchnorm  # pylint: disable=g-import-not-at-top

  module = context.module
  if context.method_name != "__call__":
    return next_fun(*args, **kwargs)
  if isinstance(module, (nn.BatchNorm, batchnorm.BatchNorm)):
    return args[0]
  if type(module) is nn.Conv and len(module.kernel_size) == 2 and not isinstance(module.padding, str):
    (x,) = args
    pads = ((0, 0),) + tuple(tuple(p) for p in module.padding) + ((0, 0),)
    x = jax.lax.optimization_barrier(jnp.pad(x, pads))
    strides = module.strides if isinstance(module.strides, tuple) else (module.strides,) * 2
    params = module.variables["params"]
    y = jax.lax.conv_general_dilated(x, params["kernel"], strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=module.feature_group_count)
    return y + params["bias"] if module.use_bias else y
  return next_fun(*args, **kwargs)  # 'VALID' 1x1s (attention) and 1-D convs (ECA) have no padding to count


def forward_macs(model: Any, size: int = 224, *, conventional: bool = True) -> float:
  """Multiply-accumulates of one image's inference forward pass through `model` at `size` x `size`: XLA's cost
  analysis of the compiled pass, with `conventional_conv`'s counting conventions unless `conventional` is False.
  Nothing is allocated: the variables are shapes only."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x.shape, x.dtype)))

  def forward(variables, x):
    if not conventional:
      return model.apply(variables, x)
    with nn.intercept_methods(conventional_conv):
      return model.apply(variables, x)

  cost = jax.jit(forward).lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX returned one dict per device
  return cost["flops"] / 2
