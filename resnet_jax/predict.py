"""Predictions of a trained run: the top classes of image files, and the per-example predictions of its eval split
with the report a person reads (per-class accuracy, confusion matrix, the most confident mistakes).

The run's own config decides everything: the model, and the evaluation preprocessing of its dataset (centre crop
and resize for 'imagenet', resize to the training size for 'cifar'), normalised with the statistics the run was
trained with. Class names come from the dataset's TFDS label metadata (a class folder's folder names); for
ImageNet they are the human-readable names in resnet_jax/imagenet_classes.tsv.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import jax
import numpy as np
import tensorflow as tf

from resnet_jax import results
from resnet_jax.data import datasets, preprocess, tfrecords

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
  prepare, (mean, std) = datasets.eval_transform(data_config)
  images = [preprocess.normalize(prepare(tf.io.read_file(path)), mean, std).numpy() for path in paths]
  images = np.stack(images).astype(np.float32)
  if images.shape[-1] != image_shape[-1]:
    raise ValueError(f"the evaluation transform gives images of {images.shape[1:]}, the model takes "
                     f"{image_shape[-1]} channels")
  return images


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
  from resnet_jax import train

  logits = jax.jit(lambda v, x: model.apply(v, x, train=False))(train.eval_variables(state), images)
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
  from resnet_jax import evaluation

  check_images(paths)
  state, parts = evaluation.restore_for_eval(config, workdir, step)
  probs = probabilities(state, parts.eval_model, load_images(paths, config.data, parts.info.image_shape))
  names = class_names(config.data, parts.num_classes)
  blocks = [format_top_k(path, p, names, top_k) for path, p in zip(paths, probs)]
  return "\n".join([f"# {config.model.name} from {workdir}, step {int(state.step)}", *blocks])


# ----------------------------------------------------------------------------------------------------------------
# Per-example predictions of a checkpoint (evaluation reports)
# ----------------------------------------------------------------------------------------------------------------
class SplitPredictions(NamedTuple):
  """A checkpoint's predictions for every example of `config.data.eval_split`, each once, in stored order."""
  step: int
  metrics: dict[str, float]  # As `evaluate_checkpoint` gives them (same `eval_step`, same batches).
  labels: np.ndarray  # int32 [num_eval]
  probabilities: np.ndarray  # float32 [num_eval, num_classes]: softmax of the logits


def predict_split(config, workdir: str, step: int | None = None) -> SplitPredictions:
  """Exact evaluation of a run's checkpoint that also keeps each example's class probabilities.

  The padded, masked batches of `data.eval_iterator` go through `eval_step`, whose one forward pass gives the
  metrics and each example's probabilities (gathered over the devices); the rows of each process's part are put
  back in the split's stored order and the padding is dropped, so every example appears exactly once.

  Raises:
    FileNotFoundError: the workdir holds no committed checkpoint (of that step).
  """
  from resnet_jax import evaluation, parallel, train

  state, parts = evaluation.restore_for_eval(config, workdir, step)
  strategy = parallel.ShardMap(parallel.data_mesh())
  model = parts.eval_model

  predict_fn = train.make_eval_fn(model, strategy, probabilities=True)
  all_sums, batches = [], []
  for sums, rows in train.eval_outputs(state, predict_fn, strategy, config):
    all_sums.append(sums)
    batches.append(jax.device_get(rows))
  # Rows of a global batch come process by process; each process's part of the split is contiguous and in order.
  processes = jax.process_count()
  kept = {key: [] for key in ("probabilities", "label")}
  for p in range(processes):
    for rows in batches:
      part = {k: np.split(np.asarray(v), processes)[p] for k, v in rows.items()}
      valid = part["mask"] > 0
      for key in kept:
        kept[key].append(part[key][valid])
  labels = np.concatenate(kept["label"]).astype(np.int32)
  if len(labels) != parts.info.num_eval:
    raise RuntimeError(f"evaluation gave {len(labels)} examples, the split has {parts.info.num_eval}")
  return SplitPredictions(int(state.step), {"step": int(state.step), **train.total_metrics(all_sums)},
                          labels, np.concatenate(kept["probabilities"]).astype(np.float32))


# ----------------------------------------------------------------------------------------------------------------
# The evaluation report: per-class accuracy, confusion matrix, the most confident mistakes
# ----------------------------------------------------------------------------------------------------------------
NUM_MISTAKES = 16  # Images in mistakes.png.
PER_CLASS_COLUMNS = ("label", "class", "examples", "correct", "top1", "most_confused_with", "confusions")


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
  """counts[true class, predicted class]."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
  return matrix


def per_class_rows(matrix: np.ndarray, names) -> list[dict]:
  """One row per class: its examples, how many were right (top1: the fraction), and the class most often
  predicted in its place (with that count)."""
  rows = []
  for i, name in enumerate(names):
    total, off = int(matrix[i].sum()), matrix[i].copy()
    off[i] = 0
    j = int(np.argmax(off))
    rows.append({"label": i, "class": name, "examples": total, "correct": int(matrix[i, i]),
                 "top1": float(matrix[i, i] / total) if total else None,
                 "most_confused_with": names[j] if off[j] else None, "confusions": int(off[j])})
  return rows


def most_confident_mistakes(labels, probabilities, count: int = NUM_MISTAKES) -> list[int]:
  """Indices of the wrongly classified examples with the highest probability on their (wrong) prediction."""
  predicted = probabilities.argmax(axis=1)
  wrong = np.flatnonzero(predicted != labels)
  confidence = probabilities[wrong, predicted[wrong]]
  return wrong[np.argsort(-confidence, kind="stable")][:count].tolist()


def eval_images(data_config, indices) -> dict[int, np.ndarray]:
  """{index: the stored image, decoded to RGB uint8} of the eval split's examples `indices` (stored order)."""
  builder = datasets.builder_for(data_config)
  parse = tfrecords.parse_fn(builder)
  wanted, found = set(indices), {}
  if not wanted:
    return found
  records = tfrecords.read_split(builder, datasets.eval_split(data_config, builder)).enumerate()
  for index, record in records.as_numpy_iterator():
    if int(index) in wanted:
      found[int(index)] = preprocess.decode(parse(record)[0], 3).numpy()
      if len(found) == len(wanted):
        break
  return found


def _short(name: str, width: int = 24) -> str:
  return name if len(name) <= width else name[:width - 1] + "…"


def evaluation_report(config, workdir: str, step: int | None = None) -> tuple[dict, list[str]]:
  """Exact evaluation of a run's checkpoint (`predict_split`) with its report, written into `workdir`:
  per_class.csv and per_class.md (accuracy per class, with names), confusion.png (the confusion matrix, named
  axes) and mistakes.png (the `NUM_MISTAKES` most confident mistakes, with true and predicted names).

  Returns:
    (metrics as `evaluation.evaluate_checkpoint` gives them, the paths written).

  Raises:
    FileNotFoundError: the workdir holds no committed checkpoint (of that step).
  """
  from resnet_jax import plots  # matplotlib: only for the report.

  result = predict_split(config, workdir, step)
  names = class_names(config.data, result.probabilities.shape[1])
  predicted = result.probabilities.argmax(axis=1)
  matrix = confusion_matrix(result.labels, predicted, len(names))
  where = (f"{workdir}, step {result.step}, on the {config.data.eval_split!r} split of {config.data.name} "
           f"({len(result.labels)} examples, top-1 {100 * result.metrics['top1']:.2f} %)")
  paths = [os.path.join(workdir, name) for name in ("per_class.csv", "per_class.md", "confusion.png", "mistakes.png")]
  rows = per_class_rows(matrix, names)
  results.write_csv(paths[0], rows, PER_CLASS_COLUMNS)
  results.write_markdown(paths[1], rows, PER_CLASS_COLUMNS,
                         f"Per-class accuracy (top1) of {where}. Written by `python -m experiments.evaluate`.")
  plots.plot_confusion(matrix, names, paths[2], title=f"Confusion matrix, step {result.step}")
  mistakes = most_confident_mistakes(result.labels, result.probabilities)
  images = eval_images(config.data, mistakes)
  titles = [f"true: {_short(names[result.labels[i]])}\npredicted: {_short(names[predicted[i]])} "
            f"({result.probabilities[i, predicted[i]]:.0%})" for i in mistakes]
  plots.plot_mistakes([images[i] for i in mistakes], titles, paths[3],
                      title=f"The {len(mistakes)} most confident mistakes, step {result.step}")
  return result.metrics, paths
