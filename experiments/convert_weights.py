r"""Converts published ResNet weights into a checkpoint that `--config.init_from` loads.

  # Keras ResNet50 (v1 layout): a local weights file, 'imagenet' (downloads Keras's file), or none (random init).
  python -m experiments.convert_weights --from=keras --keras_weights=resnet50_weights_tf_dim_ordering_tf_kernels.h5 \
      --out=weights/keras_resnet50
  # torchvision (v1.5 layout): a saved state_dict (needs torch), or torchvision's own weights (needs torchvision).
  python -m experiments.convert_weights --from=torchvision --model=resnet50 --state_dict=resnet50.pth \
      --out=weights/tv_resnet50

The script prints the --config flags that build the matching network. A fine-tuning run with another class count
gets a freshly initialised head (resnet_jax.checkpoint.merge_for_finetune); add --config.freeze_backbone=True for a
linear probe.
"""
import os

from absl import app
from absl import flags

flags.DEFINE_enum("from", None, ["keras", "torchvision"], "Where the weights come from (required).")
flags.DEFINE_string("out", None, "Directory to write the converted weights to (required).")
flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.DEFINE_string("keras_weights", None,
                    "Keras only: a weights file of keras.applications.ResNet50 (.h5 / .weights.h5), 'imagenet' to "
                    "download Keras's, or unset for random initialisation.")
flags.DEFINE_integer("num_classes", 1000, "Keras only: the classifier size of --keras_weights (or of the random "
                     "network).")
flags.DEFINE_string("model", "resnet50", "torchvision only: the network (resnet18, resnet34, resnet50, resnet101, "
                    "resnet152).")
flags.DEFINE_string("state_dict", None,
                    "torchvision only: a file saved with torch.save(model.state_dict(), FILE). Unset: build the "
                    "network with torchvision (random init, or --torchvision_weights).")
flags.DEFINE_string("torchvision_weights", None, "torchvision only, without --state_dict: a weights name for "
                    "torchvision.models.get_model, e.g. IMAGENET1K_V1 (downloads); unset for random init.")
FLAGS = flags.FLAGS


def keras_variables(weights, num_classes: int) -> dict:
  """Variables of our v1 ResNet-50 from keras.applications.ResNet50 with `weights` (file, 'imagenet' or None)."""
  if weights not in (None, "imagenet") and not os.path.isfile(weights):
    raise ValueError(f"--keras_weights={weights}: no such file; give a Keras ResNet50 weights file, 'imagenet', or "
                     "nothing (random weights).")
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keep Keras off JAX: it only hands over arrays here.
  import keras  # pylint: disable=g-import-not-at-top
  from resnet_jax import weights as weights_lib  # pylint: disable=g-import-not-at-top

  model = keras.applications.ResNet50(weights=weights, classes=num_classes, classifier_activation=None)
  return weights_lib.from_keras_resnet50(model)


def _unwrap(state) -> dict:
  """The state_dict inside what torch.load returned: a bare state_dict, or a training checkpoint holding one."""
  if not isinstance(state, dict):
    raise ValueError(f"--state_dict holds a {type(state).__name__}, not a state_dict; save it with "
                     "torch.save(model.state_dict(), FILE).")
  for key in ("state_dict", "model"):
    if "fc.weight" not in state and isinstance(state.get(key), dict):
      state = state[key]
  # nn.DataParallel / DistributedDataParallel prefix every key with 'module.'.
  return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def torchvision_variables(name: str, state_dict_file, weights_name) -> dict:
  """Variables of our v1.5 network `name` from a saved torchvision state_dict, or from torchvision itself."""
  from resnet_jax import weights as weights_lib  # pylint: disable=g-import-not-at-top

  if name not in weights_lib.TORCHVISION_NAMES:
    raise ValueError(f"--model={name}: choose one of {list(weights_lib.TORCHVISION_NAMES)}.")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("--from=torchvision needs PyTorch: pip install torch (and torchvision to build the network "
                      "without --state_dict), or convert Keras weights with --from=keras.") from error
  if state_dict_file is not None:
    if not os.path.isfile(state_dict_file):
      raise ValueError(f"--state_dict={state_dict_file}: no such file.")
    state = _unwrap(torch.load(state_dict_file, map_location="cpu", weights_only=True))
  else:
    try:
      import torchvision  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError("Without --state_dict the network is built by torchvision, which is not installed: pip "
                        "install torchvision, or pass --state_dict=FILE.") from error
    state = torchvision.models.get_model(name, weights=weights_name).state_dict()
  return weights_lib.from_torchvision(state, name)


def model_flags(source: str, name: str) -> str:
  """The --config flags of the network the converted weights fit."""
  from resnet_jax import weights as weights_lib  # pylint: disable=g-import-not-at-top

  knobs = weights_lib.KERAS_RESNET50_KNOBS if source == "keras" else {}
  return " ".join([f"--config.model.name={name}", *(f"--config.model.{k}={v}" for k, v in knobs.items())])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Checked here rather than with required=True: tests import several scripts into one process.
  if not FLAGS["from"].value or not FLAGS.out:
    raise app.UsageError("--from (keras or torchvision) and --out are required")
  source = FLAGS["from"].value
  if os.path.exists(FLAGS.out) and not FLAGS.overwrite:  # Checked before minutes of building the network.
    raise app.UsageError(f"--out={FLAGS.out} exists; pass --overwrite or choose another directory.")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from resnet_jax import checkpoint, distributed  # pylint: disable=g-import-not-at-top

  distributed.hide_accelerators_from_tensorflow()
  if source == "keras":
    name, variables = "resnet50", keras_variables(FLAGS.keras_weights, FLAGS.num_classes)
  else:
    name, variables = FLAGS.model, torchvision_variables(FLAGS.model, FLAGS.state_dict, FLAGS.torchvision_weights)
  checkpoint.save_params(FLAGS.out, variables, overwrite=FLAGS.overwrite)
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  classes = np.shape(variables["params"]["head"]["dense"]["kernel"])[-1]
  print(f"Wrote {name} ({count:,} parameters, {classes} classes) from {source} to {FLAGS.out}.")
  print(f"Fine-tune from it with: {model_flags(source, name)} --config.init_from={FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
