"""ImageNet through TFDS's imagenet2012 builder, end to end on tiny fake ILSVRC2012 tars in the real layout."""
import io
import os
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import flags

from experiments import prepare_data
from resnet_jax import data
from resnet_jax.data import datasets
from tests import runs

# First, second and last synsets in TFDS's label order: labels 0, 1 and 999.
SYNSETS = ("n01440764", "n01443537", "n15075141")
IMAGES_PER_SYNSET = 3
NUM_VAL = 5


def _tfds_file(name):
  return os.path.join(os.path.dirname(tfds.__file__), "datasets", "imagenet2012", name)


def _synset_order():
  with open(_tfds_file("labels.txt")) as f:
    return f.read().split()


def _validation_synsets():
  """The builder labels the i-th validation image (sorted by file name) with line i of the file it ships."""
  with open(_tfds_file("validation_labels.txt")) as f:
    return f.read().split()[:NUM_VAL]


def _jpeg(rng):
  height, width = rng.integers(48, 120, 2)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return tf.io.encode_jpeg(image, quality=90).numpy()


def _add(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _write_fake_ilsvrc(manual_dir):
  """ILSVRC2012_img_train.tar (one tar of JPEGs per synset) and ILSVRC2012_img_val.tar (flat JPEGs)."""
  rng = np.random.default_rng(0)
  with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as train:
    for synset in SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as per_synset:
        for i in range(IMAGES_PER_SYNSET):
          _add(per_synset, f"{synset}_{i + 1}.JPEG", _jpeg(rng))
      _add(train, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as val:
    for i in range(NUM_VAL):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _jpeg(rng))


def test_fake_imagenet_round_trip(tmp_path, capsys):
  manual_dir = tmp_path / "manual"
  manual_dir.mkdir()
  _write_fake_ilsvrc(manual_dir)
  data_dir = tmp_path / "tfds"
  # The script's main, in this process (a subprocess would spend most of its time importing TensorFlow again).
  flags.FLAGS(["prepare_data", "--dataset=imagenet2012", f"--manual_dir={manual_dir}", f"--data_dir={data_dir}"])
  try:
    prepare_data.main(["prepare_data"])
  finally:
    flags.FLAGS.unparse_flags()
  assert "imagenet2012/5.1.0 train: 9 examples" in capsys.readouterr().out

  # Labels follow TFDS's synset order (labels.txt), validation labels its validation_labels.txt.
  order = _synset_order()
  builder = tfds.builder("imagenet2012", data_dir=str(data_dir))
  train = {e["file_name"].decode(): int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="train"))}
  assert train == {f"{s}_{i + 1}.JPEG": order.index(s) for s in SYNSETS for i in range(IMAGES_PER_SYNSET)}
  assert sorted(set(train.values())) == [0, 1, 999]
  val = {e["file_name"].decode(): int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="validation"))}
  expected_val = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": order.index(s) for i, s in enumerate(_validation_synsets())}
  assert val == expected_val

  # The project's pipelines read it with ImageNet preprocessing.
  config = runs.data_config(name="imagenet2012", data_dir=str(data_dir), image_size=32, shuffle_buffer=4,
                            num_parallel_calls=2)
  assert data.info(config) == data.DatasetInfo(1000, 9, 5, (32, 32, 3))
  batches = list(data.eval_iterator(config, global_batch_size=2, process_index=0, process_count=1))
  assert len(batches) == 3
  labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
  assert sorted(labels.tolist()) == sorted(expected_val.values())
  iterator = data.train_iterator(config, global_batch_size=3, seed=0, process_index=0, process_count=1)
  epoch = [next(iterator) for _ in range(3)]
  assert all(b["image"].shape == (3, 32, 32, 3) and b["image"].dtype == np.float32 for b in epoch)
  assert sorted(np.concatenate([b["label"] for b in epoch]).tolist()) == sorted(train.values())


def test_imagenet_needs_a_manual_dir(tmp_path):
  with pytest.raises(ValueError, match="--manual_dir"):
    datasets.prepare("imagenet2012", data_dir=str(tmp_path))


def test_missing_imagenet_gives_the_prepare_command(tmp_path):
  config = runs.data_config(name="imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="(?s)not prepared.*--dataset=imagenet2012 .*--manual_dir="):
    data.info(config)
