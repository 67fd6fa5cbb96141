"""The two data-parallel strategies run the same per-device function to the same result."""

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


# --- Host batches to the devices ------------------------------------------------------------------------------
def _batch(step, size=8):
  image = np.full((size, 4, 4, 3), step, np.float32) + np.arange(size, dtype=np.float32)[:, None, None, None]
  return {"image": image, "label": np.arange(size, dtype=np.int32) + 100 * step}


@pytest.mark.parametrize("num_devices", [1, 2, 4])
def test_put_batch_splits_the_batch_axis_over_the_data_axis(num_devices):
  strategy = parallel.ShardMap(parallel.data_mesh(jax.devices()[:num_devices]))
  batch = _batch(0)
  arrays = strategy.put_batch(batch)
  for name, array in arrays.items():
    assert array.shape == batch[name].shape and array.sharding == strategy.batch_sharding
    np.testing.assert_array_equal(np.asarray(array), batch[name])
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    assert len(shards) == num_devices
    for i, shard in enumerate(shards):
      expected = batch[name][i * 8 // num_devices:(i + 1) * 8 // num_devices]
      np.testing.assert_array_equal(np.asarray(shard.data), expected)


def test_put_batch_rejects_batches_that_do_not_split_over_the_devices():
  with pytest.raises(ValueError, match="multiple of the number of local devices"):
    parallel.ShardMap(parallel.data_mesh()).put_batch(_batch(0, size=6))


@pytest.mark.parametrize("size", [1, 2, 5])
def test_prefetch_yields_every_batch_in_order(size):
  strategy = parallel.ShardMap(parallel.data_mesh())
  batches = [_batch(step) for step in range(4)]
  out = list(parallel.prefetch(iter(batches), strategy.put_batch, size=size))
  assert len(out) == 4
  for expected, got in zip(batches, out):
    np.testing.assert_array_equal(np.asarray(got["label"]), expected["label"])
    assert got["image"].sharding == strategy.batch_sharding
  with pytest.raises(ValueError, match="prefetch size"):
    list(parallel.prefetch(iter(batches), strategy.put_batch, size=0))
