"""resnet_jax.batchnorm against flax.linen.BatchNorm: variables, outputs, running statistics and gradients.

Tolerances: float32 results agree to 1e-5 relative (the two compute the same formulas in a different order);
bfloat16 outputs to bfloat16 rounding (2e-2), statistics computed in float32 either way.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from resnet_jax import batchnorm

F32 = {"rtol": 1e-5, "atol": 1e-5}


def _pair(**kw):
  return batchnorm.BatchNorm(**kw), nn.BatchNorm(**kw)


def _data(shape=(8, 5, 5, 6), seed=0):
  x = 3.0 + 2.0 * jax.random.normal(jax.random.key(seed), shape)
  # Non-trivial scale and bias, so that their gradients are tested with values that matter.
  scale = 1.0 + 0.5 * jax.random.normal(jax.random.key(seed + 1), shape[-1:])
  bias = 0.3 * jax.random.normal(jax.random.key(seed + 2), shape[-1:])
  return x, scale, bias


def _variables(module, x, scale, bias):
  variables = module.init(jax.random.key(0), x, use_running_average=True)
  return {"params": {"scale": scale, "bias": bias},
          "batch_stats": jax.tree.map(lambda v: v + 0.25, variables["batch_stats"])}


def _train(module, variables, x, cotangent):
  """Output, updated statistics, and the gradients of <y, cotangent> w.r.t. x, scale and bias."""
  def loss(x, params):
    y, updates = module.apply({**variables, "params": params}, x, use_running_average=False,
                              mutable=["batch_stats"])
    return jnp.sum(y.astype(jnp.float32) * cotangent), (y, updates["batch_stats"])
  (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, variables["params"])
  return y, stats, grads


def test_same_variables_as_flax():
  ours, theirs = _pair(momentum=0.9)
  x = jnp.ones((2, 3, 3, 4))
  shapes = lambda m: jax.tree.map(lambda v: (v.shape, v.dtype), m.init(jax.random.key(0), x, False))
  assert shapes(ours) == shapes(theirs)
  ours_zero = batchnorm.BatchNorm(scale_init=nn.initializers.zeros).init(jax.random.key(0), x, False)
  assert not np.any(ours_zero["params"]["scale"])


@pytest.mark.parametrize("momentum, epsilon", [(0.9, 1e-5), (0.99, 1e-3)])
def test_training_matches_flax(momentum, epsilon):
  ours, theirs = _pair(momentum=momentum, epsilon=epsilon)
  x, scale, bias = _data()
  variables = _variables(theirs, x, scale, bias)
  cotangent = jax.random.normal(jax.random.key(7), x.shape)
  y, stats, grads = _train(ours, variables, x, cotangent)
  y_ref, stats_ref, grads_ref = _train(theirs, variables, x, cotangent)
  np.testing.assert_allclose(y, y_ref, **F32)
  jax.tree.map(functools.partial(np.testing.assert_allclose, **F32), stats, stats_ref)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4), grads, grads_ref)


def test_inference_matches_flax():
  ours, theirs = _pair()
  x, scale, bias = _data()
  variables = _variables(theirs, x, scale, bias)
  np.testing.assert_allclose(ours.apply(variables, x, use_running_average=True),
                             theirs.apply(variables, x, use_running_average=True), **F32)


def test_bfloat16_output_and_float32_statistics():
  ours, theirs = _pair(dtype=jnp.bfloat16)
  x, scale, bias = _data()
  x = x.astype(jnp.bfloat16)
  variables = _variables(theirs, x, scale, bias)
  cotangent = jax.random.normal(jax.random.key(7), x.shape)
  y, stats, grads = _train(ours, variables, x, cotangent)
  y_ref, stats_ref, grads_ref = _train(theirs, variables, x, cotangent)
  assert y.dtype == jnp.bfloat16 and grads[0].dtype == jnp.bfloat16
  assert stats["mean"].dtype == jnp.float32 and grads[1]["scale"].dtype == jnp.float32
  np.testing.assert_allclose(y.astype(jnp.float32), y_ref.astype(jnp.float32), rtol=2e-2, atol=2e-2)
  np.testing.assert_allclose(stats["var"], stats_ref["var"], rtol=1e-3)
  np.testing.assert_allclose(grads[1]["scale"], grads_ref[1]["scale"], rtol=2e-2, atol=2e-2)


def _sharded_train(module, variables, x, cotangent, mesh):
  """Per-device training under shard_map: each device's loss is its share of the global one (the cotangent's
  rows on that device); parameter gradients are averaged over the devices, as the train step does."""
  def per_device(x, cotangent):
    y, stats, (dx, dparams) = _train(module, variables, x, cotangent)
    return y, stats, dx, jax.lax.pmean(dparams, "batch")

  mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P("batch"), P("batch")),
                         out_specs=(P("batch"), P(), P("batch"), P()), check_vma=False)
  return jax.jit(mapped)(x, cotangent)


def test_synchronised_statistics_and_gradients_equal_one_big_batch():
  """Under shard_map over 4 devices with axis_name, the statistics are the global batch's; the input gradients
  equal one device's on the whole batch, and the averaged parameter gradients a quarter of them. Flax's
  BatchNorm run the same way agrees."""
  devices = jax.devices()[:4]
  assert len(devices) == 4, "needs 4 (simulated) devices"
  mesh = Mesh(np.array(devices), ("batch",))
  x, scale, bias = _data(shape=(16, 4, 4, 6))
  single = batchnorm.BatchNorm(momentum=0.9)
  variables = _variables(single, x, scale, bias)
  cotangent = jax.random.normal(jax.random.key(7), x.shape)

  y, stats, dx, dparams = _sharded_train(batchnorm.BatchNorm(momentum=0.9, axis_name="batch"), variables, x,
                                         cotangent, mesh)
  y_ref, stats_ref, (dx_ref, dparams_ref) = _train(single, variables, x, cotangent)
  close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-4)
  close(y, y_ref)
  jax.tree.map(close, stats, stats_ref)
  close(dx, dx_ref)
  jax.tree.map(lambda g, ref: close(g * 4, ref), dparams, dparams_ref)

  flax_out = _sharded_train(nn.BatchNorm(momentum=0.9, axis_name="batch"), variables, x, cotangent, mesh)
  jax.tree.map(close, (y, stats, dx, dparams), flax_out)
