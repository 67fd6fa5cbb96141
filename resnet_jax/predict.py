"""Predictions of a trained run on image files: the top classes with their names and probabilities.

The run's own config decides everything: the model, and the evaluation preprocessing of its dataset (centre crop
and resize for 'imagenet', resize to the training size for 'cifar'), normalised with the statistics the run was
trained with. Class names come from the dataset's TFDS label metadata; for ImageNet they are the human-readable
names in resnet_jax/imagenet_classes.tsv.
"""
import os

import jax
import numpy as np
import tensorflow as tf

from resnet_jax.data import datasets, preprocess

IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imagenet_classes.tsv")


def imagenet_names(path: str = IMAGENET_CLASSES) -> list[str]:
  """Human-readable ImageNet class names in TFDS label order, e.g. 'tench (n01440764)'."""
  names = []
  with open(path) as f:
    for line in f:
      synset, _, words = line.rstrip("\n").partition("\t")
      names.append(f"{words.split(',')[0].strip()} ({synset})")
  return names


def class_names(data_config, num_classes: int) -> list[str]:
  """Names of the model's classes: the dataset's label names, 'class <i>' where the dataset has none."""
  names: list[str] = []
  if data_config.name.startswith("imagenet2012"):
    names = imagenet_names()
  elif data_config.name != "synthetic":
    builder = datasets.builder_for(data_config, require_prepared=False)
    names = list(getattr(builder.info.features["label"], "names", None) or [])
  # A config may override the class count (data.num_classes); classes the dataset does not name get a number.
  return [names[i] if i < len(names) else f"class {i}" for i in range(num_classes)]


def load_images(paths, data_config, image_shape):
  """The images at `paths` as the run's evaluation pipeline would feed them: float32 [N, H, W, C], normalised.

  Raises:
    ValueError: a file is missing or is not an image TensorFlow can decode (JPEG, PNG, BMP, GIF).
  """

  check_images(paths)
  size, _, channels = image_shape
  prepare = preprocess.eval_fn(datasets.family(data_config), image_size=size, channels=channels,
                               crop_fraction=data_config.crop_fraction)
  mean, std = datasets.normalization_stats(data_config)
  images = [preprocess.normalize(prepare(tf.io.read_file(path)), mean, std).numpy() for path in paths]
  return np.stack(images).astype(np.float32)


def check_images(paths) -> None:
  """Raises ValueError naming the first path that is not a file, or not an image TensorFlow can decode."""

  for path in paths:
    if not os.path.isfile(path):
      raise ValueError(f"{path}: no such file; give paths of image files (JPEG, PNG, BMP or GIF).")
    try:
      preprocess.decode(tf.io.read_file(path))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
      message = str(error).strip().splitlines()[0]
      raise ValueError(f"{path}: not an image TensorFlow can decode (JPEG, PNG, BMP or GIF): {message}") from None


def probabilities(state, model, images):
  """Softmax class probabilities [N, num_classes] of the restored model (its EMA weights if it kept them)."""

  params = state.params if state.ema_params is None else state.ema_params
  variables = {"params": params, "batch_stats": state.batch_stats}
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  return np.asarray(jax.nn.softmax(logits.astype("float32"), axis=-1))


def format_top_k(path: str, probs, names, k: int) -> str:
  """One image's block: its path, then `k` lines '  <probability>  <class name>', most probable first."""
  order = sorted(range(len(probs)), key=lambda i: -probs[i])[:k]
  return "\n".join([path] + [f"  {probs[i]:.4f}  {names[i]}" for i in order])


def predict(config, workdir: str, paths, *, step: int | None = None, top_k: int = 5) -> str:
  """The report of `experiments.predict`: a header line, then one block per image (see `format_top_k`).

  Raises:
    ValueError: a path is not a decodable image (checked before the checkpoint is restored).
    FileNotFoundError: the run has no committed checkpoint (of that step).
  """
  from resnet_jax import train

  check_images(paths)
  state, parts = train.restore_for_eval(config, workdir, step)
  probs = probabilities(state, parts.eval_model, load_images(paths, config.data, parts.info.image_shape))
  names = class_names(config.data, parts.num_classes)
  blocks = [format_top_k(path, p, names, top_k) for path, p in zip(paths, probs)]
  return "\n".join([f"# {config.model.name} from {workdir}, step {int(state.step)}", *blocks])
