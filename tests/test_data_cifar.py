"""CIFAR-10 through TFDS's own cifar10 builder, prepared from tiny fake batch files in the real binary format.

Only the download is replaced (TFDS's `mock_data` would replace `as_dataset`, which this pipeline does not call: it
reads the prepared TFRecord files itself to control the order).
"""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from resnet_jax import data
from resnet_jax.data import datasets, preprocess
from tests import runs

TRAIN_PER_FILE = 8  # 5 training files: 40 examples.
NUM_TEST = 10
LABEL_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _write_batch(path, labels, rng):
  # Each record: one label byte, then 1024 red, 1024 green and 1024 blue bytes.
  records = [np.concatenate([[label], rng.integers(0, 256, 3072)]).astype(np.uint8) for label in labels]
  path.write_bytes(np.concatenate(records).tobytes())


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("cifar")
  batches = root / "extracted" / "cifar-10-batches-bin"
  batches.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for i in range(5):
    _write_batch(batches / f"data_batch_{i + 1}.bin", [(i * TRAIN_PER_FILE + j) % 10 for j in range(TRAIN_PER_FILE)],
                 rng)
  _write_batch(batches / "test_batch.bin", list(range(NUM_TEST)), rng)
  (batches / "batches.meta.txt").write_text("\n".join(LABEL_NAMES) + "\n")
  data_dir = root / "tfds"
  mp = pytest.MonkeyPatch()
  mp.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, url: str(root / "extracted"))
  try:
    datasets.prepare("cifar10", data_dir=str(data_dir))
  finally:
    mp.undo()
  return str(data_dir)


def _config(data_dir):
  return runs.data_config(name="cifar10", data_dir=data_dir, preprocess="cifar", image_size=32, eval_split="test",
                          shuffle_buffer=16, cache=True, num_parallel_calls=2)


def test_cifar10_round_trip(cifar_dir):
  config = _config(cifar_dir)
  assert data.info(config) == data.DatasetInfo(10, 40, NUM_TEST, (32, 32, 3))
  assert datasets.normalization_stats(config) == preprocess.KNOWN_STATS["cifar10"]
  batches = list(data.eval_iterator(config, global_batch_size=4, process_index=0, process_count=1))
  assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == NUM_TEST
  assert sorted(np.concatenate([b["label"][b["mask"] > 0] for b in batches]).tolist()) == list(range(10))
  iterator = data.train_iterator(config, global_batch_size=8, seed=0, process_index=0, process_count=1)
  epoch = [next(iterator) for _ in range(5)]
  assert sorted(np.concatenate([b["label"] for b in epoch]).tolist()) == sorted([i % 10 for i in range(40)])
  assert os.path.isdir(os.path.join(cifar_dir, "cifar10"))
