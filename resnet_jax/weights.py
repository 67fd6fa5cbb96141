"""Import of published ResNet weights: Keras `ResNet50`, and torchvision's and timm's ResNets and their relatives
(ResNet-C/D/S, SE, ECA, ResNeXt, Wide ResNet) from a state_dict or a `.safetensors` file in their shared key layout
(`torch_layout`); and the way back, our variables in that layout (`to_torch_layout`, `write_safetensors`).

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


# --- The torch layout: torchvision's and timm's ResNet keys ---
#
# torchvision and timm name a ResNet's tensors the same way (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, fc),
# and timm extends the scheme for its relatives: a deep stem is conv1.0/.1/.3/.4/.6 then bn1, a ResNet-D shortcut
# is downsample.1 (conv) and .2 (BN) after the parameter-free pool at .0, and channel attention is layerX.Y.se.*.
# The mapping is written once, from our paths to theirs (`_torch_module`); every conversion, both ways, goes
# through the layout it gives for a model (`torch_layout`).

_TORCH_LEAVES = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
                 ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def _torch_module(module: tuple[str, ...], avg_down: bool) -> str | None:
  """Our module path -> the torch layout's module name, e.g. ('stage2', 'block0', 'shortcut', 'bn') ->
  'layer2.0.downsample.1' ('.2' with avg_down); None where the layout has no counterpart."""
  if module[0] == "stem" and len(module) == 2:
    kind, index = module[1].rstrip("123"), module[1][len(module[1].rstrip("123")):]
    if not index:  # the classic stem
      return {"conv": "conv1", "bn": "bn1"}.get(kind)
    i = int(index) - 1  # a deep stem: nn.Sequential(conv, bn, act, conv, bn, act, conv), then bn1
    return f"conv1.{3 * i}" if kind == "conv" else ("bn1" if i == 2 else f"conv1.{3 * i + 1}")
  if module == ("head", "dense"):
    return "fc"
  if not module[0].startswith("stage") or len(module) < 3:
    return None
  prefix = f"layer{module[0].removeprefix('stage')}.{module[1].removeprefix('block')}"
  rest = module[2:]
  if rest[0] == "shortcut" and len(rest) == 2:
    return f"{prefix}.downsample.{int(avg_down) + {'conv': 0, 'bn': 1}[rest[1]]}"
  if rest[0] == "attn" and len(rest) == 2:
    return f"{prefix}.se.{rest[1]}"
  return f"{prefix}.{rest[0]}" if len(rest) == 1 else None


def torch_layout(model: models.ResNet) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """{torch key: (collection, our path, our shape)} of every parameter and BatchNorm statistic of `model`.

  Raises:
    ValueError: a model with a part the torch layout cannot name (a pre-activation net's final BatchNorm, a 'conv'
      or 'mlp' head).
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32)))
  layout = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in trees.flatten(shapes[collection]).items():
      module = _torch_module(path[:-1], model.avg_down)
      if module is None or (collection, path[-1]) not in _TORCH_LEAVES:
        raise ValueError(f"{collection}/{'/'.join(path)} has no counterpart in the torchvision / timm ResNet layout "
                         "(pre-activation units and 'conv' / 'mlp' heads have none)")
      layout[f"{module}.{_TORCH_LEAVES[collection, path[-1]]}"] = (collection, path, tuple(leaf.shape))
  return layout


def _to_numpy(value: Any) -> np.ndarray:
  # torch tensors expose .detach(); plain arrays pass through, so torch itself is never needed here.
  if hasattr(value, "detach"):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _from_torch_array(array: np.ndarray, key: str) -> np.ndarray:
  """A torch-layout array in our orientation: conv OIHW -> HWIO (grouped: O, I/g -> I/g, O too), a 1-D conv (ECA)
  O I K -> K I O, the classifier (out, in) -> (in, out)."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 3:
    return array.transpose(2, 1, 0)
  return array.T if key == "fc.weight" else array


def _our_shape(shape: tuple[int, ...], key: str) -> tuple[int, ...]:
  """The shape `_from_torch_array` gives an array of torch-layout `shape` (without touching any data)."""
  return tuple(_from_torch_array(np.broadcast_to(np.float32(0), shape), key).shape)


def _to_torch_array(array: np.ndarray, key: str) -> np.ndarray:
  if array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  if array.ndim == 3:
    return array.transpose(2, 1, 0)
  return array.T if key == "fc.weight" else array


# The named models the torch layout describes (the CIFAR nets' option-A shortcuts and Wide ResNets' pre-activation
# units have no torchvision / timm counterpart), and the subset torchvision builds.
TORCH_LAYOUT_NAMES = tuple(n for n in models.names() if not n.startswith(("cifar_", "wrn_")))
TORCHVISION_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")


def _num_classes(state: Mapping[str, Any]) -> int | None:
  return int(np.shape(state["fc.weight"])[0]) if "fc.weight" in state else None


def _signature(keys) -> tuple:
  """What tells the architectures apart before shapes: blocks per stage, deep stem, ResNet-D shortcut, attention."""
  blocks: dict[int, int] = {}
  for key in keys:
    parts = key.split(".")
    if parts[0].startswith("layer") and len(parts) > 2 and parts[1].isdigit():
      stage = int(parts[0].removeprefix("layer"))
      blocks[stage] = max(blocks.get(stage, 0), int(parts[1]) + 1)
  attn = "se" if any(".se.fc1." in k for k in keys) else "eca" if any(".se.conv." in k for k in keys) else "none"
  return (tuple(blocks[i] for i in sorted(blocks)), "conv1.0.weight" in keys,
          any(".downsample.2." in k for k in keys), attn)


def _model_signature(model: models.ResNet) -> tuple:
  return (tuple(model.stage_sizes), model.stem_type != "classic", model.avg_down, model.attn_layer)


def identify(state: Mapping[str, Any]) -> str | None:
  """The named model whose torch layout (keys and shapes) `state` holds exactly, or None."""
  state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
  classes = _num_classes(state) or 1000
  shapes = {k: tuple(np.shape(v)) for k, v in state.items()}
  signature = _signature(state)
  for name in TORCH_LAYOUT_NAMES:
    model = models.create(name, num_classes=classes)
    if _model_signature(model) != signature:
      continue
    layout = torch_layout(model)
    if set(layout) == set(shapes) and all(_our_shape(shapes[k], k) == want for k, (_, _, want) in layout.items()):
      return name
  return None


def from_torch_layout(state_dict: Mapping[str, Any], name: str | models.ResNet, source: str | None = None) -> Tree:
  """Converts a torchvision or timm ResNet `state_dict` to variables for our network `name` (with `knobs`).

  The named models are built as torchvision and timm build them (v1.5 layout, shortcut B, BatchNorm epsilon 1e-5,
  bias-free convolutions), so `models.create(name, num_classes=<classes>)` receives them with default knobs.
  Kernels are transposed to our orientation (`_from_torch_array`).

  Args:
    state_dict: `model.state_dict()` of torchvision's or timm's `name`; values may be torch tensors or numpy arrays.
    name: one of TORCH_LAYOUT_NAMES, or the receiving module itself (any `models.ResNet` the layout describes, e.g.
      a reduced-width net; its classifier size must be the state_dict's).
    source: how to name the input in errors (default: "the <name> state_dict").

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of float32 numpy arrays.

  Raises:
    ValueError: unknown name, or a state_dict that does not hold that network: one line naming the architecture it
      holds where it is another named model, else the unknown, missing and misshapen keys.
  """
  named = isinstance(name, str)
  if named and name not in TORCH_LAYOUT_NAMES:
    raise ValueError(f"no torchvision / timm counterpart for {name!r}; choose one of {list(TORCH_LAYOUT_NAMES)}")
  source = source or f"the {name if named else 'ResNet'} state_dict"
  state = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  classes = _num_classes(state)
  if classes is None:
    raise ValueError(f"{source} has no 'fc.weight': a backbone saved without its classifier cannot fill the "
                     "model's head; save the full network")
  model = models.create(name, num_classes=classes) if named else name
  layout = torch_layout(model)
  unknown, missing = sorted(set(state) - set(layout)), sorted(set(layout) - set(state))
  wrong = []
  for key in sorted(set(state) & set(layout)):
    got = _our_shape(np.shape(state[key]), key)
    if got != layout[key][2]:
      wrong.append(f"{key} -> {'/'.join(layout[key][1])}: {got} (expected {layout[key][2]})")
  if unknown or missing or wrong:
    other = identify(state) if named else None
    if other is not None and other != name:
      raise ValueError(f"{source} holds {other} weights, not {name}: convert it with --model={other} (and train or "
                       f"evaluate with --config.model.name={other})")
    raise ValueError(f"{source} does not match {name}: unknown keys {unknown[:8]}{'...' if len(unknown) > 8 else ''} "
                     f"({len(unknown)}), missing keys {missing[:8]}{'...' if len(missing) > 8 else ''} "
                     f"({len(missing)}), wrong shapes {wrong[:8]}{'...' if len(wrong) > 8 else ''}")
  variables: Tree = {"params": {}, "batch_stats": {}}
  for key, (collection, path, _) in layout.items():
    _put(variables[collection], path, _from_torch_array(_to_numpy(state[key]), key))
  # Every path and shape came from the model's own layout, checked above: no second trace of the model is needed.
  return variables


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
  """Variables of our network `name` from a saved torchvision or timm state_dict, or from torchvision itself."""
  if name not in TORCH_LAYOUT_NAMES:
    raise ValueError(f"--model={name}: choose one of {list(TORCH_LAYOUT_NAMES)}.")
  if state_dict_file is None and name not in TORCHVISION_NAMES:
    raise ValueError(f"torchvision has no {name}: pass --state_dict=FILE (e.g. timm's weights saved with "
                     "torch.save(model.state_dict(), FILE)) or --from=safetensors.")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ImportError("--from=torchvision needs PyTorch: pip install torch (and torchvision to build the network "
                      "without --state_dict), or convert Keras weights with --from=keras.") from error
  if state_dict_file is not None:
    if not os.path.isfile(state_dict_file):
      raise ValueError(f"--state_dict={state_dict_file}: no such file.")
    state = _unwrap(torch.load(state_dict_file, map_location="cpu", weights_only=True))
    return from_torch_layout(state, name, source=state_dict_file)
  else:
    try:
      import torchvision  # pylint: disable=g-import-not-at-top
    except ImportError as error:
      raise ImportError("Without --state_dict the network is built by torchvision, which is not installed: pip "
                        "install torchvision, or pass --state_dict=FILE.") from error
    state = torchvision.models.get_model(name, weights=weights_name).state_dict()
  return from_torch_layout(state, name, source=f"torchvision's {name}")


# ----------------------------------------------------------------------------------------------------------------
# The torchvision layout from our variables; safetensors files
# ----------------------------------------------------------------------------------------------------------------
def to_torch_layout(variables: Tree, name: str | models.ResNet) -> dict[str, np.ndarray]:
  """Our variables of network `name` (a name or the module) as a torchvision / timm state_dict of numpy arrays
  (`from_torch_layout` inverted), with `num_batches_tracked` (0) for every BatchNorm, as torch saves it.

  Raises:
    ValueError: a network or variable the torch layout has no name for.
  """
  classes = int(np.shape(variables["params"]["head"]["dense"]["kernel"])[-1])
  layout = torch_layout(models.create(name, num_classes=classes) if isinstance(name, str) else name)
  state = {}
  for key, (collection, path, _) in layout.items():
    leaf = variables[collection]
    for part in path:
      leaf = leaf[part]
    state[key] = np.ascontiguousarray(_to_torch_array(np.asarray(leaf, np.float32), key))
    if key.endswith(".running_var"):
      state[key.removesuffix("running_var") + "num_batches_tracked"] = np.zeros((), np.int64)
  return state


def torch_layout_keys(name: str, num_classes: int) -> set[str]:
  """The state_dict keys of torchvision's / timm's `name` (num_batches_tracked left out)."""
  return set(torch_layout(models.create(name, num_classes=num_classes)))


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
  """Variables of our network `name` from a .safetensors file in the torchvision / timm key layout.

  Raises:
    ValueError: no such file, not a safetensors file, or not `name`'s weights (one line naming the model it holds,
      where it holds another named model; else the unknown, missing and misshapen keys).
    ImportError: the safetensors package is not installed.
  """
  if name not in TORCH_LAYOUT_NAMES:
    raise ValueError(f"--model={name}: choose one of {list(TORCH_LAYOUT_NAMES)}.")
  if not os.path.isfile(path):
    raise ValueError(f"--safetensors={path}: no such file; give a .safetensors file of a torchvision or timm ResNet.")
  return from_torch_layout(read_safetensors(path), name, source=path)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """The state_dict in a .safetensors file, as numpy arrays (DataParallel's 'module.' prefixes removed).

  Raises:
    ValueError: not a readable safetensors file.
    ImportError: the safetensors package is not installed.
  """
  try:
    from safetensors.numpy import load_file
  except ImportError as error:
    raise ImportError("--from=safetensors needs the safetensors package: pip install safetensors") from error
  try:
    return _unwrap(load_file(path))
  except Exception as error:  # safetensors raises its own error type for a malformed header.
    if isinstance(error, ValueError) and "state_dict" in str(error):
      raise
    raise ValueError(f"{path} is not a readable .safetensors file: {error}") from None


def model_flags(source: str, name: str) -> str:
  """The --config flags of the network the converted weights fit."""
  knobs = KERAS_RESNET50_KNOBS if source == "keras" else {}
  return " ".join([f"--config.model.name={name}", *(f"--config.model.{k}={v}" for k, v in knobs.items())])


def convert(source: str, out: str, *, overwrite: bool = False, keras_weights: str | None = None,
            num_classes: int = 1000, model: str = "resnet50", state_dict: str | None = None,
            torchvision_weights: str | None = None, safetensors: str | None = None, seed: int = 0,
            tag: str | None = None) -> str:
  """Converts weights from `source` ('keras', 'torchvision', 'safetensors', or 'random': our own initialisation)
  into a weights directory for `init_from`, or, where `out` ends in .safetensors, into a safetensors file in the
  torchvision / timm layout. With `tag` (a published weights tag of `model`, see `resnet_jax.pretrained`), the
  message also says how those weights were evaluated and the flags that evaluate them here.

  Returns:
    What was written and how to use it, for the console.

  Raises:
    ValueError: a missing input file, weights that do not match the network, or Keras weights (v1 layout) asked for
      in the torchvision layout.
    ImportError: the source's library (Keras, torch, safetensors) is not installed.
  """
  from resnet_jax import finetune, pretrained

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
  elif model in TORCH_LAYOUT_NAMES:
    variables = random_variables(model, num_classes, seed)
  else:
    raise ValueError(f"--model={model}: choose one of {list(TORCH_LAYOUT_NAMES)}.")
  count = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  classes = np.shape(variables["params"]["head"]["dense"]["kernel"])[-1]
  what = f"{name} ({count:,} parameters, {classes} classes) from {source}"
  if to_file:
    if os.path.exists(out) and not overwrite:
      raise ValueError(f"{out} already exists; pass --overwrite or choose another path.")
    write_safetensors(out, to_torch_layout(variables, name), {"arch": name, "source": source})
    return (f"Wrote {what} to {out}, in the torchvision / timm key layout.\nConvert it with: python -m "
            f"experiments.convert_weights --from=safetensors --safetensors={out} --model={name} --out=DIR")
  finetune.save_params(out, variables, overwrite=overwrite)
  message = f"Wrote {what} to {out}.\nFine-tune from it with: {model_flags(source, name)} --config.init_from={out}"
  if tag is not None:
    message += "\n" + pretrained.evaluation_flags(name, tag)
  return message
