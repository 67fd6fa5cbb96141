"""What the model and the engine need to know about a dataset (importable without TensorFlow)."""
from typing import NamedTuple


class DatasetInfo(NamedTuple):
  """Sizes of a dataset as the model sees it.

  Attributes:
    num_classes: number of output classes (the config's override when set).
    num_train: examples in the training split.
    num_eval: examples in the evaluation split.
    image_shape: (height, width, channels) of a preprocessed image.
  """
  num_classes: int
  num_train: int
  num_eval: int
  image_shape: tuple[int, int, int]


def steps_per_epoch(num_train: int, global_batch_size: int) -> int:
  """Training batches per epoch (the remainder of an epoch is dropped): what the engine plans with and what the
  input pipeline yields."""
  steps = num_train // global_batch_size
  if steps == 0:
    raise ValueError(f"The global batch size ({global_batch_size}) exceeds the training split ({num_train} "
                     "examples): lower config.batch_size.")
  return steps
