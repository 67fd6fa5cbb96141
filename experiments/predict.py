r"""Classifies image files with a run's checkpoint: the top classes, with names and probabilities, for each image.

  python -m experiments.predict --workdir=runs/demo photo1.png photo2.jpg [--step=S] [--top_k=5]

The run's own config (WORKDIR/config.json) decides everything: the model, and the evaluation preprocessing of its
dataset (centre crop and resize for 'imagenet', resize to the training size for 'cifar'), normalised with the
statistics the run was trained with. Class names come from the dataset's TFDS label metadata; for ImageNet they
are the human-readable names in resnet_jax/imagenet_classes.tsv. Output, one block per image:

  photo1.png
    0.9123  circle
    0.0412  ring
    ...
"""
import os

from absl import app, flags

from resnet_jax import startup

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a training run (required).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to use (default: the latest complete one).")
_TOP_K = flags.DEFINE_integer("top_k", 5, "How many classes to print per image (capped at the number of classes).")


def main(argv):
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required: the workdir of a training run")
  paths = argv[1:]
  if not paths:
    raise app.UsageError("Give one or more image files: python -m experiments.predict --workdir=W IMAGE...")
  if _TOP_K.value < 1:
    raise app.UsageError(f"--top_k must be at least 1, got {_TOP_K.value}.")
  missing = [path for path in paths if not os.path.isfile(path)]
  if missing:  # Before the seconds imports and a restore take.
    raise app.UsageError(f"No such file: {', '.join(missing)}")
  from resnet_jax import config as config_lib

  config = config_lib.load_run_config(_WORKDIR.value)
  startup.prepare_process(config.platform_xla_flags)
  from resnet_jax import predict

  print(predict.predict(config, _WORKDIR.value, paths, step=_STEP.value, top_k=_TOP_K.value))


if __name__ == "__main__":
  startup.run(main)
