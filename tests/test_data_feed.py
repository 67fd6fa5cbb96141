"""Host batches to global jax.Arrays (resnet_jax/data/feed.py)."""
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from resnet_jax.data import feed


def _sharding(num_devices):
  return NamedSharding(Mesh(np.array(jax.devices()[:num_devices]), ("data",)), P("data"))


def _batch(step, size=8):
  return {"image": np.full((size, 4, 4, 3), step, np.float32) + np.arange(size, dtype=np.float32)[:, None, None,
                                                                                                   None],
          "label": np.arange(size, dtype=np.int32) + 100 * step}


@pytest.mark.parametrize("num_devices", [1, 2, 4])
def test_shard_to_mesh_splits_the_batch_axis_over_the_data_axis(num_devices):
  sharding = _sharding(num_devices)
  batch = _batch(0)
  arrays = feed.shard_to_mesh(batch, sharding)
  for name, array in arrays.items():
    assert array.shape == batch[name].shape and array.sharding == sharding
    np.testing.assert_array_equal(np.asarray(array), batch[name])
    shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
    assert len(shards) == num_devices
    for i, shard in enumerate(shards):
      np.testing.assert_array_equal(np.asarray(shard.data), batch[name][i * 8 // num_devices:(i + 1) * 8 //
                                                                           num_devices])


def test_shard_to_mesh_rejects_uneven_batches_and_non_shardings():
  with pytest.raises(ValueError, match="multiple of the number of local devices"):
    feed.shard_to_mesh(_batch(0, size=6), _sharding(4))
  with pytest.raises(ValueError, match="Sharding"):
    feed.shard_to_mesh(_batch(0), Mesh(np.array(jax.devices()), ("data",)))


@pytest.mark.parametrize("size", [1, 2, 5])
def test_prefetch_yields_every_batch_in_order(size):
  sharding = _sharding(4)
  batches = [_batch(step) for step in range(4)]
  out = list(feed.prefetch(iter(batches), sharding, size=size))
  assert len(out) == 4
  for expected, got in zip(batches, out):
    np.testing.assert_array_equal(np.asarray(got["label"]), expected["label"])
    assert got["image"].sharding == sharding
