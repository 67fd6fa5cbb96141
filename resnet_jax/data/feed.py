"""Host batches -> global jax.Arrays on the mesh, prefetched ahead of the training step."""
import collections
from collections.abc import Iterable, Iterator

import jax
import numpy as np


def shard_to_mesh(host_batch, sharding: jax.sharding.Sharding):
  """Turns this process's part of a batch into global jax.Arrays laid out by `sharding`.

  Args:
    host_batch: pytree of numpy arrays whose leading axis is this process's part of the global batch (the
      processes' parts, in process order, make up the global batch).
    sharding: layout of the global arrays, typically NamedSharding(mesh, P('data')): the batch axis split over
      the mesh's data axis.

  Returns:
    The same pytree of global jax.Arrays.

  Raises:
    ValueError: the local batch cannot be split evenly over this process's devices.
  """
  if not isinstance(sharding, jax.sharding.Sharding):
    raise ValueError(f"Expected a jax.sharding.Sharding (e.g. NamedSharding(mesh, P('data'))), got {sharding!r}.")

  def put(x):
    x = np.asarray(x)
    try:
      return jax.make_array_from_process_local_data(sharding, x)
    except ValueError as error:
      raise ValueError(f"Cannot lay out a local batch of shape {x.shape} with {sharding}: the local batch size "
                       "must be a multiple of the number of local devices along the data axis.") from error
  return jax.tree.map(put, host_batch)


def prefetch(iterator: Iterable, sharding: jax.sharding.Sharding, size: int = 2) -> Iterator:
  """Yields device batches, keeping `size` batches in flight so host-to-device copies overlap the step.

  Transfers are asynchronous: a batch is put on the devices when it enters the queue, long before the step that
  consumes it. Works for finite iterators too (the queue is drained at the end).
  """
  if size < 1:
    raise ValueError(f"prefetch size must be >= 1, got {size}.")
  queue = collections.deque()
  for batch in iterator:
    queue.append(shard_to_mesh(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
