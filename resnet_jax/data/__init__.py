"""Input data: TFDS datasets (ImageNet, CIFAR, the built-in `shapes`, class folders), preprocessing and device feeding.

Public API (see pipeline.py for the design: sharding, deterministic order, exact resume, exact evaluation):
  info(data_config) -> DatasetInfo(num_classes, num_train, num_eval, image_shape)
  train_stream(data_config, *, global_batch_size, seed, start_step=0, start_position=None, process_index=None,
               process_count=None) -> iterator of (batch, position); train_iterator(...) -> batches
  eval_iterator(data_config, *, global_batch_size, process_index=None, process_count=None)
  num_eval_steps(data_config, *, global_batch_size, process_count=None)
  prepare(name, *, builder_config=None, data_dir=None, manual_dir=None); prepared_on_first_use(name)
  export_images(name, *, builder_config=None, data_dir=None, split, out, per_class): a split as class folders
  synthetic.train_iterator(...): batches drawn on the devices, no TensorFlow.

Modules: `datasets` (TFDS builders, splits, sizes, normalisation statistics), `pipeline` (training and evaluation
batches), `preprocess` (decoding and augmentation), `shapes` (the built-in dataset), `folder` (`folder:PATH`, images
in class folders), `synthetic`.

Importing this package registers the TFDS builder `shapes` (TFDS is imported, TensorFlow is not). The TFDS
pipelines need TensorFlow and are loaded on first use, so that `import resnet_jax.data.synthetic`, and runs on
`config.data.name='synthetic'`, never import it.
"""
import importlib

from resnet_jax.data import (
  shapes,  # Registers the `shapes` builder with TFDS.
  synthetic,
)
from resnet_jax.data.dataset_info import DatasetInfo

_DATASET_FUNCTIONS = ("prepare", "get_builder", "normalization_stats", "prepared_on_first_use", "export_images")
_SUBMODULES = ("datasets", "pipeline", "preprocess", "dataset_info", "folder")

__all__ = ["DatasetInfo", "info", "train_iterator", "eval_iterator", "num_eval_steps", *_DATASET_FUNCTIONS,
           "shapes", "synthetic", *_SUBMODULES]


def _pipeline():
  return importlib.import_module("resnet_jax.data.pipeline")


def _datasets():
  return importlib.import_module("resnet_jax.data.datasets")


def _is_synthetic(data_config) -> bool:
  return data_config.name == synthetic.NAME


def info(data_config) -> DatasetInfo:
  """Number of classes, split sizes and preprocessed image shape (see `datasets.info`)."""
  return synthetic.info(data_config) if _is_synthetic(data_config) else _datasets().info(data_config)


def train_stream(data_config, *, global_batch_size: int, seed: int, start_step: int = 0, start_position=None,
                 process_index=None, process_count=None):
  """Infinite iterator of (batch, position) of this process's training stream, exactly resumable from a step and
  the position a run reported there (see `pipeline.train_stream`; synthetic data has no position: None)."""
  if _is_synthetic(data_config):
    batches = synthetic.host_train_iterator(data_config, global_batch_size=global_batch_size, seed=seed,
                                            start_step=start_step, process_index=process_index,
                                            process_count=process_count)
    return ((batch, None) for batch in batches)
  return _pipeline().train_stream(data_config, global_batch_size=global_batch_size, seed=seed, start_step=start_step,
                                  start_position=start_position, process_index=process_index,
                                  process_count=process_count)


def train_iterator(data_config, **kwargs):
  """Infinite iterator of this process's training batches, exactly resumable (see `train_stream`)."""
  return (batch for batch, _ in train_stream(data_config, **kwargs))


def eval_iterator(data_config, *, global_batch_size: int, process_index=None, process_count=None):
  """This process's padded, masked evaluation batches (see `pipeline.eval_iterator`)."""
  make = synthetic.eval_iterator if _is_synthetic(data_config) else _pipeline().eval_iterator
  return make(data_config, global_batch_size=global_batch_size, process_index=process_index,
              process_count=process_count)


def num_eval_steps(data_config, *, global_batch_size: int, process_count=None) -> int:
  """Evaluation batches per process, the same on every process (see `pipeline.num_eval_steps`)."""
  count = synthetic.num_eval_steps if _is_synthetic(data_config) else _pipeline().num_eval_steps
  return count(data_config, global_batch_size=global_batch_size, process_count=process_count)


def __getattr__(name):
  if name in _DATASET_FUNCTIONS:
    return getattr(_datasets(), name)
  if name in _SUBMODULES:
    return importlib.import_module(f"resnet_jax.data.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
