"""resnet_jax.predict and experiments/predict.py: a trained tiny run classifies PNG files written from the shapes
test split.

The PNGs are the dataset's own stored bytes, so the script's preprocessing can be held to the evaluation
pipeline's exactly.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from resnet_jax import config as config_lib
from resnet_jax import evaluation, predict, train
from resnet_jax.data import datasets, shapes, tfrecords
from tests import runs

NUM_IMAGES = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shapes_data_dir, xla_cache_dir):
  """A tiny trained run (the same settings as tests/test_train.py's, so its programs come from the cache)."""
  workdir = str(tmp_path_factory.mktemp("run"))
  train.train_and_evaluate(runs.tiny_config(shapes_data_dir, xla_cache_dir), workdir)
  return workdir


@pytest.fixture(scope="module")
def images(tmp_path_factory, run_dir):
  """(paths, labels) of the first test images, written as the PNG bytes the dataset stores."""
  import tensorflow_datasets as tfds

  config = config_lib.load_run_config(run_dir)
  builder = datasets.builder_for(config.data)
  features = builder.info.features
  directory = tmp_path_factory.mktemp("images")
  paths, labels = [], []
  records = tfrecords.read_split(builder, config.data.eval_split).take(NUM_IMAGES)
  for i, record in enumerate(records):
    example = features.deserialize_example(record, decoders={"image": tfds.decode.SkipDecoding()})
    path = str(directory / f"image{i}.png")
    with open(path, "wb") as f:
      f.write(example["image"].numpy())
    paths.append(path)
    labels.append(int(example["label"]))
  return paths, labels


def _eval_pipeline_probabilities(run_dir):
  """Softmax of the run's model on the first test images as the evaluation pipeline feeds them."""
  from resnet_jax import data
  config = config_lib.load_run_config(run_dir)
  batch = next(iter(data.eval_iterator(config.data, global_batch_size=config.eval_batch_size)))
  state, parts = evaluation.restore_for_eval(config, run_dir)
  return batch, predict.probabilities(state, parts.eval_model, batch["image"][:NUM_IMAGES])


def test_predict_prints_top5_names_and_probabilities(run_dir, images):
  """The script on 1 device (the run trained on 4): top 5 per image, named, sorted, equal to the eval pipeline's."""
  paths, _ = images
  result = subprocess.run([sys.executable, "-m", "experiments.predict", f"--workdir={run_dir}", *paths],
                          cwd=runs.ROOT, env=runs.device_env(1), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  _, want = _eval_pipeline_probabilities(run_dir)
  lines = result.stdout.splitlines()
  assert lines[0] == f"# cifar_resnet20 from {run_dir}, step 6"
  assert len(lines) == 1 + 6 * NUM_IMAGES, result.stdout
  blocks = [lines[i:i + 6] for i in range(1, len(lines), 6)]
  assert [block[0] for block in blocks] == paths
  for block, probs in zip(blocks, want):
    parsed = [re.fullmatch(r"  (\d\.\d{4})  (.+)", line) for line in block[1:]]
    assert all(parsed), block
    printed = [float(m.group(1)) for m in parsed]
    names = [m.group(2) for m in parsed]
    assert printed == sorted(printed, reverse=True)
    assert len(set(names)) == 5 and set(names) <= set(shapes.CLASS_NAMES)
    order = np.argsort(-probs)[:5]
    assert names == [shapes.CLASS_NAMES[i] for i in order]
    np.testing.assert_allclose(printed, probs[order], atol=5e-5 + 1e-7)  # Printed with 4 decimals.


def test_images_are_preprocessed_exactly_like_the_eval_pipeline(run_dir, images):
  paths, labels = images
  config = config_lib.load_run_config(run_dir)
  batch, want = _eval_pipeline_probabilities(run_dir)
  assert list(batch["label"][:NUM_IMAGES]) == labels  # The same examples, in the same order.
  got_images = predict.load_images(paths, config.data, batch["image"].shape[1:])
  np.testing.assert_array_equal(got_images, batch["image"][:NUM_IMAGES])
  state, parts = evaluation.restore_for_eval(config, run_dir)
  probs = predict.probabilities(state, parts.eval_model, got_images)
  assert probs.shape == (NUM_IMAGES, 10)
  np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # Over all classes.
  np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)


def test_format_top_k():
  probs = np.array([0.1, 0.6, 0.05, 0.25])
  text = predict.format_top_k("a.png", probs, ["w", "x", "y", "z"], 3)
  assert text == "a.png\n  0.6000  x\n  0.2500  z\n  0.1000  w"
  assert predict.format_top_k("a.png", probs, list("wxyz"), 10).count("\n") == 4  # Capped at the class count.


def test_class_names(run_dir):
  config = config_lib.load_run_config(run_dir)
  assert predict.class_names(config.data, 10) == list(shapes.CLASS_NAMES)
  # A config that asks for more classes than the dataset names (data.num_classes) numbers the rest.
  assert predict.class_names(config.data, 12)[10:] == ["class 10", "class 11"]
  config.data.name = "synthetic"
  assert predict.class_names(config.data, 3) == ["class 0", "class 1", "class 2"]


def test_imagenet_names_are_in_tfds_label_order():
  """TFDS orders imagenet2012's labels by synset id; the shipped names must follow the same order."""
  with open(predict.IMAGENET_CLASSES) as f:
    synsets = [line.split("\t")[0] for line in f]
  assert len(synsets) == 1000 and synsets == sorted(set(synsets))
  names = predict.imagenet_names()
  assert len(names) == 1000
  assert names[0] == "tench (n01440764)" and names[1] == "goldfish (n01443537)"


def test_bad_image_files_are_clear_errors(tmp_path, run_dir):
  config = config_lib.load_run_config(run_dir)
  with pytest.raises(ValueError, match="nowhere.png: no such file"):
    predict.load_images([str(tmp_path / "nowhere.png")], config.data, (32, 32, 3))
  text = tmp_path / "notes.png"
  text.write_text("not an image")
  with pytest.raises(ValueError, match="notes.png: not an image"):
    predict.load_images([str(text)], config.data, (32, 32, 3))


def test_evaluation_report_names_the_classes_and_counts_every_example_once(run_dir, tmp_path):
  """experiments.evaluate's report: metrics equal the engine's exact evaluation; per_class.csv and the confusion
  matrix count each of the split's examples once under the dataset's class names; mistakes.png shows the most
  confident wrong predictions, titled with true and predicted names; the PNG files are real images."""
  import csv
  import shutil

  from PIL import Image

  from resnet_jax import plots

  workdir = str(tmp_path / "run")
  shutil.copytree(run_dir, workdir)
  config = config_lib.load_run_config(workdir)
  metrics, written = predict.evaluation_report(config, workdir)
  want = evaluation.evaluate_checkpoint(config, workdir)
  assert metrics["step"] == want["step"] and abs(metrics["top1"] - want["top1"]) < 1e-6
  assert abs(metrics["loss"] - want["loss"]) < 1e-4
  assert sorted(os.path.basename(p) for p in written) == ["confusion.png", "mistakes.png", "per_class.csv",
                                                         "per_class.md"]
  with open(os.path.join(workdir, "per_class.csv")) as f:
    rows = list(csv.DictReader(f))
  num_eval = datasets.builder_for(config.data).info.splits[config.data.eval_split].num_examples
  assert [r["class"] for r in rows] == list(shapes.CLASS_NAMES)
  assert sum(int(r["examples"]) for r in rows) == num_eval
  assert abs(sum(int(r["correct"]) for r in rows) / num_eval - metrics["top1"]) < 1e-9
  assert "circle" in open(os.path.join(workdir, "per_class.md")).read()
  for name in ("confusion.png", "mistakes.png"):
    with Image.open(os.path.join(workdir, name)) as image:
      assert image.format == "PNG" and min(image.size) > 200

  split = predict.predict_split(config, workdir)
  matrix = predict.confusion_matrix(split.labels, split.probabilities.argmax(1), 10)
  assert matrix.sum() == num_eval and np.trace(matrix) == sum(int(r["correct"]) for r in rows)
  figure = plots.plot_confusion(matrix, list(shapes.CLASS_NAMES), str(tmp_path / "c.png"))
  assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == list(shapes.CLASS_NAMES)
  mistakes = predict.most_confident_mistakes(split.labels, split.probabilities)
  predicted = split.probabilities.argmax(1)
  assert mistakes and all(predicted[i] != split.labels[i] for i in mistakes)
  confidence = [split.probabilities[i, predicted[i]] for i in mistakes]
  assert confidence == sorted(confidence, reverse=True)
  images = predict.eval_images(config.data, mistakes[:2])
  assert all(images[i].shape == (32, 32, 3) and images[i].dtype == np.uint8 for i in mistakes[:2])
