r"""Writes images of a TFDS dataset's split as class folders, OUT/<class>/<image>: data for `folder:PATH` datasets.

  python -m experiments.export_images --dataset=shapes --builder_config=small --split=train --out=photos/train \
      --per_class=30
  python -m experiments.export_images --dataset=shapes --builder_config=small --split=test --out=photos/test \
      --per_class=10

Takes the first --per_class images of each class in the split's stored order and writes their stored bytes (PNG
for `shapes`), named <split>_<index>.<ext>. The built-in `shapes` is generated first where it is missing; other
datasets must be prepared (`experiments.prepare_data`). OUT must not exist, or be empty; it appears complete or not
at all.
"""
from absl import app, flags

from resnet_jax import startup

_DATASET = flags.DEFINE_string("dataset", None, "TFDS name (shapes, cifar10, ...) or folder:PATH (required).")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None, "TFDS builder config, e.g. small for shapes.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS default, ~/tensorflow_datasets).")
_SPLIT = flags.DEFINE_string("split", "train", "The split to export.")
_OUT = flags.DEFINE_string("out", None, "The folder to write, OUT/<class>/<image> (required).")
_PER_CLASS = flags.DEFINE_integer("per_class", 30, "Images per class (fewer where a class has fewer).")
_CLASSES = flags.DEFINE_list("classes", None, "Export only these classes, e.g. circle,square (default: all).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _DATASET.value or not _OUT.value:
    raise app.UsageError("--dataset and --out are required, e.g. --dataset=shapes --out=photos/train")
  startup.prepare_process()
  from resnet_jax.data import datasets  # TensorFlow: after the process set-up.

  print(datasets.export_images(_DATASET.value, builder_config=_BUILDER_CONFIG.value, data_dir=_DATA_DIR.value,
                               split=_SPLIT.value, out=_OUT.value, per_class=_PER_CLASS.value, classes=_CLASSES.value))


if __name__ == "__main__":
  startup.run(main)
