"""XLA flags that make our step faster on one platform, and the rule for applying them.

XLA reads `$XLA_FLAGS` once, when the first backend starts, so the flags must be chosen before anything touches a
JAX device, which is before JAX can say which platform it will use. `likely_platform` answers that question from
the environment alone (`$JAX_PLATFORMS` and the installed accelerator plugins), and `apply` adds the chosen
platform's flags in front of the user's own `$XLA_FLAGS` (a flag given twice takes its last value, so the user's
setting wins).

The flags are per platform because they are tuned for one backend's fusion and convolution code and mean
nothing, or harm, elsewhere. Each one's measured effect is in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import MutableMapping

PLATFORM_XLA_FLAGS = {
    "cpu": (
        # Convolutions through XLA's Eigen emitter instead of the YNNPACK library: its multi-threading and weight
        # gradients are faster on ResNet-50 (about 1.3x less CPU time per step).
        "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
        # Producer-consumer fusion may not duplicate a producer into several consumers; multi-output fusion groups
        # them instead. Without this, XLA:CPU re-computes a whole stage's chain of BatchNorm, residual additions and
        # ReLUs inside each transpose that feeds a weight gradient (quadratic in the stage depth). It replaced
        # disabling the fusion pass altogether, which avoided the same pathology but left every elementwise op
        # unfused: 1.03-1.39x faster steps on CIFAR ResNet-20/56 and ResNet-50 (benchmarks/RESULTS.md).
        "--xla_backend_extra_options=xla_cpu_use_multi_output_fusion",
    ),
}

# Distributions whose presence means JAX may pick an accelerator (PJRT plugins and the TPU runtime).
ACCELERATOR_DISTRIBUTIONS = (
    "jax-cuda12-plugin", "jax-cuda13-plugin", "jax-cuda12-pjrt", "jax-cuda13-pjrt", "jax-rocm60-plugin",
    "jax-rocm7-plugin", "libtpu", "libtpu-nightly", "jax-metal",
)
_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def _installed(name: str) -> bool:
  try:
    importlib.metadata.distribution(name)
  except importlib.metadata.PackageNotFoundError:
    return False
  return True


def likely_platform(environ: MutableMapping[str, str] | None = None, installed=_installed) -> str | None:
  """The platform JAX will run on, judged without starting a backend: 'cpu', 'gpu', 'tpu', or None if unknown.

  `$JAX_PLATFORMS` decides when set (its first entry). Otherwise it is 'cpu' when no accelerator plugin or TPU
  runtime is installed, and unknown (None) when one is: the machine may or may not have the device.
  """
  environ = os.environ if environ is None else environ
  requested = environ.get("JAX_PLATFORMS", "").strip().lower()
  if requested:
    first = requested.split(",")[0].strip()
    return _PLATFORM_ALIASES.get(first, first)
  if any(installed(name) for name in ACCELERATOR_DISTRIBUTIONS):
    return None
  return "cpu"


def apply(enabled: bool = True, environ: MutableMapping[str, str] | None = None, installed=_installed) -> tuple:
  """Puts the likely platform's flags in front of `$XLA_FLAGS`; returns the flags added (maybe none).

  Call before anything touches a JAX device. With `enabled=False`, or when the platform is not known for sure,
  nothing is added; flags already present are not repeated.
  """
  environ = os.environ if environ is None else environ
  platform = likely_platform(environ, installed) if enabled else None
  user = environ.get("XLA_FLAGS", "").strip()
  chosen = tuple(f for f in PLATFORM_XLA_FLAGS.get(platform, ()) if f not in user.split()) if platform else ()
  if chosen:
    environ["XLA_FLAGS"] = " ".join((*chosen, user)).strip()
    logging.info("XLA flags for %s (see resnet_jax/xla_flags.py): %s", platform, " ".join(chosen))
  return chosen
