"""Datasets through TFDS: names, builders and their preparation, splits and per-process parts, sizes, the records of
a split, and the normalisation statistics of a config's images.

Names are TFDS names (`cifar10`, `shapes/small`, ...), or `folder:PATH` for images in class folders
(`resnet_jax.data.folder`). `resnet_jax.data.pipeline` turns these into training and evaluation batches.
"""
import difflib
import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from resnet_jax.data import (
  folder,
  preprocess,
  shapes,  # noqa: F401  (registers the built-in `shapes` builder with TFDS)
  synthetic,
  tfrecords,
)
from resnet_jax.data.dataset_info import DatasetInfo

SYNTHETIC = synthetic.NAME
# Shown when a name is unknown; any TFDS image-classification dataset with 'image' and 'label' features works.
COMMON_DATASETS = ("shapes", "cifar10", "cifar100", "imagenet2012", "imagenette", SYNTHETIC)
# Training images over which a dataset without known statistics is measured for 'cifar' normalisation.
_STATS_EXAMPLES = 1024
# With config.data.preprocess=None: the 'imagenet' family for images of this many pixels a side and more.
IMAGENET_FAMILY_FROM = 64


# ----------------------------------------------------------------------------------------------------------------
# Datasets, splits and shards
# ----------------------------------------------------------------------------------------------------------------
def prepared_on_first_use(name: str) -> bool:
  """Whether training prepares the dataset itself when it is missing: the built-in `shapes` and class folders."""
  return folder.is_folder_name(name) or name.split("/")[0].split(":")[0] == "shapes"


def _no_builder_config(name: str, builder_config) -> None:
  if builder_config:
    raise ValueError(f"{name} is a class folder, which has no builder configs; unset config.data.builder_config "
                     f"(got {builder_config!r}).")


def prepare_command(name: str, builder_config=None, data_dir=None) -> str:
  """The shell command that prepares a dataset."""
  command = f"python -m experiments.prepare_data --dataset={name}"
  if builder_config:
    command += f" --builder_config={builder_config}"
  if data_dir:
    command += f" --data_dir={data_dir}"
  if name.startswith("imagenet2012"):
    command += " --manual_dir=DIR_WITH_ILSVRC2012_TARS"
  return command


def get_builder(name: str, builder_config=None, data_dir=None, *, require_prepared: bool = True):
  """The TFDS builder of a dataset.

  Raises:
    ValueError: the name or builder config is unknown (the message lists the known ones), or the dataset is not
      prepared in `data_dir` (the message gives the command that prepares it).
  """
  if name == SYNTHETIC:
    raise ValueError(f"{SYNTHETIC!r} is not a TFDS dataset: use resnet_jax.data (which dispatches it) or "
                     "resnet_jax.data.synthetic.")
  if folder.is_folder_name(name):
    _no_builder_config(name, builder_config)
    return folder.get_builder(folder.root_of(name), data_dir, require_prepared=require_prepared)
  kwargs = {"data_dir": data_dir}
  if builder_config:
    kwargs["config"] = builder_config
  try:
    builder = tfds.builder(name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(_unknown_name_message(name)) from None
  except ValueError as error:
    if builder_config and "config" in str(error).lower():
      configs = [c.name for c in tfds.builder_cls(name.split("/")[0]).BUILDER_CONFIGS]
      raise ValueError(f"Unknown builder config {builder_config!r} for dataset {name!r}; choose one of {configs}."
                       ) from error
    raise
  if require_prepared and not builder.is_prepared():
    raise ValueError(
        f"Dataset {name!r} (builder config {builder.builder_config.name if builder.builder_config else None}) is "
        f"not prepared in {builder.data_dir}. Prepare it with:\n  "
        f"{prepare_command(name, builder_config, data_dir)}")
  return builder


def _unknown_name_message(name: str) -> str:
  known = tfds.list_builders(with_community_datasets=False)
  close = difflib.get_close_matches(name, known + [SYNTHETIC], n=5, cutoff=0.6)
  hint = f" Did you mean {', '.join(close)}?" if close else ""
  return (f"Unknown dataset {name!r}.{hint} Known datasets: {', '.join(COMMON_DATASETS)}, or any other of the "
          f"{len(known)} TFDS datasets (tfds.list_builders()) that has image and label features.")


def builder_for(data_config, *, require_prepared: bool = True):
  """`get_builder` for a data config."""
  return get_builder(data_config.name, data_config.builder_config, data_config.data_dir,
                     require_prepared=require_prepared)


def prepare(name: str, *, builder_config=None, data_dir=None, manual_dir=None):
  """Downloads (or reads from `manual_dir`) and prepares a TFDS dataset; returns its builder.

  For 'imagenet2012', `manual_dir` must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar. A class folder
  (`folder:PATH`) is prepared unless it is prepared and unchanged (see `resnet_jax.data.folder.prepare`).
  """
  if folder.is_folder_name(name):
    _no_builder_config(name, builder_config)
    return folder.prepare(folder.root_of(name), data_dir)
  builder = get_builder(name, builder_config, data_dir, require_prepared=False)
  if name.startswith("imagenet2012") and not manual_dir:
    raise ValueError(f"{name} needs --manual_dir: a directory holding ILSVRC2012_img_train.tar and "
                     "ILSVRC2012_img_val.tar (from https://image-net.org/download-images).")
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
  builder.download_and_prepare(download_config=download_config)
  return builder


def process_split(split: str, process_index: int, process_count: int):
  """This process's contiguous part of `split` (sizes differ by at most one example between processes)."""
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def train_split(data_config) -> str:
  return data_config.train_split


def eval_split(data_config, builder=None) -> str:
  """`config.data.eval_split`, or, where the dataset has no split of that name but exactly one held-out split (one
  that is not the training split, whatever its name: val, valid, validation, eval, test, ...), that one, said once
  in the log. Several held-out splits and none of the configured name: `tfrecords.split_info` names them.

  (Without `builder` the configured name is returned as it is.)
  """
  name = data_config.eval_split
  if builder is None:
    return name
  try:
    builder.info.splits[name]
    return name
  except (KeyError, ValueError):
    held_out = sorted(s for s in builder.info.splits if s != data_config.train_split)
  if len(held_out) != 1:
    return name
  if (data_config.name, name) not in _SPLITS_TAKEN:
    _SPLITS_TAKEN.add((data_config.name, name))
    logging.info("%s has no split %r (config.data.eval_split); evaluating on its one held-out split, %r.",
                 data_config.name, name, held_out[0])
  return held_out[0]


_SPLITS_TAKEN: set = set()  # (dataset, configured split) pairs whose substitute has been logged.


def family(data_config, builder=None) -> str:
  """The preprocessing family, 'imagenet' or 'cifar' (see `resnet_jax.data.preprocess`): `config.data.preprocess`,
  or where that is None, 'imagenet' for images of `IMAGENET_FAMILY_FROM` (64) pixels and more, 'cifar' below."""
  if data_config.preprocess is not None:
    return data_config.preprocess
  size = image_size(data_config, builder or builder_for(data_config))
  return "imagenet" if size >= IMAGENET_FAMILY_FROM else "cifar"


def channels(data_config, builder) -> int:
  """Channels of a preprocessed image: 3 for the ImageNet family, the stored count otherwise."""
  if family(data_config, builder) == "imagenet":
    return 3
  shape = builder.info.features["image"].shape
  return shape[-1] if shape and shape[-1] else 3


def image_size(data_config, builder) -> int:
  """`config.data.image_size`, or where it is None the dataset's stored size (square images of one size only).

  Raises:
    ValueError: image_size is None and the dataset's images have no single stored size.
  """
  if data_config.image_size is not None:
    return data_config.image_size
  shape = builder.info.features["image"].shape
  if shape and shape[0] and shape[0] == shape[1]:
    return shape[0]
  raise ValueError(f"{data_config.name} has images of varying (or not square) size: set config.data.image_size, the "
                   "side in pixels images are cropped or resized to (e.g. 224 for photos, 32 for small images)")


def eval_image_size(data_config, builder) -> int:
  """The evaluation image side: `config.data.eval_image_size`, or where it is None the training side."""
  return data_config.eval_image_size or image_size(data_config, builder)


def eval_transform(data_config, builder=None):
  """The evaluation preprocessing of a config's images, encoded bytes -> uint8 [size, size, channels]
  (`preprocess.eval_fn` of its family, evaluation size, channels, crop, transform and interpolation), and the
  (mean, std) that normalise them: the one transform behind evaluation, predictions and the corrupt-record check."""
  builder = builder or builder_for(data_config)
  prepare = preprocess.eval_fn(family(data_config, builder), image_size=eval_image_size(data_config, builder),
                               channels=channels(data_config, builder), crop_fraction=data_config.crop_fraction,
                               transform=data_config.eval_transform, interpolation=data_config.eval_interpolation)
  return prepare, normalization_stats(data_config, builder)


def info(data_config) -> DatasetInfo:
  """Number of classes, split sizes and the preprocessed image shape of a config's dataset."""
  builder = builder_for(data_config)
  size = image_size(data_config, builder)
  return DatasetInfo(
      num_classes=data_config.num_classes or builder.info.features["label"].num_classes,
      num_train=tfrecords.split_info(builder, train_split(data_config)).num_examples,
      num_eval=tfrecords.split_info(builder, eval_split(data_config, builder)).num_examples,
      image_shape=(size, size, channels(data_config, builder)))


# ----------------------------------------------------------------------------------------------------------------
# Normalisation statistics
# ----------------------------------------------------------------------------------------------------------------
def normalization_stats(data_config, builder=None) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel (mean, std) on the 0-255 scale used to normalise a config's images.

  'imagenet' preprocessing uses ImageNet's statistics. 'cifar' preprocessing uses the dataset's own: known values
  for CIFAR-10/100, otherwise measured on the first `_STATS_EXAMPLES` training images in stored order (the same on
  every process and in every run).
  """
  if family(data_config, builder) == "imagenet":
    return preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD
  name = data_config.name.split("/")[0]
  if name in preprocess.KNOWN_STATS:
    return preprocess.KNOWN_STATS[name]
  builder = builder or builder_for(data_config)
  return _measured_stats(data_config.name, data_config.builder_config, data_config.data_dir,
                         train_split(data_config), image_size(data_config, builder),
                         channels(data_config, builder))


@functools.lru_cache(maxsize=32)
def _measured_stats(name, builder_config, data_dir, split, size, channels):
  builder = get_builder(name, builder_config, data_dir)
  parse = tfrecords.parse_fn(builder)
  decode = preprocess.eval_fn("cifar", image_size=size, channels=channels)
  images = tfrecords.read_split(builder, split).take(_STATS_EXAMPLES).map(
      lambda record: decode(parse(record)[0]), num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  pixels = np.concatenate([b.reshape(-1, channels) for b in images.batch(256).as_numpy_iterator()])
  pixels = pixels.astype(np.float64)
  mean, std = tuple(pixels.mean(0).tolist()), tuple(np.maximum(pixels.std(0), 1.0).tolist())
  logging.info("Normalisation statistics of %s measured on %d training images: mean %s, std %s", name,
               len(pixels) // (size * size), np.round(mean, 2), np.round(std, 2))
  return mean, std


# ----------------------------------------------------------------------------------------------------------------
# A split written out as class folders
# ----------------------------------------------------------------------------------------------------------------
def export_images(name: str, *, builder_config=None, data_dir=None, split: str, out: str, per_class: int,
                  classes=None) -> str:
  """Writes up to `per_class` images of each class (of `classes` only, where given) of a dataset's `split` to
  `out/<class>/` (see `folder.export_images`), preparing `shapes` first where needed; returns what was written, for
  the console.

  Raises:
    ValueError: a bad `out` or `per_class` (checked before anything is prepared), an unknown dataset, split or
      class.
  """
  folder.check_export_target(out, per_class)
  if prepared_on_first_use(name):
    builder = prepare(name, builder_config=builder_config, data_dir=data_dir)
  else:
    builder = get_builder(name, builder_config, data_dir)
  tfrecords.split_info(builder, split)
  counts = folder.export_images(builder, split, out, per_class, classes)
  classes = ", ".join(f"{c} {n}" for c, n in counts.items())
  return f"Wrote {sum(counts.values())} images of the {split!r} split of {name} to {out}: {classes}."
