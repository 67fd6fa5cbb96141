"""Import of published ResNet weights: Keras `ResNet50`, torchvision ResNets, and `.safetensors` files in the
torchvision / timm key layout (timm's ResNet-18 to -152 use torchvision's key names and shapes); and the way back,
our variables as a torchvision state_dict (`to_torchvision`, `write_safetensors`).

The importers return `{'params': ..., 'batch_stats': ...}` as nested dicts of float32 numpy arrays, checked
path by path and shape by shape against the matching `resnet_jax.models` network, so a wrong or truncated source
fails here with a list of the offending paths rather than later inside `apply`.

Neither TensorFlow/Keras nor PyTorch is imported by this module: the importers only read arrays from the objects
they are given, and safetensors files are read with the `safetensors` package's numpy API.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import files, models, trees

# Keras builds ResNet50 in the paper's v1 layout with BatchNorm epsilon 1.001e-5. Create the receiving model with
# `models.create('resnet50', num_classes=1000, **KERAS_RESNET50_KNOBS)`. (With the default epsilon 1e-5 the
# logits still agree to a few 1e-6, but this is the exact match.)
KERAS_RESNET50_KNOBS = {"variant": "v1", "bn_epsilon": 1.001e-5}

# torchvision's ResNets are the v1.5 layout with the same epsilon as our default.
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")

Tree = dict[str, Any]


def _put(tree: Tree, path: tuple[str, ...], value: np.ndarray) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  if path[-1] in tree:
    raise ValueError(f"two source arrays map to {'/'.join(path)}")
  tree[path[-1]] = np.asarray(value, np.float32)


def _check_matches(variables: Tree, model: models.ResNet, source: str) -> Tree:
  """Raises ValueError unless `variables` has exactly the paths and shapes `model.init` creates."""
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
  want = trees.flatten({k: expected[k] for k in ("params", "batch_stats")})
  got = trees.flatten(variables)
  found = trees.differences(want, got)
  missing = sorted("/".join(p) for kind, p in found if kind == "missing")
  unexpected = sorted("/".join(p) for kind, p in found if kind == "unexpected")
  wrong = sorted(f"{'/'.join(p)}: {trees.shape(got[p])} (expected {trees.shape(want[p])})"
                 for kind, p in found if kind == "different")
  if missing or unexpected or wrong:
    raise ValueError(f"{source} does not match the model: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                     f"unexpected {unexpected[:8]}, wrong shapes {wrong[:8]}")
  return variables


def _put_bn(variables: Tree, path: tuple[str, ...], scale, bias, mean, var) -> None:
  _put(variables["params"], path + ("scale",), scale)
  _put(variables["params"], path + ("bias",), bias)
  _put(variables["batch_stats"], path + ("mean",), mean)
  _put(variables["batch_stats"], path + ("var",), var)


# --- Keras ---

_KERAS_BLOCK = re.compile(r"conv(\d)_block(\d+)_(\d)_conv")


def _keras_paths(conv_layer: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
  """Keras conv layer name -> our (conv path, BatchNorm path): 'conv3_block2_1_conv' -> stage2/block1/conv1, bn1."""
  if conv_layer == "conv1_conv":
    return ("stem", "conv"), ("stem", "bn")
  match = _KERAS_BLOCK.fullmatch(conv_layer)
  if match is None:
    raise ValueError(f"unexpected convolution {conv_layer!r}: expected keras.applications.ResNet50")
  stage, block, index = (int(g) for g in match.groups())
  prefix = (f"stage{stage - 1}", f"block{block - 1}")
  # Keras numbers the projection shortcut 0 and the branch's convolutions 1..3.
  if index == 0:
    return prefix + ("shortcut", "conv"), prefix + ("shortcut", "bn")
  return prefix + (f"conv{index}",), prefix + (f"bn{index}",)


def from_keras_resnet50(keras_model: Any) -> Tree:
  """Converts `keras.applications.ResNet50` (with its classifier) to variables for our v1 ResNet-50.

  Keras convolutions carry biases and ours do not: each bias b sits right before a BatchNorm, which computes
  gamma * (conv + b - mean) / sqrt(var + eps) + beta, so it folds exactly into that BatchNorm's running mean
  (mean - b); in training mode BatchNorm subtracts the batch mean, which removes any constant bias by itself.
  The receiving model is `models.create('resnet50', num_classes=<classes>, **KERAS_RESNET50_KNOBS)`;
  build the Keras model with `classifier_activation=None` to compare logits.

  Args:
    keras_model: a Keras ResNet50 built with `include_top=True` (any number of classes, any input size).

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy arrays.

  Raises:
    ValueError: the model is not a Keras ResNet50 with its classifier.
  """
  layers = {layer.name: layer for layer in keras_model.layers}
  if "predictions" not in layers or "conv1_conv" not in layers:
    raise ValueError("expected keras.applications.ResNet50 built with include_top=True (layers 'conv1_conv' "
                     "... 'predictions'); a backbone without its classifier cannot fill the model's head")
  variables: Tree = {"params": {}, "batch_stats": {}}
  for name, layer in layers.items():
    if not name.endswith("_conv"):
      continue
    kernel, bias = layer.get_weights()
    bn_layer = layers.get(name[: -len("_conv")] + "_bn")
    if bn_layer is None:
      raise ValueError(f"convolution {name!r} has no BatchNorm {name[:-5] + '_bn'!r} to fold its bias into")
    gamma, beta, mean, var = bn_layer.get_weights()
    conv_path, bn_path = _keras_paths(name)
    _put(variables["params"], conv_path + ("kernel",), kernel)
    # The bias folds into the running mean; subtracting in float64 adds no rounding of its own.
    _put_bn(variables, bn_path, gamma, beta, mean.astype(np.float64) - bias.astype(np.float64), var)
  head_kernel, head_bias = layers["predictions"].get_weights()
  _put(variables["params"], ("head", "dense", "kernel"), head_kernel)
  _put(variables["params"], ("head", "dense", "bias"), head_bias)
  model = models.create("resnet50", num_classes=int(head_kernel.shape[-1]), **KERAS_RESNET50_KNOBS)
  return _check_matches(variables, model, "the Keras model")


# --- torchvision ---

_TORCH_KEY = re.compile(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.0|downsample\.1)\.(\w+)")
_TORCH_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"),
             "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}


def _to_numpy(value: Any) -> np.ndarray:
  # torch tensors expose .detach(); plain arrays pass through, so torch itself is never needed here.
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _torch_target(key: str) -> tuple[str, tuple[str, ...], str] | None:
  """state_dict key -> (kind, module path, field), kind 'conv', 'bn' or 'dense'; None for bookkeeping entries."""
  *module, field = key.split(".")
  if field == "num_batches_tracked":
    return None
  if key == "conv1.weight":
    return "conv", ("stem", "conv"), field
  if module == ["bn1"]:
    return "bn", ("stem", "bn"), field
  if module == ["fc"]:
    return "dense", ("head", "dense"), field
  match = _TORCH_KEY.fullmatch(key)
  if match is None:
    raise ValueError(f"unexpected state_dict key {key!r}: expected a torchvision ResNet")
  stage, block, layer, field = match.groups()
  prefix = (f"stage{stage}", f"block{block}")
  names = {"downsample.0": ("shortcut", "conv"), "downsample.1": ("shortcut", "bn")}
  path = prefix + names.get(layer, (layer,))
  return ("conv" if "conv" in path[-1] else "bn"), path, field


def from_torchvision(state_dict: Mapping[str, Any], name: str) -> Tree:
  """Converts a torchvision ResNet `state_dict` to variables for our v1.5 network of the same name.

  torchvision's ResNets are the v1.5 layout with shortcut B, BatchNorm epsilon 1e-5 and bias-free convolutions,
  i.e. `models.create(name, num_classes=<classes>)` with default knobs. Convolution kernels are transposed from
  OIHW to HWIO and the classifier from (out, in) to (in, out).

  Args:
    state_dict: `torchvision.models.<name>(...).state_dict()`; values may be torch tensors or numpy arrays.
    name: one of TORCHVISION_NAMES.

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy arrays.

  Raises:
    ValueError: unknown name, or a state_dict that does not match that network.
  """
  if name not in TORCHVISION_NAMES:
    raise ValueError(f"no torchvision counterpart for {name!r}; choose one of {list(TORCHVISION_NAMES)}")
  variables: Tree = {"params": {}, "batch_stats": {}}
  for key, value in state_dict.items():
    target = _torch_target(key)
    if target is None:
      continue
    kind, path, field = target
    array = _to_numpy(value)
    if kind == "conv":
      if field != "weight" or array.ndim != 4:
        raise ValueError(f"{key}: expected a 4-d convolution weight (torchvision convolutions have no bias)")
      _put(variables["params"], path + ("kernel",), array.transpose(2, 3, 1, 0))
    elif kind == "bn":
      if field not in _TORCH_BN:
        raise ValueError(f"{key}: unknown BatchNorm entry; expected one of {list(_TORCH_BN)}")
      collection, leaf = _TORCH_BN[field]
      _put(variables[collection], path + (leaf,), array)
    elif field in ("weight", "bias"):
      _put(variables["params"], path + ({"weight": "kernel", "bias": "bias"}[field],),
           array.T if field == "weight" else array)
    else:
      raise ValueError(f"{key}: unknown classifier entry; expected 'fc.weight' and 'fc.bias'")
  if "fc.weight" not in state_dict:
    raise ValueError("state_dict has no 'fc.weight': expected a full torchvision ResNet with its classifier")
  num_classes = int(_to_numpy(state_dict["fc.weight"]).shape[0])
  return _check_matches(variables, models.create(name, num_classes=num_classes), f"the {name} state_dict")


# ----------------------------------------------------------------------------------------------------------------
# Reading weight files (experiments.convert_weights)
# ----------------------------------------------------------------------------------------------------------------
def keras_variables(weights, num_classes: int) -> dict:
  """Variables of our v1 ResNet-50 from keras.applications.ResNet50 with `weights` (file, 'imagenet' or None)."""
  if weights not in (None, "imagenet") and not os.path.isfile(weights):
    raise ValueError(f"--keras_weights={weights}: no such file; give a Keras ResNet50 weights file, 'imagenet', or "
                     "nothing (random weights).")
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # Keep Keras off JAX: it only hands over arrays here.
  import keras
  model = keras.applications.ResNet50(weights=weights, classes=num_classes, classifier_activation=None)
  return from_keras_resnet50(model)


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
  if name not in TORCHVISION_NAMES:
    raise ValueError(f"--model={name}: choose one of {list(TORCHVISION_NAMES)}.")
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
  return from_torchvision(state, name)


# ----------------------------------------------------------------------------------------------------------------
# The torchvision layout from our variables; safetensors files
# ----------------------------------------------------------------------------------------------------------------
_TORCH_FIELDS = {("params", "bn", "scale"): "weight", ("params", "bn", "bias"): "bias",
                 ("batch_stats", "bn", "mean"): "running_mean", ("batch_stats", "bn", "var"): "running_var",
                 ("params", "conv", "kernel"): "weight", ("params", "dense", "kernel"): "weight",
                 ("params", "dense", "bias"): "bias"}


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
  """Our variable ('params', ('stage2', 'block0', 'shortcut', 'bn', 'scale')) -> 'layer2.0.downsample.1.weight'."""
  *module, leaf = path
  kind = "bn" if module[-1].startswith("bn") else "conv" if module[-1].startswith("conv") else module[-1]
  field = _TORCH_FIELDS.get((collection, kind, leaf))
  if field is None or len(module) not in (2, 3, 4):
    raise ValueError(f"{collection}/{'/'.join(path)} has no torchvision counterpart")
  if module[0] == "stem":
    prefix = "conv1" if kind == "conv" else "bn1"
  elif module[0] == "head":
    prefix = "fc"
  else:
    stage, block = int(module[0].removeprefix("stage")), int(module[1].removeprefix("block"))
    names = {("shortcut", "conv"): "downsample.0", ("shortcut", "bn"): "downsample.1"}
    prefix = f"layer{stage}.{block}." + names.get(tuple(module[2:]), module[-1])
  return f"{prefix}.{field}"


def _flat_variables(variables: Tree):
  for collection in ("params", "batch_stats"):
    for path, leaf in trees.flatten(variables.get(collection, {})).items():
      yield collection, path, leaf


def to_torchvision(variables: Tree) -> dict[str, np.ndarray]:
  """Our v1.5 ResNet's variables as a torchvision state_dict of numpy arrays (`from_torchvision` inverted): OIHW
  kernels, an (out, in) classifier, and `num_batches_tracked` (0) for every BatchNorm, as torchvision saves it.

  Raises:
    ValueError: a variable with no torchvision counterpart (another layout, e.g. a CIFAR net or v1 / pre-activation).
  """
  state = {}
  for collection, path, leaf in _flat_variables(variables):
    key, array = _torch_key(collection, path), np.asarray(leaf, np.float32)
    if array.ndim == 4:
      array = array.transpose(3, 2, 0, 1)
    elif key == "fc.weight":
      array = array.T
    state[key] = np.ascontiguousarray(array)
    if key.endswith(".running_var"):
      state[key.removesuffix("running_var") + "num_batches_tracked"] = np.zeros((), np.int64)
  return state


def torchvision_keys(name: str, num_classes: int) -> set[str]:
  """The state_dict keys of torchvision's `name` (num_batches_tracked left out)."""
  model = models.create(name, num_classes=num_classes)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
  return {_torch_key(c, p) for c, p, _ in _flat_variables({k: shapes[k] for k in ("params", "batch_stats")})}


def random_variables(name: str, num_classes: int, seed: int = 0) -> Tree:
  """Our network `name` as initialised by `models.create(name).init` (He-normal kernels, BatchNorm at identity)."""
  model = models.create(name, num_classes=num_classes)
  # The variables' shapes do not depend on the image size; a small one keeps this eager initialisation quick.
  variables = model.init(jax.random.key(seed), jnp.zeros((1, 16, 16, 3), jnp.float32))
  return jax.tree.map(np.asarray, {k: variables[k] for k in ("params", "batch_stats")})


def write_safetensors(path: str, state: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
  """Writes a state_dict of numpy arrays as a .safetensors file, atomically (a temporary file renamed over it)."""
  from safetensors.numpy import save

  files.write_bytes(os.path.abspath(path), save(dict(state), metadata=dict(metadata or {})))


def safetensors_variables(path: str, name: str) -> Tree:
  """Variables of our v1.5 network `name` from a .safetensors file in the torchvision / timm ResNet key layout.

  Raises:
    ValueError: no such file, not a safetensors file, or keys that are not `name`'s (unknown and missing keys
      named), or shapes that differ.
    ImportError: the safetensors package is not installed.
  """
  if name not in TORCHVISION_NAMES:
    raise ValueError(f"--model={name}: choose one of {list(TORCHVISION_NAMES)}.")
  if not os.path.isfile(path):
    raise ValueError(f"--safetensors={path}: no such file; give a .safetensors file of a torchvision or timm ResNet.")
  try:
    from safetensors.numpy import load_file
  except ImportError as error:
    raise ImportError("--from=safetensors needs the safetensors package: pip install safetensors") from error
  try:
    state = _unwrap(load_file(path))
  except Exception as error:  # safetensors raises its own error type for a malformed header.
    if isinstance(error, ValueError) and "state_dict" in str(error):
      raise
    raise ValueError(f"{path} is not a readable .safetensors file: {error}") from None
  classes = int(np.shape(state["fc.weight"])[0]) if "fc.weight" in state else 1000
  want = torchvision_keys(name, classes)
  got = {k for k in state if not k.endswith("num_batches_tracked")}
  unknown, missing = sorted(got - want), sorted(want - got)
  if unknown or missing:
    headless = " (a backbone saved without its classifier cannot fill the model's head)" if "fc.weight" in missing \
        else ""
    raise ValueError(f"{path} does not hold torchvision's / timm's {name}: unknown keys {unknown[:8]}"
                     f"{'...' if len(unknown) > 8 else ''} ({len(unknown)}), missing keys {missing[:8]}"
                     f"{'...' if len(missing) > 8 else ''} ({len(missing)}){headless}. Expected the torchvision "
                     "ResNet layout: conv1.weight, bn1.*, layer1.0.conv1.weight, ..., fc.weight, fc.bias.")
  return from_torchvision(state, name)


def model_flags(source: str, name: str) -> str:
  """The --config flags of the network the converted weights fit."""
  knobs = KERAS_RESNET50_KNOBS if source == "keras" else {}
  return " ".join([f"--config.model.name={name}", *(f"--config.model.{k}={v}" for k, v in knobs.items())])


def convert(source: str, out: str, *, overwrite: bool = False, keras_weights: str | None = None,
            num_classes: int = 1000, model: str = "resnet50", state_dict: str | None = None,
            torchvision_weights: str | None = None, safetensors: str | None = None, seed: int = 0) -> str:
  """Converts weights from `source` ('keras', 'torchvision', 'safetensors', or 'random': our own initialisation)
  into a weights directory for `init_from`, or, where `out` ends in .safetensors, into a safetensors file in the
  torchvision / timm layout.

  Returns:
    What was written and how to use it, for the console.

  Raises:
    ValueError: a missing input file, weights that do not match the network, or Keras weights (v1 layout) asked for
      in the torchvision layout.
    ImportError: the source's library (Keras, torch, safetensors) is not installed.
  """
  from resnet_jax import finetune

  to_file = out.endswith(".safetensors")
  name = "resnet50" if source == "keras" else model
  if source == "keras":
    if to_file:
      raise ValueError("Keras's ResNet50 is the v1 layout, which torchvision's keys do not describe; write it as a "
                       "weights directory (an --out without .safetensors).")
    variables = keras_variables(keras_weights, num_classes)
  elif source == "torchvision":
    variables = torchvision_variables(model, state_dict, torchvision_weights)
  elif source == "safetensors":
    variables = safetensors_variables(safetensors, model)
  elif model in TORCHVISION_NAMES:
    variables = random_variables(model, num_classes, seed)
  else:
    raise ValueError(f"--model={model}: choose one of {list(TORCHVISION_NAMES)}.")
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  classes = np.shape(variables["params"]["head"]["dense"]["kernel"])[-1]
  what = f"{name} ({count:,} parameters, {classes} classes) from {source}"
  if to_file:
    if os.path.exists(out) and not overwrite:
      raise ValueError(f"{out} already exists; pass --overwrite or choose another path.")
    write_safetensors(out, to_torchvision(variables), {"arch": name, "source": source})
    return (f"Wrote {what} to {out}, in the torchvision / timm key layout.\nConvert it with: python -m "
            f"experiments.convert_weights --from=safetensors --safetensors={out} --model={name} --out=DIR")
  finetune.save_params(out, variables, overwrite=overwrite)
  return (f"Wrote {what} to {out}.\n"
          f"Fine-tune from it with: {model_flags(source, name)} --config.init_from={out}")
