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
