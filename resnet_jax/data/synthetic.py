"""Random batches generated on the accelerator, for benchmarks and machines without TensorFlow.

The images are standard-normal noise (already "normalised") and the labels uniform: nothing can be learned, so
this measures the training step with no input pipeline in the way, and there is nothing to evaluate (the eval
split is empty). The split sizes are otherwise ImageNet's, so that epochs resolve as for the real thing.

Two entry points:
- `train_iterator(..., sharding=...)`: a fresh batch per step, drawn on the devices directly as global jax.Arrays
  laid out by `sharding` (no host-to-device copy at all). Batch k is a function of (seed, k): resuming is exact.
- `host_train_iterator(...)`: the host-batch contract of `resnet_jax.data.train_iterator` (numpy, this process's
  part): one batch drawn on the device once, then yielded at every step, so the cost per step is only the usual
  host-to-device copy of the engine.

This module imports neither TensorFlow nor TFDS.
"""
import functools

import jax
import jax.numpy as jnp

from resnet_jax import distributed
from resnet_jax.data.dataset_info import DatasetInfo

NAME = "synthetic"
NUM_TRAIN = 1_281_167  # ImageNet's training split.
NUM_CLASSES = 1000


def info(data_config) -> DatasetInfo:
  """ImageNet's training size and class count (or `num_classes`), `image_size` from the config, no eval split.

  Raises:
    ValueError: `image_size` is not set (synthetic images have no stored size).
  """
  size = data_config.image_size
  if size is None:
    raise ValueError("synthetic data needs config.data.image_size (e.g. 224)")
  return DatasetInfo(num_classes=data_config.num_classes or NUM_CLASSES, num_train=NUM_TRAIN, num_eval=0,
                     image_shape=(size, size, 3))


@functools.lru_cache(maxsize=None)
def batch_fn(batch_size: int, image_shape: tuple, num_classes: int, sharding):
  """A jitted (key, step) -> batch function whose outputs are laid out by `sharding` (each device draws its part):
  the one maker of synthetic batches (the iterators below, the benchmark)."""
  out_shardings = None if sharding is None else {"image": sharding, "label": sharding}

  @functools.partial(jax.jit, out_shardings=out_shardings)
  def generate(key, step):
    image_key, label_key = jax.random.split(jax.random.fold_in(key, step))
    return {
        "image": jax.random.normal(image_key, (batch_size, *image_shape), jnp.float32),
        "label": jax.random.randint(label_key, (batch_size,), 0, num_classes, jnp.int32),
    }
  return generate


def train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0, sharding=None):
  """Infinite iterator of global batches {'image': float32 [B, H, W, C], 'label': int32 [B]} (jax.Arrays).

  Args:
    data_config: `config.data` (image_size, num_classes).
    global_batch_size: batch size over all devices and processes.
    seed: batches are a function of (seed, step).
    start_step: first step to yield (batches from k equal batches k, k+1, ... of a run from 0).
    sharding: layout of the batch (e.g. NamedSharding(mesh, P('data'))); None for the default device.
  """
  dataset = info(data_config)
  generate = batch_fn(global_batch_size, dataset.image_shape, dataset.num_classes, sharding)
  key = jax.random.key(seed)
  step = start_step
  while True:
    yield generate(key, step)
    step += 1


def host_train_iterator(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                        process_index=None, process_count=None):
  """Infinite iterator of this process's host batches (numpy), the same batch at every step.

  Same contract as `resnet_jax.data.train_iterator`: {'image': float32 [B, H, W, C], 'label': int32 [B]},
  B = global_batch_size // process_count.
  """
  del start_step  # Every step sees the same batch.
  process_index, process_count = distributed.resolve_processes(process_index, process_count)
  local_batch = distributed.local_batch_size(global_batch_size, process_count)
  dataset = info(data_config)
  generate = batch_fn(local_batch, dataset.image_shape, dataset.num_classes, None)
  batch = jax.device_get(generate(jax.random.key(seed), process_index))
  while True:
    yield batch


def num_eval_steps(data_config, *, global_batch_size: int, process_count=None) -> int:
  """Zero: synthetic data has no eval split."""
  del data_config, global_batch_size, process_count
  return 0


def eval_iterator(data_config, *, global_batch_size: int, process_index=None, process_count=None):
  """An empty iterator: synthetic data has no eval split."""
  del data_config, global_batch_size, process_index, process_count
  return iter(())
