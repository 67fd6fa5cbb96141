"""A small train state shaped like the engine's, on and off device meshes: shared by the checkpoint and fine-tuning
tests."""
import flax
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@flax.struct.dataclass
class State:
  """A train state shaped like the engine's: a dataclass of params, statistics, optimizer state and a step."""
  step: jax.Array
  params: dict
  batch_stats: dict
  opt_state: optax.OptState


def _mesh(num_devices):
  return Mesh(np.array(jax.devices()[:num_devices]), ("data",))


def _sharding(leaf, mesh):
  """Rows split over the mesh where they divide evenly (as for sharded optimizer state), else replicated."""
  if np.ndim(leaf) >= 1 and np.shape(leaf)[0] % mesh.size == 0:
    return NamedSharding(mesh, P("data"))
  return NamedSharding(mesh, P())


def _host_state(seed=0, num_classes=10):
  rng = np.random.default_rng(seed)
  params = {
      "stem": {"kernel": rng.standard_normal((3, 3, 3, 8), np.float32)},
      "head": {"kernel": rng.standard_normal((8, num_classes), np.float32),
               "bias": rng.standard_normal((num_classes,), np.float32)},
  }
  batch_stats = {"stem_bn": {"mean": rng.standard_normal((8,), np.float32),
                             "var": rng.random((8,), np.float32)}}
  opt_state = optax.sgd(0.1, momentum=0.9).init(params)
  opt_state = jax.tree.map(lambda x: np.asarray(x) + rng.standard_normal(np.shape(x), np.float32), opt_state)
  return State(step=np.int32(seed), params=params, batch_stats=batch_stats, opt_state=opt_state)


def _on_mesh(host_state, mesh):
  return jax.tree.map(lambda x: jax.device_put(x, _sharding(x, mesh)), host_state)


def _abstract(host_state, mesh):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=_sharding(x, mesh)),
                      host_state)


def _assert_equal_trees(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
