"""Import of published ResNet weights: Keras `ResNet50` and torchvision ResNets.

Both importers return `{'params': ..., 'batch_stats': ...}` as nested dicts of float32 numpy arrays, checked
path by path and shape by shape against the matching `resnet_jax.models` network, so a wrong or truncated source
fails here with a list of the offending paths rather than later inside `apply`.

Neither TensorFlow/Keras nor PyTorch is imported by this module: the importers only read arrays from the objects
they are given.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import models

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


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(k.key) for k in path): tuple(leaf.shape) for path, leaf in flat}


def _check_matches(variables: Tree, model: models.ResNet, source: str) -> Tree:
  """Raises ValueError unless `variables` has exactly the paths and shapes `model.init` creates."""
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
  want = _flat_shapes({k: expected[k] for k in ("params", "batch_stats")})
  got = _flat_shapes(variables)
  missing = sorted(set(want) - set(got))
  unexpected = sorted(set(got) - set(want))
  wrong = sorted(f"{p}: {got[p]} (expected {want[p]})" for p in set(want) & set(got) if want[p] != got[p])
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
