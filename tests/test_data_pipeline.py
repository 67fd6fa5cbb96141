"""TFDS pipelines on the built-in `shapes` dataset: sharding, exact resume, exact evaluation, bad input."""
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from resnet_jax import data, metrics, parallel
from resnet_jax.data import datasets, pipeline, shapes, tfrecords
from tests import runs

# 13 test examples: with shapes' balanced labels, one chunk of 13 holds labels 0, 1, 2 twice and 3..9 once.
THIRTEEN = shapes.ShapesConfig(name="thirteen", num_train=64, num_test=13, description="13 test examples.")


@pytest.fixture(scope="module")
def data_dir(shapes_data_dir):
  """The session's shapes/small, plus a 13-example variant next to it."""
  tfds.builder("shapes", config=THIRTEEN, data_dir=shapes_data_dir).download_and_prepare()
  return shapes_data_dir


def _config(data_dir, **overrides):
  return runs.data_config(**{**dict(name="shapes", builder_config="small", data_dir=data_dir, preprocess="cifar",
                                    image_size=32, eval_split="test", shuffle_buffer=300), **overrides})


def _take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_info(data_dir):
  assert data.info(_config(data_dir)) == data.DatasetInfo(10, 2000, 500, (32, 32, 3))
  assert data.info(_config(data_dir, num_classes=12)).num_classes == 12


def test_train_batches_are_normalised_host_batches(data_dir):
  batch = next(data.train_iterator(_config(data_dir), global_batch_size=64, seed=0, process_index=0,
                                   process_count=1))
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (64, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (64,) and batch["label"].dtype == np.int32
  # Normalised with the dataset's statistics (padding pixels pull the mean slightly off zero).
  assert abs(batch["image"].mean()) < 0.5 and 0.7 < batch["image"].std() < 1.3


@pytest.mark.parametrize("cache", [False, True])
def test_exact_resume_across_an_epoch_boundary(data_dir, cache):
  config = _config(data_dir, cache=cache)
  # 2000 examples, batch 256: 7 steps per epoch; resume at 5, inside epoch 0, and run into epoch 1.
  fresh = _take(data.train_iterator(config, global_batch_size=256, seed=3, process_index=0, process_count=1), 11)
  resumed = _take(data.train_iterator(config, global_batch_size=256, seed=3, start_step=5, process_index=0,
                                      process_count=1), 6)
  for expected, got in zip(fresh[5:], resumed):
    np.testing.assert_array_equal(expected["label"], got["label"])
    np.testing.assert_array_equal(expected["image"], got["image"])
  # A different seed gives a different stream.
  other = next(data.train_iterator(config, global_batch_size=256, seed=4, process_index=0, process_count=1))
  assert not np.array_equal(other["image"], fresh[0]["image"])


def test_the_stream_does_not_depend_on_the_autotuner(data_dir):
  """config.data.autotune only changes how tf.data schedules the work (the options are deterministic)."""
  assert pipeline.train_dataset(_config(data_dir, autotune=False), global_batch_size=64,
                                seed=0).options().autotune.enabled is False
  assert pipeline.train_dataset(_config(data_dir), global_batch_size=64, seed=0).options().autotune.enabled
  tuned, fixed = (_take(data.train_iterator(_config(data_dir, autotune=autotune), global_batch_size=64, seed=1,
                                            process_index=0, process_count=1), 3) for autotune in (True, False))
  for a, b in zip(tuned, fixed):
    np.testing.assert_array_equal(a["image"], b["image"])


@pytest.mark.parametrize("cache", [False, True])
def test_epochs_are_permutations_in_a_new_order(data_dir, cache):
  config = _config(data_dir, cache=cache)
  builder = datasets.builder_for(config)
  records = tfrecords.load_records(builder, "train") if cache else None
  stored = list(tfrecords.read_split(builder, "train").as_numpy_iterator())
  # An epoch's order is its first len(stored) records; the stream runs on with spares (see the corrupt-record test).
  epochs = [[r for _, _, r in pipeline.epoch_records(builder, "train", seed=0, epoch=e, cache_records=records,
                                                  shuffle_buffer=300).take(len(stored)).as_numpy_iterator()]
            for e in (0, 1)]
  for epoch in epochs:
    assert sorted(epoch) == sorted(stored)
  assert epochs[0] != epochs[1] and epochs[0] != stored


@pytest.mark.parametrize("cache", [False, True])
def test_two_processes_read_disjoint_parts_that_cover_the_split(data_dir, cache):
  config = _config(data_dir, cache=cache)
  builder = datasets.builder_for(config)
  parts = []
  for index in range(2):
    records = tfrecords.load_records(builder, "train") if cache else None
    dataset = pipeline.epoch_records(builder, "train", seed=0, epoch=0, process_index=index, process_count=2,
                                     cache_records=records, local_batch=20, shuffle_buffer=300)
    parts.append([r for _, _, r in dataset.take(1000).as_numpy_iterator()])  # The epoch, without its spares.
  stored = list(tfrecords.read_split(builder, "train").as_numpy_iterator())
  assert len(parts[0]) == len(parts[1]) == 1000
  assert not set(parts[0]) & set(parts[1])
  assert sorted(parts[0] + parts[1]) == sorted(stored)
  # Each process gets half of the global batch.
  batch = next(data.train_iterator(config, global_batch_size=64, seed=0, process_index=1, process_count=2))
  assert batch["image"].shape == (32, 32, 32, 3)


def test_cached_global_batches_do_not_depend_on_the_process_count(data_dir):
  """With cache=True, two processes' halves of each global batch equal the one-process batch, augmentation too."""
  config = _config(data_dir, cache=True)
  one = data.train_iterator(config, global_batch_size=64, seed=3, start_step=29)  # Crosses an epoch boundary.
  halves = [data.train_iterator(config, global_batch_size=64, seed=3, start_step=29, process_index=i,
                                process_count=2) for i in range(2)]
  for _ in range(3):
    whole, parts = next(one), [next(h) for h in halves]
    for key in ("image", "label"):
      np.testing.assert_array_equal(whole[key], np.concatenate([p[key] for p in parts]))


def _true_labels(data_dir):
  builder = tfds.builder("shapes", config=THIRTEEN, data_dir=data_dir)
  return np.array([int(e["label"]) for e in tfds.as_numpy(builder.as_dataset(split="test"))])


def _fake_model_logits(batch_size):
  """Fixed logits whatever the image: class 0 ranks first, then 1, 2, ..."""
  return jnp.broadcast_to(-jnp.arange(10, dtype=jnp.float32), (batch_size, 10))


def _hand_computed(labels):
  labels = np.asarray(labels)
  logits = -np.arange(10.0)
  loss = np.log(np.exp(logits).sum()) - logits[labels]
  return {"loss": loss.mean(), "top1": np.mean(labels == 0), "top5": np.mean(labels < 5)}


@pytest.mark.parametrize("num_devices", [1, 2, 3])
def test_exact_eval_on_several_devices(data_dir, num_devices):
  labels = _true_labels(data_dir)
  assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9]  # By construction (balanced chunk).
  expected = _hand_computed(labels)
  assert expected["top1"] == 2 / 13 and expected["top5"] == 8 / 13
  config = _config(data_dir, builder_config="thirteen")
  global_batch = 4 * num_devices  # Batch 4 per device.
  mesh = Mesh(np.array(jax.devices()[:num_devices]), ("data",))

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data"), out_specs=P())
  def eval_step(batch):
    logits = _fake_model_logits(batch["label"].shape[0])
    return metrics.psum(metrics.classification_sums(logits, batch["label"], batch["mask"]), "data")

  steps = data.num_eval_steps(config, global_batch_size=global_batch, process_count=1)
  assert steps == -(-13 // global_batch)
  total, seen = None, 0
  put = parallel.ShardMap(mesh).put_batch
  for batch in parallel.prefetch(data.eval_iterator(config, global_batch_size=global_batch, process_index=0,
                                                    process_count=1), put):
    total = metrics.merge(total, eval_step(batch))
    seen += 1
  assert seen == steps
  assert float(total["top1"][1]) == 13
  result = metrics.finalize(total)
  assert result["top1"] == pytest.approx(expected["top1"], abs=1e-7)
  assert result["top5"] == pytest.approx(expected["top5"], abs=1e-7)
  assert result["loss"] == pytest.approx(expected["loss"], rel=1e-6)


@pytest.mark.parametrize("num_processes", [1, 2, 3])
def test_exact_eval_over_several_processes(data_dir, num_processes):
  config = _config(data_dir, builder_config="thirteen")
  global_batch = 4 * num_processes
  per_process = [list(data.eval_iterator(config, global_batch_size=global_batch, process_index=i,
                                         process_count=num_processes)) for i in range(num_processes)]
  steps = data.num_eval_steps(config, global_batch_size=global_batch, process_count=num_processes)
  assert [len(batches) for batches in per_process] == [steps] * num_processes
  counted = [b["label"][b["mask"] > 0] for batches in per_process for b in batches]
  counted = np.concatenate(counted)
  assert sorted(counted.tolist()) == sorted(_true_labels(data_dir).tolist())
  for batches in per_process:
    for batch in batches:
      assert batch["image"].shape == (4, 32, 32, 3) and batch["mask"].dtype == np.float32
      assert not batch["image"][batch["mask"] == 0].any()  # Padding is zeros.
  # The fixed-logit model over the global batches (process parts side by side) gives the hand-computed values.
  total = None
  for step in range(steps):
    labels = np.concatenate([per_process[i][step]["label"] for i in range(num_processes)])
    mask = np.concatenate([per_process[i][step]["mask"] for i in range(num_processes)])
    total = metrics.merge(total, metrics.classification_sums(_fake_model_logits(len(labels)), labels, mask))
  result = metrics.finalize(total)
  assert result["top1"] == pytest.approx(2 / 13) and result["top5"] == pytest.approx(8 / 13)


def test_a_process_with_nothing_to_evaluate_still_runs_the_common_number_of_steps(data_dir):
  config = _config(data_dir, builder_config="thirteen")
  # 13 examples over 20 processes: process 19's part is empty.
  batches = list(data.eval_iterator(config, global_batch_size=20, process_index=19, process_count=20))
  assert len(batches) == data.num_eval_steps(config, global_batch_size=20, process_count=20) == 1
  assert batches[0]["mask"].tolist() == [0.0]


@pytest.mark.parametrize("cache", [True, False])
def test_corrupt_training_record_is_replaced_and_resume_stays_exact(data_dir, tmp_path, caplog, cache):
  """2000 examples, batch 500: 4 full batches in every epoch, though no record is spare (the next record takes the
  corrupt one's place); a stream resumed at any step, from the position reported there, gives the same batches."""
  index = runs.record_index_at(_config(data_dir, cache=cache), 3, local_batch=500)
  config = _config(runs.corrupt_copy(data_dir, tmp_path, "train", index), cache=cache)
  with caplog.at_level(logging.WARNING):
    full = _take(pipeline.train_stream(config, global_batch_size=500, seed=0, process_index=0, process_count=1), 8)
  assert [batch["image"].shape[0] for batch, _ in full] == [500] * 8
  assert [epoch for _, (epoch, _) in full] == [0, 0, 0, 0, 1, 1, 1, 1]
  assert [position for _, (_, position) in full[:4]] == [501, 1001, 1501, 2001]  # one record read more
  assert any("Skipped 1 corrupt training record" in r.getMessage() for r in caplog.records)
  for step in range(1, 8):
    epoch, position = full[step - 1][1]
    start_position = position if epoch == step // 4 else None
    (batch, _), = _take(pipeline.train_stream(config, global_batch_size=500, seed=0, start_step=step,
                                              start_position=start_position, process_index=0, process_count=1), 1)
    np.testing.assert_array_equal(batch["image"], full[step][0]["image"], err_msg=f"step {step}")
    np.testing.assert_array_equal(batch["label"], full[step][0]["label"], err_msg=f"step {step}")


def test_corrupt_eval_record_raises_naming_it(data_dir, tmp_path):
  corrupt_dir = runs.corrupt_copy(data_dir, tmp_path, "test", 42)
  config = _config(corrupt_dir)
  with pytest.raises(ValueError, match=r"Corrupt record in the 'test' split .* example 42 .*record 42 of "):
    for _ in data.eval_iterator(config, global_batch_size=16, process_index=0, process_count=1):
      pass


def test_unknown_dataset_lists_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"Unknown dataset 'shapez'.*Did you mean shapes.*cifar10"):
    data.info(_config(str(tmp_path), name="shapez"))


def test_unknown_builder_config_lists_known_ones(data_dir):
  with pytest.raises(ValueError, match=r"Unknown builder config 'huge'.*'default', 'small', 'hard'"):
    data.info(_config(data_dir, builder_config="huge"))


def test_missing_data_gives_the_prepare_command(tmp_path):
  with pytest.raises(ValueError, match=r"(?s)not prepared.*python -m experiments.prepare_data --dataset=shapes "
                                       r"--builder_config=small --data_dir="):
    data.train_iterator(_config(str(tmp_path / "empty")), global_batch_size=8, seed=0, process_index=0,
                        process_count=1)


def test_bad_batch_sizes(data_dir):
  with pytest.raises(ValueError, match="multiple of the number of processes"):
    data.train_iterator(_config(data_dir), global_batch_size=9, seed=0, process_index=0, process_count=2)
  with pytest.raises(ValueError, match="exceeds the training split"):
    data.train_iterator(_config(data_dir), global_batch_size=4096, seed=0, process_index=0, process_count=1)
