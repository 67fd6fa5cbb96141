r"""Classifies image files with a run's checkpoint: the top classes, with names and probabilities, for each image.

  python -m experiments.predict --workdir=runs/demo photo1.png photo2.jpg [--step=S] [--top_k=5]

The run's own config (WORKDIR/config.json) decides everything: the model, and the evaluation preprocessing of its
dataset (centre crop and resize for 'imagenet', resize to the training size for 'cifar'), normalised with the
statistics the run was trained with. Class names come from the dataset's TFDS label metadata; for ImageNet they
are the human-readable names in resnet_jax/imagenet_classes.tsv. Output, one block per image:

  photo1.png
    0.9123  circle
    0.0412  ring
    ...
"""
import os

from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "Workdir of a training run (required).")
flags.DEFINE_integer("step", None, "Checkpoint step to use (default: the latest complete one).")
flags.DEFINE_integer("top_k", 5, "How many classes to print per image (capped at the number of classes).")
FLAGS = flags.FLAGS

IMAGENET_CLASSES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "resnet_jax",
                                "imagenet_classes.tsv")


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
    from resnet_jax.data import pipeline  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
    builder = pipeline.builder_for(data_config, require_prepared=False)
    names = list(getattr(builder.info.features["label"], "names", None) or [])
  # A config may override the class count (data.num_classes); classes the dataset does not name get a number.
  return [names[i] if i < len(names) else f"class {i}" for i in range(num_classes)]


def load_images(paths, data_config, image_shape):
  """The images at `paths` as the run's evaluation pipeline would feed them: float32 [N, H, W, C], normalised.

  Raises:
    ValueError: a file is missing or is not an image TensorFlow can decode (JPEG, PNG, BMP, GIF).
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import pipeline, preprocess  # pylint: disable=g-import-not-at-top
  from resnet_jax.data.dataset_info import field  # pylint: disable=g-import-not-at-top

  # The same defaults as the input pipeline's.
  family = field(data_config, "preprocess", "imagenet" if data_config.name.startswith("imagenet") else "cifar")
  size, _, channels = image_shape
  prepare = preprocess.eval_fn(family, image_size=size, channels=channels,
                               crop_fraction=field(data_config, "crop_fraction", 0.875))
  mean, std = pipeline.normalization_stats(data_config)
  images = []
  for path in paths:
    if not os.path.isfile(path):
      raise ValueError(f"{path}: no such file; give paths of image files (JPEG, PNG, BMP or GIF).")
    try:
      image = prepare(tf.io.read_file(path))
    except (tf.errors.InvalidArgumentError, ValueError) as error:
      raise ValueError(f"{path}: not an image TensorFlow can decode (JPEG, PNG, BMP or GIF): {error}") from error
    images.append(preprocess.normalize(image, mean, std).numpy())
  return np.stack(images).astype(np.float32)


def probabilities(state, model, images):
  """Softmax class probabilities [N, num_classes] of the restored model (its EMA weights if it kept them)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  params = state.params if state.ema_params is None else state.ema_params
  variables = {"params": params, "batch_stats": state.batch_stats}
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  return np.asarray(jax.nn.softmax(logits.astype("float32"), axis=-1))


def format_top_k(path: str, probs, names, k: int) -> str:
  """One image's block: its path, then `k` lines '  <probability>  <class name>', most probable first."""
  order = sorted(range(len(probs)), key=lambda i: -probs[i])[:k]
  return "\n".join([path] + [f"  {probs[i]:.4f}  {names[i]}" for i in order])


def main(argv):
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required: the workdir of a training run")
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give one or more image files: python -m experiments.predict --workdir=W IMAGE...")
  if FLAGS.top_k < 1:
    raise app.UsageError(f"--top_k must be at least 1, got {FLAGS.top_k}.")
  missing = [path for path in paths if not os.path.isfile(path)]
  if missing:  # Before the minutes a restore can take.
    raise app.UsageError(f"No such file: {', '.join(missing)}")
  from resnet_jax import distributed, reporting, train  # pylint: disable=g-import-not-at-top

  distributed.hide_accelerators_from_tensorflow()
  config = reporting.load_config(FLAGS.workdir)
  state, parts = train.restore_for_eval(config, FLAGS.workdir, FLAGS.step)
  images = load_images(paths, config.data, parts.info.image_shape)
  probs = probabilities(state, parts.eval_model, images)
  names = class_names(config.data, parts.num_classes)
  print(f"# {train.model_name(config.model)} from {FLAGS.workdir}, step {int(state.step)}")
  for path, p in zip(paths, probs):
    print(format_top_k(path, p, names, FLAGS.top_k))


if __name__ == "__main__":
  app.run(main)
