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


def field(data_config, key: str, default=None):
  """`data_config.key`, or `default` when the field is absent or None (configs and plain dicts alike)."""
  value = data_config.get(key, None) if hasattr(data_config, "get") else getattr(data_config, key, None)
  return default if value is None else value
