"""Prepares a TFDS dataset in the TFDS data directory, ready for training.

  python -m experiments.prepare_data --dataset=shapes                       # built in, about a minute
  python -m experiments.prepare_data --dataset=shapes --builder_config=small
  python -m experiments.prepare_data --dataset=imagenet2012 --manual_dir=DIR   # DIR holds the ILSVRC2012 tars
  python -m experiments.prepare_data --dataset=cifar10                      # downloads

For ImageNet, DIR must hold ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar as downloaded from image-net.org;
TFDS's own `imagenet2012` builder reads them (labels in its synset order, validation labels from the file it
ships).
"""
from absl import app, flags

from resnet_jax import startup

_DATASET = flags.DEFINE_string("dataset", None, "TFDS name: shapes, imagenet2012, cifar10, ... (or name/config).")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None, "TFDS builder config, e.g. small or hard for shapes.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: TFDS default, ~/tensorflow_datasets).")
_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Directory with manually downloaded files (ImageNet tars).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _DATASET.value:
    raise app.UsageError("--dataset is required: a TFDS name such as shapes, cifar10 or imagenet2012")
  startup.prepare_process()
  from resnet_jax.data import datasets  # TensorFlow: after the process set-up.

  builder = datasets.prepare(_DATASET.value, builder_config=_BUILDER_CONFIG.value, data_dir=_DATA_DIR.value,
                             manual_dir=_MANUAL_DIR.value)
  for name, split in sorted(builder.info.splits.items()):
    print(f"{builder.info.full_name} {name}: {split.num_examples} examples")
  print(f"Prepared in {builder.data_dir}")


if __name__ == "__main__":
  startup.run(main)
