"""Synthetic batches generated on the device (resnet_jax/data/synthetic.py)."""
import subprocess
import sys

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from resnet_jax.data import synthetic


def _config():
  return ml_collections.ConfigDict(dict(name="synthetic", image_size=16, num_classes=7))


def test_synthetic_runs_never_import_tensorflow():
  code = "\n".join([
      "import sys, ml_collections",
      "import resnet_jax.data.synthetic",
      "from resnet_jax import data",
      'config = ml_collections.ConfigDict(dict(name="synthetic", image_size=8, num_classes=3))',
      "assert data.info(config).num_classes == 3",
      "batch = next(data.train_iterator(config, global_batch_size=4, seed=0))",
      'assert batch["image"].shape == (4, 8, 8, 3)',
      "assert list(data.eval_iterator(config, global_batch_size=4)) == []",
      'assert "tensorflow" not in sys.modules, "tensorflow was imported"',
  ])
  subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_info_has_imagenet_sizes_and_no_eval_split():
  assert synthetic.info(_config()) == (7, synthetic.NUM_TRAIN, 0, (16, 16, 3))
  assert synthetic.num_eval_steps(_config(), global_batch_size=8) == 0


def test_device_batches_are_sharded_deterministic_and_resumable():
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  fresh = synthetic.train_iterator(_config(), global_batch_size=8, seed=1, sharding=sharding)
  batches = [next(fresh) for _ in range(3)]
  assert batches[0]["image"].shape == (8, 16, 16, 3) and batches[0]["image"].dtype == np.float32
  assert batches[0]["image"].sharding == sharding
  labels = np.asarray(batches[0]["label"])
  assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 7
  assert not np.array_equal(np.asarray(batches[0]["image"]), np.asarray(batches[1]["image"]))
  resumed = next(synthetic.train_iterator(_config(), global_batch_size=8, seed=1, start_step=2, sharding=sharding))
  np.testing.assert_array_equal(np.asarray(resumed["image"]), np.asarray(batches[2]["image"]))
  np.testing.assert_array_equal(np.asarray(resumed["label"]), np.asarray(batches[2]["label"]))


def test_host_batches_follow_the_host_batch_contract():
  iterator = synthetic.host_train_iterator(_config(), global_batch_size=8, seed=0, process_index=1, process_count=2)
  first, second = next(iterator), next(iterator)
  assert isinstance(first["image"], np.ndarray) and first["image"].shape == (4, 16, 16, 3)
  assert first["label"].dtype == np.int32
  np.testing.assert_array_equal(first["image"], second["image"])
  other = next(synthetic.host_train_iterator(_config(), global_batch_size=8, seed=0, process_index=0,
                                             process_count=2))
  assert not np.array_equal(first["image"], other["image"])  # Processes hold different examples.
