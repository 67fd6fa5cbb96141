"""Input data: TFDS datasets (ImageNet, CIFAR, the built-in `shapes`, class folders), preprocessing and device feeding.

Public API (see pipeline.py for the design: sharding, deterministic order, exact resume, exact evaluation):
  prepare_on_first_use(data_config): generates the built-in dataset, or prepares a class folder, on first use
  info(data_config) -> DatasetInfo(num_classes, num_train, num_eval, image_shape)
  train_stream(data_config, *, global_batch_size, seed, start_step=0, start_position=None, process_index=None,
               process_count=None) -> iterator of (batch, position); train_iterator(...) -> batches
  eval_iterator(data_config, *, global_batch_size, process_index=None, process_count=None)
  num_eval_steps(data_config, *, global_batch_size, process_count=None)
  synthetic.train_iterator(...): batches drawn on the devices, no TensorFlow.
Preparing and exporting datasets is `datasets.prepare(name, ...)`, `datasets.prepared_on_first_use(name)` and
`datasets.export_images(name, ...)` (import `resnet_jax.data.datasets`).

Modules: `datasets` (TFDS builders, splits, sizes, normalisation statistics), `tfrecords` (a prepared split's stored
records), `pipeline` (training and evaluation batches), `preprocess` (decoding and augmentation), `shapes` (the
built-in dataset), `folder` (`folder:PATH`, images in class folders), `synthetic`.

Importing this package imports neither TFDS nor TensorFlow: the TFDS modules (`datasets`, which registers the
built-in `shapes` builder, and `pipeline`) are imported inside the functions above, only for TFDS datasets, so
that runs on `config.data.name='synthetic'` and the benchmark never import them.
"""
from resnet_jax.data import synthetic
from resnet_jax.data.dataset_info import DatasetInfo

__all__ = ["DatasetInfo", "prepare_on_first_use", "info", "train_stream", "train_iterator", "eval_iterator",
           "num_eval_steps", "synthetic"]


def _is_synthetic(data_config) -> bool:
  return data_config.name == synthetic.NAME


def prepare_on_first_use(data_config) -> None:
  """Prepares a dataset that needs no download (the built-in `shapes`, class folders) unless it is prepared (see
  `datasets.prepare`); any other dataset is left as it is."""
  if _is_synthetic(data_config):
    return
  from resnet_jax.data import datasets  # TensorFlow: only for TFDS datasets.
  if datasets.prepared_on_first_use(data_config.name):
    datasets.prepare(data_config.name, builder_config=data_config.builder_config, data_dir=data_config.data_dir)


def info(data_config) -> DatasetInfo:
  """Number of classes, split sizes and preprocessed image shape (see `datasets.info`)."""
  if _is_synthetic(data_config):
    return synthetic.info(data_config)
  from resnet_jax.data import datasets  # TensorFlow: only for TFDS datasets.
  return datasets.info(data_config)


def train_stream(data_config, *, global_batch_size: int, seed: int, start_step: int = 0, start_position=None,
                 process_index=None, process_count=None):
  """Infinite iterator of (batch, position) of this process's training stream, exactly resumable from a step and
  the position a run reported there (see `pipeline.train_stream`; synthetic data has no position: None)."""
  if _is_synthetic(data_config):
    batches = synthetic.host_train_iterator(data_config, global_batch_size=global_batch_size, seed=seed,
                                            start_step=start_step, process_index=process_index,
                                            process_count=process_count)
    return ((batch, None) for batch in batches)
  from resnet_jax.data import pipeline  # TensorFlow: only for TFDS datasets.
  return pipeline.train_stream(data_config, global_batch_size=global_batch_size, seed=seed, start_step=start_step,
                               start_position=start_position, process_index=process_index,
                               process_count=process_count)


def train_iterator(data_config, **kwargs):
  """Infinite iterator of this process's training batches, exactly resumable (see `train_stream`)."""
  return (batch for batch, _ in train_stream(data_config, **kwargs))


def eval_iterator(data_config, *, global_batch_size: int, process_index=None, process_count=None):
  """This process's padded, masked evaluation batches (see `pipeline.eval_iterator`)."""
  if _is_synthetic(data_config):
    make = synthetic.eval_iterator
  else:
    from resnet_jax.data import pipeline  # TensorFlow: only for TFDS datasets.
    make = pipeline.eval_iterator
  return make(data_config, global_batch_size=global_batch_size, process_index=process_index,
              process_count=process_count)


def num_eval_steps(data_config, *, global_batch_size: int, process_count=None) -> int:
  """Evaluation batches per process, the same on every process (see `pipeline.num_eval_steps`)."""
  if _is_synthetic(data_config):
    count = synthetic.num_eval_steps
  else:
    from resnet_jax.data import pipeline  # TensorFlow: only for TFDS datasets.
    count = pipeline.num_eval_steps
  return count(data_config, global_batch_size=global_batch_size, process_count=process_count)
