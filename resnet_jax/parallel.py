"""Data parallelism: one per-device step with a named batch axis, run under `jax.shard_map` or `jax.pmap`.

The step functions in `resnet_jax.train` are written for ONE device's slice of the batch and talk to the other
devices only through collectives over `AXIS` (gradient mean, BatchNorm statistics, metric sums). This module maps
such a function over all devices in one of two ways:

* `shard_map` (default, recommended since JAX 0.8): the state lives as global, replicated `jax.Array`s and each
  batch as a global array sharded along the mesh's data axis. Works unchanged across processes.
* `pmap` (legacy): the state carries a leading axis of local devices; host batches are reshaped to
  [local_devices, per_device, ...].

Both strategies expose the same small interface (`put_state`, `get_state`, `put_batch`, `map_step`) so the training
loop does not branch on the choice; `prefetch` keeps batches in flight to the devices ahead of the step.
"""
from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"  # The one mesh axis: the batch is split along it.
STRATEGIES = ("shard_map", "pmap")


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (all devices of all processes by default)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (AXIS,))


@dataclasses.dataclass(frozen=True)
class ShardMap:
  """Global arrays on a mesh; the per-device function runs under `jax.shard_map`."""
  mesh: Mesh

  @property
  def batch_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(AXIS))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def put_state(self, state):
    return jax.device_put(state, self.replicated)

  def get_state(self, state):
    return state

  def put_batch(self, host_batch: dict[str, np.ndarray]):
    """Host-local batch -> global arrays sharded along the batch axis (each process gives its own part, in process
    order).

    Raises:
      ValueError: the local batch cannot be split evenly over this process's devices.
    """
    def put(x):
      try:
        return jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(x))
      except ValueError as error:
        raise ValueError(f"Cannot lay out a local batch of shape {np.shape(x)} over the mesh: the local batch size "
                         "must be a multiple of the number of local devices.") from error
    return jax.tree.map(put, host_batch)

  def map_step(self, fn: Callable, *, num_batch_args: int = 1, donate_state: bool = True) -> Callable:
    """Maps `fn(state, *batches) -> (state_or_none, out)` over devices; `out` must be device-invariant."""
    in_specs = (P(),) + (P(AXIS),) * num_batch_args
    # check_vma=False keeps pmap's semantics for the per-device function: a gradient with respect to replicated
    # parameters is this device's gradient, and the function averages it explicitly with `pmean`. (With
    # check_vma=True, autodiff would insert the cross-device sum itself.)
    mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=in_specs, out_specs=P(), check_vma=False)
    return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


@dataclasses.dataclass(frozen=True)
class Pmap:
  """Per-device copies with a leading device axis; the function runs under `jax.pmap`.

  `devices` (default: pmap's own choice, the local devices) names the devices to map over; compiling for devices
  that are not here (`resnet_jax.aot`) gives them.
  """
  mesh: Mesh
  devices: tuple | None = None

  def put_state(self, state):
    """One copy per local device, stacked along a leading axis sharded over them (pmap's input layout)."""
    devices = jax.local_devices()
    stacked = NamedSharding(Mesh(np.asarray(devices), (AXIS,)), P(AXIS))
    return jax.tree.map(
        lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), stacked), state)

  def get_state(self, state):
    """Leading-axis state -> global replicated arrays (the layout checkpoints and evaluation expect)."""
    replicated = NamedSharding(self.mesh, P())
    if jax.process_count() == 1:
      return jax.tree.map(lambda x: jax.device_put(x.addressable_data(0)[0], replicated), state)
    return jax.tree.map(lambda x: _host_local_to_replicated(x, replicated), state)

  def put_batch(self, host_batch: dict[str, np.ndarray]):
    n = jax.local_device_count()

    def split(x):
      if x.shape[0] % n:
        raise ValueError(f"host batch of {x.shape[0]} does not split over {n} local devices")
      return np.reshape(x, (n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(split, host_batch)

  def map_step(self, fn: Callable, *, num_batch_args: int = 1, donate_state: bool = True) -> Callable:
    pmapped = jax.pmap(fn, axis_name=AXIS, donate_argnums=(0,) if donate_state else (), devices=self.devices)

    return _PmapStep(pmapped)


class _PmapStep:
  """A pmapped step whose outputs besides the state are kept once (they were reduced over AXIS, so every device
  holds the same). Like a jitted function it can be compiled ahead of time: `.lower(*args).compile()` gives a step
  of the same kind with XLA's `cost_analysis()` of the per-device program, so both strategies report FLOPs."""

  def __init__(self, fn, lowered=None):
    self._fn, self._lowered = fn, lowered

  def __call__(self, state, *batches):
    new_state, out = self._fn(state, *batches)
    return new_state, jax.tree.map(lambda x: x[0], out)

  def lower(self, *args):
    return _PmapStep(self._fn, self._fn.lower(*args))

  def compile(self):
    return _PmapStep(self._lowered.compile())

  def cost_analysis(self):
    return self._fn.cost_analysis()

  def __getattr__(self, name):
    """Anything else (memory_analysis, as_text, compiler_ir, ...) of the lowered or compiled step it wraps."""
    if name.startswith("_"):
      raise AttributeError(name)
    return getattr(self._fn if self._lowered is None else self._lowered, name)


def _host_local_to_replicated(x, sharding):
  local = np.asarray(x.addressable_data(0)[0])
  return jax.make_array_from_callback(local.shape, sharding, lambda idx: local[idx])


def strategy(name: str, mesh: Mesh) -> Any:
  """The parallelism strategy for `config.parallelism`."""
  table = {"shard_map": ShardMap, "pmap": Pmap}
  if name not in table:
    raise ValueError(f"unknown config.parallelism={name!r}; choose one of {sorted(table)}")
  return table[name](mesh)


def prefetch(batches: Iterable, put: Callable, size: int = 2) -> Iterator:
  """Yields `put(batch)` for each host batch, keeping `size` batches in flight on the devices ahead of the step.

  Transfers are asynchronous: a batch is put on the devices when it enters the queue, long before the step that
  consumes it. Finite iterators are drained at the end.
  """
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}.")
  queue = collections.deque()
  for host_batch in batches:
    queue.append(put(host_batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
