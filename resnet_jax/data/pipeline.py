"""TFDS input pipelines: one shard per process, a deterministic order, exact resume and exact evaluation.

Training order. The order of epoch `e` is a pure function of (seed, e), built only from stateless random ops:
- cache=True (datasets that fit in host memory: CIFAR, `shapes`): every process holds the split's serialized
  records and draws the same full permutation from (seed, e); process p takes the p-th slice of every global
  batch. The examples a process trains on in an epoch are disjoint from the other processes' and together they
  cover the split; the global batches and their augmentation are the same for any number of processes, so a
  2-process run reproduces a 1-process run.
- cache=False (streaming, for ImageNet-sized data): each process reads its own contiguous part of the split
  (`tfds.even_splits`); its files are visited in a permutation drawn from (seed, process, e), read `interleave`d,
  and the stream is shuffled in consecutive windows of `shuffle_buffer` records, each window with its own
  permutation drawn from (seed, process, e, window).
Each epoch yields steps_per_epoch = num_train // global_batch_size batches on every process (the remainder is
dropped), and each example's augmentation is seeded by (seed, epoch, example id).

Exact resume. Because the order and the augmentation are functions of the step alone, a checkpoint holds no
iterator state: `train_stream(start_step=k)` recomputes the epoch and position of step k and skips the records
already consumed in that epoch *before* decoding them (with `start_position`, the count a run saved, where corrupt
records were skipped before step k; see below). With cache=True the skip is free (an index into the
permutation). When streaming it re-reads, without decoding, the part of the current epoch already consumed: at most
one epoch of raw reads, on average half (for ImageNet: ~640k records, ~70 GB, minutes on fast storage, no JPEG
decoding); completed epochs are never replayed.

Corrupt records. In training, a record that cannot be parsed or decoded is skipped (`ignore_errors`) and counted
in the log; the epoch uses the next record in its place. Resume stays exact: a checkpoint saves, per process, how
many records of the current epoch its stream has read (the `position` that `train_stream` yields with every batch),
and `train_stream(start_position=...)` skips exactly those. In evaluation a corrupt record raises a ValueError
naming the record.

Evaluation. Each process reads its contiguous part of the eval split in order, batches of global_batch_size //
process_count, the last one padded and masked; every process runs the same number of batches
(`num_eval_steps`), padding with fully masked batches where its part is shorter, so every example is counted
exactly once.
"""
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from resnet_jax import distributed
from resnet_jax.data import augment as augment_lib
from resnet_jax.data import datasets, preprocess, tfrecords
from resnet_jax.data.dataset_info import steps_per_epoch

# Files read at once when streaming: enough to mix records from several files and overlap their I/O.
_CYCLE_LENGTH = 16


# ----------------------------------------------------------------------------------------------------------------
# The order of an epoch
# ----------------------------------------------------------------------------------------------------------------
def _read_files(filenames, skips, takes) -> tf.data.Dataset:
  """Records of (filename, skip, take) triples, in the order given, with several files read at once."""
  files = tf.data.Dataset.from_tensor_slices((filenames, tf.cast(skips, tf.int64), tf.cast(takes, tf.int64)))
  return files.interleave(
      lambda name, skip, take: tf.data.TFRecordDataset(name, buffer_size=1 << 20).skip(skip).take(take),
      cycle_length=max(1, min(_CYCLE_LENGTH, len(filenames))), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)


def _streamed_epoch(filenames, skips, takes, epoch_seed, window: int) -> tf.data.Dataset:
  """An epoch's records: files in a seeded order, then a seeded permutation of each window of records."""
  order = tf.random.experimental.stateless_shuffle(tf.range(len(filenames)), seed=_fold(epoch_seed, -1))
  records = _read_files(tf.gather(filenames, order), tf.gather(skips, order), tf.gather(takes, order))
  if window <= 1:
    return records
  windows = records.batch(window).prefetch(1).enumerate()
  return windows.flat_map(lambda index, group: tf.data.Dataset.from_tensor_slices(
      tf.random.experimental.stateless_shuffle(group, seed=_fold(epoch_seed, index))))


def _fold(seed, value):
  return tf.random.experimental.stateless_fold_in(seed, tf.cast(value, tf.int64))


def epoch_records(builder, split, *, seed: int, epoch, process_index: int = 0, process_count: int = 1,
                  cache_records=None, local_batch: int = 1, shuffle_buffer: int = 10_000,
                  skip=0, repeats: int = 1) -> tf.data.Dataset:
  """(position, example id, serialized record) of one process's training epoch, from position `skip` on.

  `position` counts this process's records in the epoch; `example id` seeds the record's augmentation.

  Args:
    builder: the dataset's TFDS builder.
    split: the training split.
    seed: the run's seed.
    epoch: epoch number (int or scalar tensor).
    process_index, process_count: which part of the split this process reads.
    cache_records: ALL records of the split held in memory (a string tensor), or None to stream this process's
      part from files.
    local_batch: this process's batch size (cached mode: the process takes its slice of every global batch).
    shuffle_buffer: window of the streamed shuffle.
    skip: records of the epoch already consumed (not read again when cached, read but not decoded otherwise).
    repeats: repeated augmentation: each image `repeats` times per batch (the last copies of the last image cut
      where `repeats` does not divide the batch), each copy with its own id (augmentation). Cached, a global batch
      of g slots holds images s % ceil(g / repeats) of its slots s, so that the copies land on other devices and
      positions still count slots; streamed, each process batch is a group of ceil(local_batch / repeats) records,
      copies apart likewise, and positions count records (a corrupt record then drops all its copies and shifts
      the groups that follow: resume is exact again from the next epoch).

  The stream runs on past the end of the epoch's order, into the same order again: those records are spares, read
  only when corrupt records leave the epoch short of its batches (the next record takes a corrupt one's place).
  """
  skip = tf.cast(skip, tf.int64)
  if cache_records is not None:
    # Every process draws the same permutation of the whole split and takes its slice of each global batch, so
    # the global batches (and their augmentation) do not depend on the number of processes.
    permutation = tf.random.experimental.stateless_shuffle(
        tf.range(tf.shape(cache_records, tf.int64)[0]), seed=_fold(preprocess.example_seed(seed), epoch))
    b, g = tf.constant(local_batch, tf.int64), tf.constant(local_batch * process_count, tf.int64)
    n = tf.size(permutation, tf.int64)
    steps = n // g
    positions = tf.data.Dataset.range(skip, 2 * steps * b)

    distinct = _distinct(g, repeats)  # Images per global batch: slot s holds image s % distinct.

    def record(k):
      if repeats == 1:
        index = ((k // b) * g + process_index * b + k % b) % n
        return k, index, tf.gather(cache_records, permutation[index])
      slot = (k // b) * g + process_index * b + k % b  # Unique per copy: it seeds the copy's augmentation.
      return k, slot, tf.gather(cache_records, permutation[((slot // g) * distinct + slot % g % distinct) % n])
    return positions.map(record)
  epoch_seed = _fold(_fold(preprocess.example_seed(seed), process_index), epoch)
  part = datasets.process_split(split, process_index, process_count)
  filenames, skips, takes = tfrecords.file_instructions(builder, part)
  records = _streamed_epoch(tf.constant(filenames), tf.constant(skips, tf.int64), tf.constant(takes, tf.int64),
                            epoch_seed, shuffle_buffer)
  # Ids above 2**40 per process keep the augmentation seeds of different processes apart.
  offset = tf.constant(process_index, tf.int64) * (1 << 40)
  if repeats == 1:
    return records.repeat(2).enumerate().skip(skip).map(lambda k, r: (k, offset + k, r))
  # Each group of ceil(local_batch / repeats) records, `repeats` times over (cut to one batch): copies apart.
  groups = records.repeat(2).enumerate().skip(skip).batch(_distinct(local_batch, repeats))

  def copies(ks, rs):
    count = tf.shape(ks, tf.int64)[0]
    slots = tf.range(tf.minimum(tf.constant(local_batch, tf.int64), count * repeats))
    picked = tf.gather(ks, slots % count)
    return tf.data.Dataset.from_tensor_slices(
        (picked, offset + picked * repeats + slots // count, tf.gather(rs, slots % count)))
  return groups.flat_map(copies)


def _options(data_config) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # One thread per map call; parallelism comes from num_parallel_calls (many small ops would contend otherwise).
  options.threading.max_intra_op_parallelism = 1
  # Without the autotuner, AUTOTUNE parallelism means one call per core and prefetch buffers grow on demand.
  options.autotune.enabled = bool(data_config.autotune)
  return options


def _parallel_calls(data_config) -> int:
  calls = data_config.num_parallel_calls
  return tf.data.AUTOTUNE if calls == -1 else calls


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------
def train_dataset(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                  start_position: int | None = None, process_index: int = 0, process_count: int = 1,
                  builder=None) -> tf.data.Dataset:
  """This process's infinite training stream as a tf.data.Dataset of batches.

  Batches hold 'image' (float32, normalised), 'label' (int32), and 'epoch' / 'position' (int64: where each
  example sits in the epoch's order; they count skipped corrupt records and tell a checkpoint where the stream
  stands). See the module docstring for the order; `train_stream` is the public entry point.
  """
  builder = builder or datasets.builder_for(data_config)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  local_batch = distributed.local_batch_size(global_batch_size, process_count)
  split = datasets.train_split(data_config)
  steps = steps_per_epoch(tfrecords.split_info(builder, split).num_examples, global_batch_size)
  per_epoch = steps * local_batch
  start_epoch, start_offset = divmod(start_step, steps)
  # Positions of the epoch already read: as many as the steps' examples (or records, see `_positions_per_batch`),
  # unless corrupt ones were skipped (then the caller knows).
  least_position = start_offset * _positions_per_batch(data_config, local_batch)
  start_offset *= local_batch  # Examples of the epoch already trained on.
  start_position = least_position if start_position is None else start_position
  if start_position < least_position:
    raise ValueError(f"start_position={start_position} is before the {least_position} positions step {start_step} "
                     "has consumed in its epoch.")

  repeats = data_config.repeated_augmentation
  size = datasets.image_size(data_config, builder)
  augment = preprocess.train_fn(datasets.family(data_config, builder), image_size=size,
                                channels=datasets.channels(data_config, builder),
                                crop_fraction=data_config.crop_fraction, flip=data_config.flip,
                                rotation_degrees=data_config.rotation_degrees,
                                color_jitter_strength=data_config.color_jitter, policy=data_config.augment)
  erasing = data_config.random_erasing
  parse = tfrecords.parse_fn(builder)
  mean, std = datasets.normalization_stats(data_config, builder)
  cache_records = None
  if data_config.cache:
    cache_records = tfrecords.load_records(builder, split)
  shuffle_buffer = data_config.shuffle_buffer
  calls = _parallel_calls(data_config)

  def example(epoch, position, example_id, record):
    image_bytes, label = parse(record)
    example_seed = preprocess.example_seed(seed, epoch, example_id)
    image = augment(image_bytes, example_seed)
    out = {"image": image, "label": label, "epoch": epoch, "position": position}
    if erasing:  # The rectangle and its noise seed travel with the example; the noise is drawn after normalising.
      erase_seed = tf.random.experimental.stateless_fold_in(example_seed, 4)
      out["erase_box"] = augment_lib.erasing_box(erase_seed, size, size, erasing)
      out["erase_seed"] = tf.random.experimental.stateless_fold_in(erase_seed, 1)
    return out

  def one_epoch(epoch):
    first = tf.equal(epoch, start_epoch)
    skip = tf.where(first, tf.constant(start_position, tf.int64), tf.constant(0, tf.int64))
    consumed = tf.where(first, tf.constant(start_offset, tf.int64), tf.constant(0, tf.int64))
    records = epoch_records(builder, split, seed=seed, epoch=epoch, process_index=process_index,
                            process_count=process_count, cache_records=cache_records, local_batch=local_batch,
                            shuffle_buffer=shuffle_buffer, skip=skip, repeats=repeats)
    examples = records.map(lambda position, example_id, record: example(epoch, position, example_id, record),
                           num_parallel_calls=calls,
                           deterministic=True)
    # Corrupt records are dropped here and the next records (spares past the end of the order, if needed) take
    # their places, so every epoch has its `steps` full batches.
    examples = examples.ignore_errors().take(per_epoch - consumed)
    return examples.batch(local_batch, drop_remainder=True)

  batches = tf.data.Dataset.counter(start_epoch).flat_map(one_epoch)
  # Normalising whole batches as the last step keeps every buffer above in uint8.
  def finish(batch):
    image = preprocess.normalize(batch.pop("image"), mean, std)
    if erasing:
      image = augment_lib.erase(image, batch.pop("erase_box"), batch.pop("erase_seed"))
    return {**batch, "image": image}
  batches = batches.map(finish, num_parallel_calls=calls, deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(_options(data_config))


def train_stream(data_config, *, global_batch_size: int, seed: int, start_step: int = 0,
                 start_position: int | None = None, process_index=None,
                 process_count=None) -> Iterator[tuple[dict[str, np.ndarray], tuple[int, int]]]:
  """Infinite iterator of this process's training batches, each with where the stream stands after it.

  Args:
    data_config: `config.data`.
    global_batch_size: batch size summed over all processes.
    seed: the run's seed; fixes the order of every epoch and every augmentation.
    start_step: the first step to yield. Batches from `start_step=k` equal batches k, k+1, ... of a run started at
      0 (exact resume).
    start_position: records of step k's epoch that this process had read before step k: the `position` a run
      reported with batch k - 1. Needed for exactness only when corrupt records were skipped before step k in its
      epoch; None assumes there were none.
    process_index, process_count: this process and the number of processes (default: JAX's).

  Returns:
    Iterator of ({'image': float32 [B, H, W, C] normalised, 'label': int32 [B]}, (epoch, position)), B =
    global_batch_size // process_count, where `position` counts the records of the epoch this process has read
    up to and including the batch. Every epoch has `num_train // global_batch_size` batches.
  """
  process_index, process_count = distributed.resolve_processes(process_index, process_count)
  builder = datasets.builder_for(data_config)
  dataset = train_dataset(data_config, global_batch_size=global_batch_size, seed=seed, start_step=start_step,
                          start_position=start_position, process_index=process_index, process_count=process_count,
                          builder=builder)
  steps = steps_per_epoch(tfrecords.split_info(builder, datasets.train_split(data_config)).num_examples,
                          global_batch_size)
  per_batch = _positions_per_batch(data_config, global_batch_size // process_count)
  first = (start_step % steps) * per_batch if start_position is None else start_position
  return _count_skipped(dataset.as_numpy_iterator(), first, data_config.name)


def _positions_per_batch(data_config, local_batch: int) -> int:
  """How far a batch moves the stream's position when no record is corrupt: its examples, or, with repeated
  augmentation on a streamed dataset, its distinct records (see `epoch_records`)."""
  repeats = data_config.repeated_augmentation
  return local_batch if data_config.cache or repeats == 1 else _distinct(local_batch, repeats)


def _distinct(batch: int, repeats: int) -> int:
  """Distinct images in a batch of `batch` under repeated augmentation: ceil(batch / repeats)."""
  return -(-batch // repeats)


def _count_skipped(batches, first_position: int, name: str):
  """Strips the bookkeeping fields, yields (batch, (epoch, position after it)), and logs how many corrupt records
  were skipped (gaps in the positions)."""
  epoch, expected, skipped = None, first_position, 0
  for batch in batches:
    epochs, positions = batch.pop("epoch"), batch.pop("position")
    if epoch is not None and epochs[0] != epoch:
      expected = 0
    epoch = int(epochs[0])
    # Positions are distinct per example, except for the copies of a record under repeated augmentation.
    last = int(positions.max())
    gap = last - expected + 1 - len(np.unique(positions))
    if gap > 0:
      skipped += gap
      logging.warning("Skipped %d corrupt training record(s) of %s so far (latest: epoch %d, before position %d).",
                      skipped, name, epoch, last)
    expected = last + 1
    yield batch, (epoch, expected)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------
def _part_sizes(builder, split, process_count) -> list[int]:
  return [tfrecords.split_info(builder, datasets.process_split(split, i, process_count)).num_examples
          for i in range(process_count)]


def num_eval_steps(data_config, *, global_batch_size: int, process_count=None) -> int:
  """Evaluation batches per process: enough for the largest process part, the same on every process."""
  _, process_count = distributed.resolve_processes(0, process_count)
  local_batch = distributed.local_batch_size(global_batch_size, process_count)
  builder = datasets.builder_for(data_config)
  largest = max(_part_sizes(builder, datasets.eval_split(data_config, builder), process_count))
  return math.ceil(largest / local_batch)


def eval_dataset(data_config, *, local_batch_size: int, process_index: int = 0, process_count: int = 1,
                 builder=None) -> tf.data.Dataset:
  """This process's part of the eval split, in stored order, as unpadded batches {'image': float32 normalised,
  'label'} (`datasets.eval_transform`, then normalised as training batches are)."""
  builder = builder or datasets.builder_for(data_config)
  part = datasets.process_split(datasets.eval_split(data_config, builder), process_index, process_count)
  prepare_image, (mean, std) = datasets.eval_transform(data_config, builder)
  parse = tfrecords.parse_fn(builder)

  def example(record):
    image_bytes, label = parse(record)
    return {"image": prepare_image(image_bytes), "label": label}
  calls = _parallel_calls(data_config)
  examples = tfrecords.read_split(builder, part).map(example, num_parallel_calls=calls, deterministic=True)
  batches = examples.batch(local_batch_size).map(
      lambda b: {**b, "image": preprocess.normalize(b["image"], mean, std)}, num_parallel_calls=calls,
      deterministic=True)
  return batches.prefetch(tf.data.AUTOTUNE).with_options(_options(data_config))


def eval_iterator(data_config, *, global_batch_size: int, process_index=None, process_count=None):
  """Finite iterable of this process's evaluation batches.

  Returns:
    `num_eval_steps(...)` batches of {'image': float32 [B, H, W, C], 'label': int32 [B], 'mask': float32 [B]},
    B = global_batch_size // process_count; padding examples have mask 0. Across processes, every example of the
    eval split appears exactly once with mask 1.

  Raises:
    ValueError: (while iterating) a record cannot be decoded; the message names it.
  """
  process_index, process_count = distributed.resolve_processes(process_index, process_count)
  local_batch = distributed.local_batch_size(global_batch_size, process_count)
  builder = datasets.builder_for(data_config)
  steps = num_eval_steps(data_config, global_batch_size=global_batch_size, process_count=process_count)
  dataset = eval_dataset(data_config, local_batch_size=local_batch, process_index=process_index,
                         process_count=process_count, builder=builder)
  size = datasets.eval_image_size(data_config, builder)
  shape = (size, size, datasets.channels(data_config, builder))
  return _padded_eval_batches(dataset, steps, local_batch, shape,
                              lambda step: _corrupt_record_error(data_config, builder, process_index,
                                                                 process_count, step * local_batch, local_batch))


def _padded_eval_batches(dataset, steps, local_batch, shape, on_error):
  batches = dataset.as_numpy_iterator()
  for step in range(steps):
    try:
      batch = next(batches, None)
    except tf.errors.OpError as error:
      raise on_error(step) from error
    image = np.zeros((local_batch, *shape), np.float32)
    label = np.zeros((local_batch,), np.int32)
    mask = np.zeros((local_batch,), np.float32)
    if batch is not None:
      n = len(batch["label"])
      image[:n] = batch["image"]
      label[:n] = batch["label"]
      mask[:n] = 1.0
    yield {"image": image, "label": label, "mask": mask}


def _corrupt_record_error(data_config, builder, process_index, process_count, start, count) -> ValueError:
  """Finds the first record in [start, start + count) of this process's eval part that fails, and names it."""
  split = datasets.eval_split(data_config, builder)
  part = datasets.process_split(split, process_index, process_count)
  parse = tfrecords.parse_fn(builder)
  prepare_image, _ = datasets.eval_transform(data_config, builder)
  filenames, skips, takes = tfrecords.file_instructions(builder, part)
  for offset, record in enumerate(tfrecords.read_split(builder, part).skip(start).take(count)):
    try:
      prepare_image(parse(record)[0])
    except (tf.errors.OpError, ValueError) as error:
      index = start + offset
      # Locate the record in its file.
      bounds = np.cumsum(takes)
      file_index = int(np.searchsorted(bounds, index, side="right"))
      in_file = skips[file_index] + index - (bounds[file_index - 1] if file_index else 0)
      name = ""
      if "file_name" in builder.info.features:
        name = " (" + builder.info.features.deserialize_example(record)["file_name"].numpy().decode() + ")"
      return ValueError(
          f"Corrupt record in the {split!r} split of {data_config.name}: example {index} of process "
          f"{process_index}/{process_count}{name}, record {in_file} of {filenames[file_index]}: "
          f"{str(error).splitlines()[0]}")
  return ValueError(f"Evaluation input failed in records {start}-{start + count - 1} of process {process_index}, "
                    "but no single record fails on its own.")
