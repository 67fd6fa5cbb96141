"""Class folders as datasets (resnet_jax/data/folder.py, `config.data.name='folder:PATH'`): both layouts, every image
kind, the pipeline's guarantees on them, changed folders, bad input, and datasets written out as class folders.

Every folder is written here with Pillow: small random images of varied sizes in tmp dirs.
"""
import collections
import hashlib
import logging
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from resnet_jax import data
from resnet_jax.data import datasets, folder, tfrecords
from tests import runs

# name suffix -> (Pillow format, Pillow mode before saving)
KINDS = {"rgb.jpg": ("JPEG", "RGB"), "rgb.png": ("PNG", "RGB"), "rgb.bmp": ("BMP", "RGB"), "palette.gif": ("GIF", "P"),
         "gray.png": ("PNG", "L"), "rgba.png": ("PNG", "RGBA"), "gray.jpg": ("JPEG", "L"), "cmyk.jpg": ("JPEG", "CMYK")}
# Stored as they are (TensorFlow decodes a CMYK JPEG to RGB itself); every other kind is converted to an RGB PNG.
KEPT = ("rgb.jpg", "rgb.png", "cmyk.jpg")


def write_image(path, kind, size, rng):
  fmt, mode = KINDS[kind]
  pixels = rng.integers(0, 256, (*size, 4), dtype=np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels, "RGBA").convert(mode).save(path, fmt)


def make_folder(root, layout, classes=("cat", "dog", "owl"), per_class=None, sizes=None, seed=0):
  """Writes root/<split>/<class>/<image> ('splits') or root/<class>/<image> ('classes'); every image kind in every
  class, at sizes drawn from `sizes` (default: varied, 5-40 px a side)."""
  rng = np.random.default_rng(seed)
  splits = ("train", "test") if layout == "splits" else ("",)
  for split in splits:
    for c in classes:
      for i in range(per_class or len(KINDS)):
        kind = list(KINDS)[i % len(KINDS)]
        size = tuple(sizes) if sizes else tuple(rng.integers(5, 40, 2))
        write_image(os.path.join(root, split, c, f"{i:03d}_{kind}"), kind, size, rng)
  return str(root)


def _config(root, data_dir, **overrides):
  return runs.data_config(**{**dict(name=f"folder:{root}", data_dir=str(data_dir), preprocess="cifar", image_size=16,
                                    eval_split="test", cache=True), **overrides})


def _stored(builder, split):
  """{file_name: (image bytes, label)} of a prepared split."""
  features = builder.info.features
  out = {}
  for record in tfrecords.read_split(builder, split).as_numpy_iterator():
    example = features.deserialize_example(record, decoders={"image": tfds.decode.SkipDecoding()})
    out[example["file_name"].numpy().decode()] = (example["image"].numpy(), int(example["label"]))
  return out


@pytest.fixture(autouse=True)
def _fresh_checks():
  folder._FRESH.clear()  # Each test sees its folders' changes (the check is cached per process).
  yield
  folder._FRESH.clear()


def test_split_layout_stores_every_image_kind_as_rgb(tmp_path):
  root = make_folder(tmp_path / "photos", "splits")
  builder = datasets.prepare(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  assert builder.info.features["label"].names == ["cat", "dog", "owl"]
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 24, "test": 24}
  assert builder.info.features["image"].shape == (None, None, 3)  # Sizes vary.
  assert builder.info.metadata["root"] == root
  stored = _stored(builder, "train")
  assert len(stored) == 24
  for name, (image, label) in stored.items():
    path = os.path.join(root, name)
    kind = name.split("_", 1)[1]
    assert label == ["cat", "dog", "owl"].index(name.split("/")[1])
    original = open(path, "rb").read()
    if kind in KEPT:
      assert image == original, name  # JPEG and RGB PNG bytes as they are.
    else:
      assert image.startswith(b"\x89PNG"), name
    decoded = tf.io.decode_image(image, expand_animations=False).numpy()
    assert decoded.shape[-1] == 3, name
    # The stored pixels are what TensorFlow's decoder gives for the original file (so prediction on it agrees).
    np.testing.assert_array_equal(decoded, tf.io.decode_image(original, channels=3, expand_animations=False).numpy(),
                                  err_msg=name)


def test_every_example_is_evaluated_once_and_training_streams(tmp_path):
  root = make_folder(tmp_path / "photos", "splits")
  datasets.prepare(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  for preprocess in ("cifar", "imagenet"):
    config = _config(root, tmp_path / "tfds", preprocess=preprocess)
    info = data.info(config)
    assert info == data.DatasetInfo(num_classes=3, num_train=24, num_eval=24, image_shape=(16, 16, 3))
    batches = list(data.eval_iterator(config, global_batch_size=10, process_index=0, process_count=1))
    assert [int(b["mask"].sum()) for b in batches] == [10, 10, 4]
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    assert collections.Counter(labels.tolist()) == {0: 8, 1: 8, 2: 8}
    stream = data.train_iterator(config, global_batch_size=8, seed=0, process_index=0, process_count=1)
    first = [next(stream) for _ in range(4)]
    resumed = next(data.train_iterator(config, global_batch_size=8, seed=0, start_step=3, process_index=0,
                                       process_count=1))
    np.testing.assert_array_equal(resumed["image"], first[3]["image"])  # Exact resume.
    assert first[0]["image"].shape == (8, 16, 16, 3)


def test_varying_sizes_need_an_image_size(tmp_path):
  root = make_folder(tmp_path / "photos", "splits")
  datasets.prepare(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ValueError, match=r"varying \(or not square\) size: set config.data.image_size"):
    data.info(_config(root, tmp_path / "tfds", image_size=None))


def test_images_of_one_square_size_need_none_and_choose_the_family(tmp_path):
  root = make_folder(tmp_path / "photos", "splits", sizes=(12, 12))
  datasets.prepare(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  config = _config(root, tmp_path / "tfds", image_size=None, preprocess=None)
  assert data.info(config).image_shape == (12, 12, 3)
  assert datasets.family(config) == "cifar"  # Under 64 px.
  big = make_folder(tmp_path / "big", "splits", classes=("a", "b"), per_class=2, sizes=(64, 64))
  datasets.prepare(f"folder:{big}", data_dir=str(tmp_path / "tfds"))
  assert datasets.family(_config(big, tmp_path / "tfds", image_size=None, preprocess=None)) == "imagenet"


def test_flat_layout_holds_out_files_by_a_hash_of_their_name(tmp_path):
  root = make_folder(tmp_path / "photos", "classes", per_class=40)
  data_dir = str(tmp_path / "tfds")
  builder = datasets.prepare(f"folder:{root}", data_dir=data_dir)
  assert set(builder.info.splits) == {"train", "validation"}
  held = set(_stored(builder, "validation"))
  want = {os.path.join(c, n) for c in ("cat", "dog", "owl") for n in os.listdir(os.path.join(root, c))
          if int(hashlib.sha256(n.encode()).hexdigest(), 16) % 100 < folder.HELD_OUT_PERCENT}
  assert held == want and 0 < len(held) < 40
  assert set(_stored(builder, "train")).isdisjoint(held)
  # More files later: the held-out files stay held out (a file never changes sides).
  rng = np.random.default_rng(7)
  for i in range(20):
    write_image(os.path.join(root, "cat", f"new{i}_rgb.png"), "rgb.png", (8, 8), rng)
  with pytest.raises(ValueError, match="changed since it was prepared"):
    datasets.prepare(f"folder:{root}", data_dir=data_dir)
  shutil.rmtree(folder.prepared_dir(root, data_dir))
  again = set(_stored(datasets.prepare(f"folder:{root}", data_dir=data_dir), "validation"))
  assert held <= again


def test_a_changed_folder_is_refused_with_what_changed_and_how_to_prepare_it(tmp_path):
  root = make_folder(tmp_path / "photos", "splits", per_class=2)
  data_dir = str(tmp_path / "tfds")
  datasets.prepare(f"folder:{root}", data_dir=data_dir)
  data.info(_config(root, data_dir))  # Unchanged: fine.
  folder._FRESH.clear()
  os.remove(os.path.join(root, "test", "cat", "000_rgb.jpg"))
  write_image(os.path.join(root, "train", "dog", "extra.png"), "rgb.png", (8, 8), np.random.default_rng(1))
  directory = folder.prepared_dir(root, data_dir)
  with pytest.raises(ValueError, match=rf"(?s)folder:{root} changed since it was prepared .*added: "
                                       rf"train/dog/extra.png; removed: test/cat/000_rgb.jpg.*rm -r {directory}"):
    data.info(_config(root, data_dir))


def test_two_folders_of_one_name_never_share_a_dataset(tmp_path):
  a = make_folder(tmp_path / "a" / "photos", "splits", classes=("x", "y"), per_class=1)
  b = make_folder(tmp_path / "b" / "photos", "splits", classes=("p", "q", "r"), per_class=1)
  data_dir = str(tmp_path / "tfds")
  names = [datasets.prepare(f"folder:{r}", data_dir=data_dir).info.features["label"].names for r in (a, b)]
  assert names == [["x", "y"], ["p", "q", "r"]]
  assert folder.config_name(a) != folder.config_name(b) and folder.config_name(a).startswith("photos_")
  assert data.info(_config(a, data_dir)).num_classes == 2 and data.info(_config(b, data_dir)).num_classes == 3


def test_files_that_are_not_images_are_left_out_and_named(tmp_path, caplog):
  root = make_folder(tmp_path / "photos", "splits", per_class=2)
  (tmp_path / "photos" / "train" / "cat" / "notes.txt").write_text("not an image")
  (tmp_path / "photos" / "test" / "owl" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  with caplog.at_level(logging.WARNING):
    builder = datasets.prepare(f"folder:{root}", data_dir=str(tmp_path / "tfds"))
  message = " ".join(r.getMessage() for r in caplog.records)
  assert "left out 2 files that are not images" in message
  assert "test/owl/broken.jpg" in message and "train/cat/notes.txt" in message
  assert builder.info.metadata["not_images"] == ["test/owl/broken.jpg", "train/cat/notes.txt"]
  assert builder.info.splits["train"].num_examples == 6


def _empty_class(root):
  make_folder(root, "splits", per_class=1)
  shutil.rmtree(os.path.join(root, "test", "owl"))
  os.makedirs(os.path.join(root, "test", "owl"))
  open(os.path.join(root, "test", "owl", "readme.txt"), "w").write("later")


def _classes_differ(root):
  make_folder(root, "splits", per_class=1)
  shutil.rmtree(os.path.join(root, "test", "dog"))


def _no_images(root):
  for c in ("a", "b"):
    os.makedirs(os.path.join(root, c))
    open(os.path.join(root, c, "notes.txt"), "w").write("text")


def _one_class(root):
  make_folder(root, "classes", classes=("only",), per_class=2)


def _images_at_the_top(root):
  os.makedirs(root)
  write_image(os.path.join(root, "a.png"), "rgb.png", (4, 4), np.random.default_rng(0))


def _mixed(root):
  make_folder(root, "classes", classes=("cat",), per_class=1)
  make_folder(os.path.join(root, "train"), "classes", classes=("dog",), per_class=1)


def _a_file(root):
  open(root, "w").write("a file")


BAD_FOLDERS = [
    (None, FileNotFoundError, r"photos: no such folder; give a folder holding PATH/<class>/<image>"),
    (_a_file, ValueError, r"photos is a file; give a folder"),
    (_images_at_the_top, ValueError, r"has no class folders \(it holds 1 files directly\)"),
    (_empty_class, ValueError, r"empty class folder .*photos/test/owl: it holds no images \(JPEG, PNG, BMP or GIF\) "
                               r"\(1 files that are not images\); add images or remove the folder"),
    (_classes_differ, ValueError, r"the classes differ between the splits of .*: test has no class folder dog "
                                  r"\(found in train\)"),
    (_no_images, ValueError, r"holds no images \(JPEG, PNG, BMP or GIF\) in its class folders"),
    (_one_class, ValueError, r"has one class \(only\); a classifier needs at least two class folders"),
    (_mixed, ValueError, r"mixes split folders \(train: they hold folders\) with class folders \(cat"),
]


@pytest.mark.parametrize("make, error, message", BAD_FOLDERS, ids=[m.__name__ if m else "missing"
                                                                   for m, _, _ in BAD_FOLDERS])
def test_bad_folders_say_what_to_do_and_create_nothing(tmp_path, make, error, message):
  root = str(tmp_path / "photos")
  if make:
    make(root)
  data_dir = tmp_path / "tfds"
  data_dir.mkdir()
  with pytest.raises(error, match=message):
    datasets.prepare(f"folder:{root}", data_dir=str(data_dir))  # As training does on first use.
  if make in (None, _a_file):
    with pytest.raises(error, match=message):
      data.info(_config(root, data_dir))
  assert os.listdir(data_dir) == []


def test_not_prepared_gives_the_command_and_builder_configs_are_refused(tmp_path):
  root = make_folder(tmp_path / "photos", "splits", per_class=1)
  command = f"python -m experiments.prepare_data --dataset=folder:{root}"
  with pytest.raises(ValueError, match=rf"(?s)not prepared.*{command}"):
    data.info(_config(root, tmp_path / "tfds"))
  with pytest.raises(ValueError, match="has no builder configs; unset config.data.builder_config"):
    data.info(_config(root, tmp_path / "tfds", builder_config="small"))
  assert datasets.prepared_on_first_use(f"folder:{root}") and datasets.prepared_on_first_use("shapes/px16")
  assert not datasets.prepared_on_first_use("cifar10")


def test_export_writes_class_folders_that_read_back_as_the_same_images(tmp_path, shapes_data_dir):
  out = tmp_path / "photos" / "train"
  summary = datasets.export_images("shapes", builder_config="small", data_dir=shapes_data_dir, split="train",
                               out=str(out), per_class=3)
  assert summary.startswith("Wrote 30 images of the 'train' split of shapes to")
  from resnet_jax.data import shapes
  assert sorted(os.listdir(out)) == sorted(shapes.CLASS_NAMES)
  assert all(len(os.listdir(out / c)) == 3 for c in shapes.CLASS_NAMES)
  builder = datasets.prepare(f"folder:{tmp_path / 'photos'}", data_dir=str(tmp_path / "tfds"))
  source = datasets.get_builder("shapes", "small", shapes_data_dir)
  originals = list(tfrecords.read_split(source, "train").map(tfrecords.parse_fn(source)).take(200)
                   .as_numpy_iterator())
  for name, (image, label) in _stored(builder, "train").items():
    index = int(name.split("_")[-1].split(".")[0])
    assert image == originals[index][0]  # The stored PNG bytes, unchanged.
    assert builder.info.features["label"].names[label] == shapes.CLASS_NAMES[originals[index][1]]
  with pytest.raises(ValueError, match="exists and is not an empty folder"):
    datasets.export_images("shapes", builder_config="small", data_dir=shapes_data_dir, split="train", out=str(out),
                       per_class=3)
  with pytest.raises(ValueError, match="per_class must be at least 1"):
    datasets.export_images("shapes", builder_config="small", data_dir=shapes_data_dir, split="train",
                       out=str(tmp_path / "other"), per_class=0)
  assert not os.path.exists(tmp_path / "other")


def test_export_of_some_classes(tmp_path, shapes_data_dir):
  out = tmp_path / "some"
  summary = datasets.export_images("shapes", builder_config="small", data_dir=shapes_data_dir, split="test",
                                   out=str(out), per_class=2, classes=["star", "circle"])
  assert summary.endswith("circle 2, star 2.")
  assert sorted(os.listdir(out)) == ["circle", "star"]
  for bad, message in ((["circle", "oval"], "no class 'oval' in this dataset; its classes are circle, "),
                       (["star", "star"], "classes repeats a class")):
    with pytest.raises(ValueError, match=message):
      datasets.export_images("shapes", builder_config="small", data_dir=shapes_data_dir, split="test",
                             out=str(tmp_path / "bad"), per_class=2, classes=bad)
    assert not os.path.exists(tmp_path / "bad")


def test_the_one_held_out_split_is_found_whatever_its_name(tmp_path, caplog):
  """train/ and val/: a config that asks for 'test' (or 'validation') evaluates on 'val' and says so; with two
  held-out splits and neither asked for, the error names them."""
  root = make_folder(tmp_path / "photos", "splits", per_class=2)
  os.rename(os.path.join(root, "test"), os.path.join(root, "val"))
  config = _config(root, tmp_path / "tfds")
  data.prepare_on_first_use(config)
  datasets._SPLITS_TAKEN.clear()
  with caplog.at_level(logging.INFO):
    info = data.info(config)
  assert info.num_eval == 6
  assert "has no split 'test' (config.data.eval_split); evaluating on its one held-out split, 'val'" in caplog.text
  batches = list(data.eval_iterator(config, global_batch_size=4, process_index=0, process_count=1))
  assert sum(int(b["mask"].sum()) for b in batches) == 6

  two = make_folder(tmp_path / "two", "splits", per_class=2)
  shutil.copytree(os.path.join(two, "test"), os.path.join(two, "valid"))
  config = _config(two, tmp_path / "tfds", eval_split="validation")
  data.prepare_on_first_use(config)
  with pytest.raises(ValueError, match=r"Unknown split 'validation' .* \['test', 'train', 'valid'\]"):
    data.info(config)
