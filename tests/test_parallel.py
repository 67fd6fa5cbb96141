"""The two data-parallel strategies run the same per-device function to the same result."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import parallel


def _sgd_step(state, batch):
  """A per-device least-squares SGD step: gradient averaged over the named axis."""
  def loss(w):
    return jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
  grad = jax.lax.pmean(jax.grad(loss)(state["w"]), parallel.AXIS)
  count = jax.lax.psum(batch["x"].shape[0], parallel.AXIS)
  return {"w": state["w"] - 0.1 * grad}, {"count": count}


def _full_batch_step(w, x, y):
  grad = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
  return w - 0.1 * grad


@pytest.mark.parametrize("name", parallel.STRATEGIES)
def test_strategy_matches_full_batch(name):
  assert jax.device_count() == 4
  rng = np.random.default_rng(0)
  x = rng.normal(size=(16, 3)).astype(np.float32)
  y = rng.normal(size=(16,)).astype(np.float32)
  w0 = np.zeros(3, np.float32)

  strategy = parallel.strategy(name, parallel.data_mesh())
  step = strategy.map_step(_sgd_step)
  state = strategy.put_state({"w": jnp.asarray(w0)})
  for _ in range(3):
    state, out = step(state, strategy.put_batch({"x": x, "y": y}))
  w = np.asarray(jax.device_get(strategy.get_state(state)["w"]))

  expected = w0
  for _ in range(3):
    expected = _full_batch_step(expected, x, y)
  np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-6)
  assert int(out["count"]) == 16


def test_unknown_strategy():
  with pytest.raises(ValueError, match="shard_map"):
    parallel.strategy("dp", parallel.data_mesh())
