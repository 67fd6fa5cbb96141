"""Class folders as a TFDS dataset: `config.data.name='folder:PATH'` prepared into TFRecords, and any dataset's split
written out as class folders (`export_images`).

Two layouts are read:
- `PATH/<split>/<class>/<image>`: the splits are the top folders (`train`, `test`, `validation`, ...), and every
  split must hold the same class folders;
- `PATH/<class>/<image>`: `HELD_OUT_PERCENT` % of each class's files, chosen by a hash of the file name (so a file
  never changes sides when others are added), form the split `validation`; the rest is `train`.

Class names are the folder names, sorted; the label of a class is its index in that order. Every file of a class
folder (hidden ones excepted) is read with TensorFlow's decoders: JPEG files it decodes to three channels (RGB, and
CMYK, which it converts itself) and 8-bit RGB PNG files are stored as they are; BMP, GIF (first frame), grayscale,
palette, 16-bit and RGBA images are converted to RGB (alpha dropped, as TensorFlow's decoders do) and stored as
PNG. Files that are not such images are left out, and preparation warns
with their names. Images may have any size; where they are not all square and of one size, the dataset declares
no size and `config.data.image_size` must be set.

The prepared dataset is an ordinary TFDS dataset (builder `class_folders`, one builder config per folder, named
after the folder and a hash of its absolute path, so two folders never share one) with the features `image`
(encoded bytes), `label` (ClassLabel with the folder names) and `file_name` (the path under PATH). Its metadata
records the folder and the name and size of every file found there: a folder whose files changed since it was
prepared is refused with the command that prepares it again, rather than serving the old files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Sequence

import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from resnet_jax.data import tfrecords

PREFIX = "folder:"  # config.data.name = 'folder:PATH'
BUILDER = "class_folders"  # The TFDS builder's registered name.
VERSION = "1.0.0"
HELD_OUT_PERCENT = 10  # PATH/<class>/<image> layout: share of each class's files in the 'validation' split.
HELD_OUT_SPLIT, TRAIN_SPLIT = "validation", "train"
FORMATS = "JPEG, PNG, BMP or GIF"
_LAYOUTS = "PATH/<class>/<image> or PATH/<split>/<class>/<image>"
_PNG = b"\x89PNG\r\n\x1a\n"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_NAMED = 10  # File names listed in a message before '...'.


def is_folder_name(name: str | None) -> bool:
  """Whether a dataset name is `folder:PATH`."""
  return bool(name) and name.startswith(PREFIX)


def root_of(name: str) -> str:
  """The absolute folder of `folder:PATH` (a relative PATH is taken from the current directory)."""
  path = name[len(PREFIX):]
  if not path:
    raise ValueError(f"{name!r} names no folder: write folder:PATH, with PATH holding {_LAYOUTS}")
  return os.path.abspath(os.path.expanduser(path))


def config_name(root: str) -> str:
  """The TFDS builder config of a folder: its base name (letters, digits, '_') and a hash of its absolute path."""
  slug = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root).lower()).strip("_")[:40] or "folder"
  return f"{slug}_{hashlib.sha256(root.encode()).hexdigest()[:12]}"


def _listed(names) -> str:
  names = list(names)
  return ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")


# ----------------------------------------------------------------------------------------------------------------
# What a folder holds
# ----------------------------------------------------------------------------------------------------------------
def _entries(directory: str) -> tuple[list[str], list[str]]:
  """(sub-folders, files) of a directory, sorted, hidden names left out."""
  dirs, names = [], []
  for entry in sorted(os.scandir(directory), key=lambda e: e.name):
    if not entry.name.startswith("."):
      (dirs if entry.is_dir() else names).append(entry.name)
  return dirs, names


def listing(root: str) -> dict[str, int]:
  """{path under root: size in bytes} of every file two or three folders deep: what a preparation records."""
  found = {}
  for directory, dirs, names in os.walk(root):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    depth = os.path.relpath(directory, root).count(os.sep) + 1 if directory != root else 0
    if depth in (1, 2):
      for name in names:
        if not name.startswith("."):
          path = os.path.join(directory, name)
          found[os.path.relpath(path, root)] = os.path.getsize(path)
    if depth >= 2:
      dirs[:] = []
  return found


def fingerprint(files: dict[str, int]) -> str:
  return hashlib.sha256("\n".join(f"{k}\t{v}" for k, v in sorted(files.items())).encode()).hexdigest()


def _image_size(path: str) -> tuple[int, int] | None:
  """(height, width) from an image file's header, None if it is not an image Pillow can open."""
  try:
    with Image.open(path) as image:
      return image.size[1], image.size[0]
  except (OSError, ValueError, Image.DecompressionBombError):
    return None


@dataclasses.dataclass(frozen=True)
class Scan:
  """A class folder's contents: classes, the images of each split as (path under root, label), and the rest."""
  root: str
  layout: str  # 'splits' or 'classes'
  classes: tuple[str, ...]
  splits: dict[str, list[tuple[str, int]]]
  not_images: tuple[str, ...]
  ignored_folders: tuple[str, ...]
  shape: tuple[int | None, int | None, int]
  files: dict[str, int]


def _held_out(file_name: str) -> bool:
  return int(hashlib.sha256(file_name.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def scan(root: str) -> Scan:
  """Reads a folder's layout, classes and images (their headers only).

  Raises:
    FileNotFoundError: `root` does not exist.
    ValueError: naming the folder or file and what to do: not a folder, no class folders, no images at all, an
      empty class or split folder, split and class folders mixed, classes that differ between splits, one class.
  """
  where = f"folder:{root}"
  if not os.path.exists(root):
    raise FileNotFoundError(f"{where}: no such folder; give a folder holding {_LAYOUTS}.")
  if not os.path.isdir(root):
    raise ValueError(f"{where} is a file; give a folder holding {_LAYOUTS}.")
  top, stray = _entries(root)
  if not top:
    found = f" (it holds {len(stray)} files directly)" if stray else ""
    raise ValueError(f"{where} has no class folders{found}: put the images in one folder per class, {_LAYOUTS}.")
  contents = {d: _entries(os.path.join(root, d)) for d in top}
  sizes: dict[str, tuple[int, int] | None] = {}

  def images_in(rel_dir, names):
    for name in names:
      rel = os.path.join(rel_dir, name)
      sizes[rel] = _image_size(os.path.join(root, rel))
    return [os.path.join(rel_dir, n) for n in names if sizes[os.path.join(rel_dir, n)] is not None]

  top_images = {d: images_in(d, names) for d, (_, names) in contents.items()}
  split_like = [d for d, (dirs, _) in contents.items() if dirs and not top_images[d]]
  class_like = [d for d in top if top_images[d]]
  if split_like and class_like:
    raise ValueError(f"{where} mixes split folders ({_listed(split_like)}: they hold folders) with class folders "
                     f"({_listed(class_like)}: they hold images); use one layout, {_LAYOUTS}.")
  layout = "splits" if split_like else "classes"
  ignored = []
  if layout == "splits":
    per_split = {s: contents[s][0] for s in top}
    images = {}
    for split, class_dirs in per_split.items():
      if not _SPLIT_NAME.match(split):
        raise ValueError(f"split folder {os.path.join(root, split)}: a split's name may hold only letters, digits "
                         "and '_'; rename the folder.")
      for c in class_dirs:
        sub, names = _entries(os.path.join(root, split, c))
        ignored += [os.path.join(split, c, d) for d in sub]
        images[(split, c)] = images_in(os.path.join(split, c), names)
    classes = sorted({c for dirs in per_split.values() for c in dirs})
  else:
    ignored = [os.path.join(d, s) for d in top for s in contents[d][0]]
    images = {(None, c): top_images[c] for c in top}
    classes = list(top)
  not_images = sorted(rel for rel, size in sizes.items() if size is None)
  if not any(images.values()):
    raise ValueError(f"{where} holds no images ({FORMATS}) in its class folders ({_LAYOUTS}); "
                     f"{len(not_images)} other files were found.")
  if layout == "splits":
    empty_splits = [s for s, dirs in per_split.items() if not dirs]
    if empty_splits:
      raise ValueError(f"split folder {os.path.join(root, empty_splits[0])} holds no class folders; add them (the "
                       f"same classes as the other splits) or remove it.")
    for split, dirs in per_split.items():
      missing = sorted(set(classes) - set(dirs))
      if missing:
        others = [s for s in per_split if s != split]
        raise ValueError(f"the classes differ between the splits of {where}: {split} has no class folder "
                         f"{_listed(missing)} (found in {_listed(others)}); every split needs the same class "
                         "folders: add them, or remove those classes from the other splits.")
  for (split, c), found in images.items():
    if not found:
      folder = os.path.join(root, *([split] if split else []), c)
      other = sum(1 for rel in not_images if os.path.dirname(rel) == os.path.relpath(folder, root))
      note = f" ({other} files that are not images)" if other else ""
      raise ValueError(f"empty class folder {folder}: it holds no images ({FORMATS}){note}; add images or remove the "
                       "folder.")
  if len(classes) < 2:
    raise ValueError(f"{where} has one class ({classes[0]}); a classifier needs at least two class folders.")
  label = {c: i for i, c in enumerate(classes)}
  splits: dict[str, list[tuple[str, int]]] = {}
  for (split, c), found in images.items():
    for rel in found:
      name = split or (HELD_OUT_SPLIT if _held_out(os.path.basename(rel)) else TRAIN_SPLIT)
      splits.setdefault(name, []).append((rel, label[c]))
  if layout == "classes":
    for name in (TRAIN_SPLIT, HELD_OUT_SPLIT):
      if not splits.get(name):
        raise ValueError(f"{where}: no image falls in the {name!r} split ({HELD_OUT_PERCENT} % of each class's files, "
                         f"by a hash of the file name, are held out); add images, or make split folders {_LAYOUTS}.")
  shapes = {sizes[rel] for pairs in splits.values() for rel, _ in pairs}
  (only,) = shapes if len(shapes) == 1 else (None,)
  shape = (only[0], only[1], 3) if only and only[0] == only[1] else (None, None, 3)
  return Scan(root, layout, tuple(classes), splits, tuple(not_images), tuple(ignored), shape, listing(root))


def encode(path: str) -> bytes:
  """The bytes to store for an image file: JPEG and 8-bit RGB PNG as they are, anything else TensorFlow decodes as
  an RGB PNG.

  Raises:
    ValueError: the file is not an image TensorFlow decodes (the message names it).
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    if data.startswith(_PNG) and data[24:26] == b"\x08\x02":  # IHDR: bit depth 8, colour type 2 (RGB).
      tf.io.decode_png(data)
      return data
    if tf.io.is_jpeg(data):
      if tf.io.decode_jpeg(data).shape[-1] == 3:
        return data
      return tf.io.encode_png(tf.io.decode_jpeg(data, channels=3)).numpy()
    return tf.io.encode_png(tf.io.decode_image(data, channels=3, expand_animations=False)).numpy()
  except (tf.errors.OpError, ValueError) as error:
    raise ValueError(f"{path}: not an image TensorFlow decodes ({FORMATS}): {str(error).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------------------------------------
# The TFDS builder
# ----------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  """One folder: `root` is its absolute path (the config's name derives from it, see `config_name`)."""
  root: str = ""


_SCANS: dict[str, Scan] = {}  # root -> its scan, made once per preparation.


class ClassFolders(tfds.core.GeneratorBasedBuilder):
  """Images in class folders (see the module docstring); one builder config per folder, made at run time."""

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = []

  def _scan(self) -> Scan:
    root = self.builder_config.root
    if root not in _SCANS:
      _SCANS[root] = scan(root)
    return _SCANS[root]

  def _info(self) -> tfds.core.DatasetInfo:
    found = self._scan()
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"Images in the class folders of {found.root}.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=found.shape),
            "label": tfds.features.ClassLabel(names=found.classes),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(root=found.root, layout=found.layout, files=found.files,
                                        fingerprint=fingerprint(found.files), not_images=list(found.not_images)),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {split: self._generate_examples(pairs) for split, pairs in sorted(self._scan().splits.items())}

  def _generate_examples(self, pairs):
    root = self.builder_config.root
    for rel, label in pairs:
      try:
        image = encode(os.path.join(root, rel))
      except ValueError as error:
        logging.warning("Skipped %s", error)
        self.info.metadata["not_images"] = sorted({*self.info.metadata["not_images"], rel})
        continue
      yield rel, {"image": image, "label": label, "file_name": rel}


# ----------------------------------------------------------------------------------------------------------------
# Preparing and loading
# ----------------------------------------------------------------------------------------------------------------
def prepared_dir(root: str, data_dir: str | None) -> str:
  """Where the folder's prepared dataset lives in the TFDS data dir."""
  from tensorflow_datasets.core import constants
  return os.path.join(os.path.expanduser(data_dir or constants.DATA_DIR), BUILDER, config_name(root), VERSION)


def prepare_command(root: str, data_dir: str | None = None) -> str:
  command = f"python -m experiments.prepare_data --dataset={PREFIX}{root}"
  return command + (f" --data_dir={data_dir}" if data_dir else "")


_FRESH: set[tuple] = set()  # (root, prepared dir, folder stamps) found unchanged in this process.


def _stamps(root: str) -> tuple:
  """Modification times of the folder and its sub-folders two deep: they change when files are added or removed,
  and are cheap to read, so the full listing is compared once per process and state of the folders."""
  stamps = []
  for directory in [root, *(os.path.join(root, d) for d in _entries(root)[0])]:
    stamps.append((directory, os.stat(directory).st_mtime_ns))
    if directory != root:
      stamps += [(os.path.join(directory, d), os.stat(os.path.join(directory, d)).st_mtime_ns)
                 for d in _entries(directory)[0]]
  return tuple(stamps)


def check_unchanged(root: str, directory: str, metadata) -> None:
  """Raises ValueError, naming the changed files and the commands to prepare again, if `root`'s files differ from
  those recorded when `directory` was prepared."""
  key = (root, directory, _stamps(root))
  if key in _FRESH:
    return
  before = dict(metadata.get("files") or {})
  now = listing(root)
  if fingerprint(now) != metadata.get("fingerprint"):
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    changed = sorted(k for k in set(now) & set(before) if now[k] != before[k])
    what = "; ".join(f"{label}: {_listed(names)}" for label, names in
                     (("added", added), ("removed", removed), ("changed size", changed)) if names)
    raise ValueError(f"folder:{root} changed since it was prepared into {directory} ({what}). Prepare it again: "
                     f"rm -r {directory}, then rerun (training prepares it on first use, or "
                     f"{prepare_command(root)}); a run trained on the old files should start afresh in a new workdir.")
  _FRESH.add(key)


def get_builder(root: str, data_dir: str | None = None, *, require_prepared: bool = True):
  """The TFDS builder of a folder: the prepared dataset (read from its files), or an unprepared builder.

  Raises:
    FileNotFoundError: the folder does not exist.
    ValueError: not prepared (with `require_prepared`; the message gives the command), or its files changed since.
  """
  if not os.path.isdir(root):
    scan(root)  # Raises the error that says what is wrong with the path.
  directory = prepared_dir(root, data_dir)
  if os.path.exists(os.path.join(directory, "dataset_info.json")):
    builder = tfds.builder_from_directory(directory)
    check_unchanged(root, directory, builder.info.metadata or {})
    return builder
  if require_prepared:
    raise ValueError(f"folder:{root} is not prepared in {directory.rsplit(os.sep, 3)[0]}; training "
                     f"prepares it on first use, or prepare it with:\n  {prepare_command(root, data_dir)}")
  return ClassFolders(config=FolderConfig(name=config_name(root), root=root, description=f"root={root}"),
                      data_dir=data_dir)


def prepare(root: str, data_dir: str | None = None):
  """Prepares a folder's dataset (unless it is prepared and unchanged) and returns its builder.

  Raises:
    FileNotFoundError, ValueError: see `scan` and `get_builder`.
  """
  builder = get_builder(root, data_dir, require_prepared=False)
  if isinstance(builder, ClassFolders):
    found = scan(root)
    _SCANS[root] = found
    if found.not_images or found.ignored_folders:
      logging.warning("Preparing folder:%s: left out %d files that are not images (%s)%s.", root,
                      len(found.not_images), _listed(found.not_images),
                      f" and the folders {_listed(found.ignored_folders)}" if found.ignored_folders else "")
    try:
      builder.download_and_prepare()
    finally:
      _SCANS.pop(root, None)
    builder = get_builder(root, data_dir)
    counts = {name: split.num_examples for name, split in sorted(builder.info.splits.items())}
    logging.info("Prepared folder:%s (%d classes; %s) in %s.", root, len(found.classes), counts, builder.data_dir)
  return builder


# ----------------------------------------------------------------------------------------------------------------
# Writing a dataset out as class folders
# ----------------------------------------------------------------------------------------------------------------
def _extension(data: bytes) -> str:
  if data.startswith(_PNG):
    return ".png"
  if data.startswith(b"\xff\xd8"):
    return ".jpg"
  return ".gif" if data.startswith(b"GIF8") else ".bmp" if data.startswith(b"BM") else ".img"


def check_export_target(out: str, per_class: int) -> None:
  """Raises ValueError unless `out` can receive an export: absent or an empty folder, and per_class >= 1."""
  if per_class < 1:
    raise ValueError(f"per_class must be at least 1, got {per_class}.")
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f"{out} exists and is not an empty folder; choose another output folder.")


def check_export_classes(classes: Sequence[str] | None, names: Sequence[str]) -> list[str]:
  """The classes to export, in the dataset's label order: all of `names` where `classes` is None or empty.

  Raises:
    ValueError: `classes` repeats a class or names one that is not in `names`.
  """
  if not classes:
    return list(names)
  unknown = [c for c in classes if c not in names]
  if unknown:
    raise ValueError(f"no class {', '.join(map(repr, unknown))} in this dataset; its classes are "
                     f"{', '.join(names)}.")
  if len(set(classes)) != len(classes):
    raise ValueError(f"classes repeats a class: {', '.join(classes)}.")
  return [n for n in names if n in classes]


def export_images(builder, split: str, out: str, per_class: int,
                  classes: Sequence[str] | None = None) -> dict[str, int]:
  """Writes the first `per_class` images of each class (of `classes` only, where given) of a prepared dataset's
  `split`, in stored order, as `out/<class>/<split>_<index>.<ext>` (the stored bytes). The folder appears complete
  or not at all.

  Returns:
    {class name: images written}.

  Raises:
    ValueError: `out` exists and is not empty, `per_class` < 1, the split is unknown, or `classes` names a class
      the dataset does not have (or one twice).
  """
  check_export_target(out, per_class)
  names = builder.info.features["label"].names
  wanted = check_export_classes(classes, names)
  digits = len(str(tfrecords.split_info(builder, split).num_examples))
  counts = {name: 0 for name in wanted}
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(out))}.{uuid.uuid4().hex[:8]}.tmp")
  examples = tfrecords.read_split(builder, split).map(tfrecords.parse_fn(builder)).enumerate()
  try:
    for index, (data, label) in examples.as_numpy_iterator():
      name = names[int(label)]
      if name not in wanted:
        continue
      if counts[name] < per_class:
        folder = os.path.join(tmp, name.replace(os.sep, "_"))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{split}_{index:0{digits}d}{_extension(data)}"), "wb") as f:
          f.write(data)
        counts[name] += 1
      elif all(c >= per_class for c in counts.values()):
        break
    if os.path.isdir(out):
      os.rmdir(out)  # Empty (checked above).
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return counts
