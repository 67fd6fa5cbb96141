"""The per-platform XLA flags: when they are applied, and that they change speed, not results."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from resnet_jax import xla_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_FLAGS = xla_flags.PLATFORM_XLA_FLAGS["cpu"]


def _nothing_installed(name):
  del name
  return False


def test_platform_from_jax_platforms_wins():
  env = {"JAX_PLATFORMS": "cuda,cpu"}
  assert xla_flags.likely_platform(env, installed=lambda name: True) == "gpu"
  assert xla_flags.likely_platform({"JAX_PLATFORMS": "cpu"}, installed=lambda name: True) == "cpu"
  assert xla_flags.likely_platform({"JAX_PLATFORMS": "tpu"}, installed=_nothing_installed) == "tpu"


def test_platform_is_cpu_only_without_accelerator_plugins():
  assert xla_flags.likely_platform({}, installed=_nothing_installed) == "cpu"
  assert xla_flags.likely_platform({}, installed=lambda name: name == "jax-cuda12-plugin") is None
  assert xla_flags.likely_platform({}, installed=lambda name: name == "libtpu") is None


def test_apply_puts_cpu_flags_before_the_users_own_once():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  added = xla_flags.apply(True, env, installed=_nothing_installed)
  assert added == CPU_FLAGS
  assert env["XLA_FLAGS"] == " ".join(CPU_FLAGS) + " --xla_force_host_platform_device_count=4"
  assert xla_flags.apply(True, env, installed=_nothing_installed) == ()  # a second call repeats nothing
  assert env["XLA_FLAGS"].split().count(CPU_FLAGS[0]) == 1


def test_apply_adds_nothing_off_cpu_or_when_disabled():
  for env, installed in (({"JAX_PLATFORMS": "cuda"}, _nothing_installed),
                         ({}, lambda name: name == "jax-cuda12-plugin"),
                         ({"JAX_PLATFORMS": "tpu"}, _nothing_installed)):
    assert xla_flags.apply(True, env, installed=installed) == ()
    assert "XLA_FLAGS" not in env
  env = {}
  assert xla_flags.apply(False, env, installed=_nothing_installed) == ()
  assert env == {}


_STEP = r"""
import json, sys
import jax, jax.numpy as jnp
from resnet_jax import models
model = models.create("cifar_resnet20", num_classes=10)
x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3))
y = jnp.arange(8) % 10
variables = model.init(jax.random.key(1), x, train=False)
def loss(params):
  logits, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
  return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))
value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
print(json.dumps({"loss": float(value), "grads": [float(jnp.sum(g * g)) for g in jax.tree.leaves(grads)]}))
"""


def _gradients(extra_flags):
  env = {**os.environ, "XLA_FLAGS": " ".join(extra_flags), "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", _STEP], cwd=_REPO, env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_cpu_flags_leave_the_gradients_unchanged():
  """Both flags only change how XLA:CPU schedules the work; float32 results agree to rounding."""
  plain, flagged = _gradients(()), _gradients(CPU_FLAGS)
  np.testing.assert_allclose(flagged["loss"], plain["loss"], rtol=1e-5)
  np.testing.assert_allclose(flagged["grads"], plain["grads"], rtol=1e-3, atol=1e-8)
