"""Residual networks (He et al. 2015, 2016) as Flax linen modules, with the knobs ablations need.

One `ResNet` module covers every network; the named models are data: a depth table bound with
`functools.partial`. `create(name, num_classes=..., **knobs)` returns a module, `names()` lists the names.

Inputs are NHWC floats, already normalised. Logits are float32 whatever the compute dtype; BatchNorm scales,
shifts and running statistics are float32 too.

Parameter paths are stable and readable::

    stem/conv, stem/bn
    stage1/block0/conv1, stage1/block0/bn1, ..., stage1/block0/shortcut/conv, stage1/block0/shortcut/bn
    final_bn                                   ('preact' only: the BatchNorm before pooling)
    head/dense   (or head/conv, head/hidden0, head/hidden1, ...)

Each block sows the output of its residual branch (what is added to the shortcut; zeros for a block lesioned by
`lesion_blocks`) into the collection `INTERMEDIATES` ('intermediates') under `stage{i}/block{j}/branch`, as a
one-element tuple, so tools can read the branch's signal (e.g. its std, He et al. 2015 Fig. 7) without changing
the model: `logits, state = model.apply(variables, x, mutable=[INTERMEDIATES])`.

Initialisers: convolutions He et al. (2015) normal in fan-out mode, as torchvision's ResNets; BatchNorm scale 1 and
shift 0 (the last scale of each branch 0 with `zero_init_residual`); the classifier and hidden layers LeCun normal
kernels and zero biases (flax's defaults; torchvision draws both from U(+-1/sqrt(fan_in))).
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import re
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax import batchnorm
from resnet_jax.blocks import (
  ATTENTION,
  BasicBlock,
  Bottleneck,
  Head,
  ResidualBlock,
  Stage,
  Stem,
  bottleneck_width,
  stem_widths,
)
from resnet_jax.blocks import INTERMEDIATES as INTERMEDIATES  # Re-exported: where tools read the branch outputs.

VARIANTS = ("v1", "v1.5", "preact")
SHORTCUTS = ("A", "B", "C", "none")
STEM_POOLS = ("max", "avg", "none")
GLOBAL_POOLS = ("avg", "max", "flatten")
HEADS = ("dense", "conv", "mlp")
STEM_TYPES = ("classic", "deep", "deep_tiered")
ATTENTION_LAYERS = ("none",) + tuple(ATTENTION)
ACTIVATIONS = {
    "relu": nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "gelu": nn.gelu,
    "silu": nn.silu,
}

# He et al. (2015) initialisation in fan-out mode, as torchvision's ResNets: N(0, 2 / (k * k * out_channels)). Fan-out
# keeps the variance of the gradients steady through the backward pass of deep stacks (fan-in would keep the
# activations' variance steady in the forward pass); with BatchNorm after every convolution either works.
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


# The ranges a numeric setting can be declared with (a knob's `valid`, and config.validate's own table): name ->
# (test, what the error says). One definition, used by the model and by config validation.
RANGES = {
    "positive": (lambda v: v > 0, "must be positive"),
    "non_negative": (lambda v: v >= 0, "must be zero or positive"),
    "unit": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
}


def knob(default: Any, doc: str, *, choices: Sequence[Any] | None = None, valid: str | None = None,
         config_type: type | None = None, set_by: str | None = None) -> Any:
  """Declares a model knob: a `ResNet` field with its documentation, in one place.

  Everything else about the knob is derived from this declaration: `KNOBS`, the `config.model` field of the same
  name (declared in configs/default.py from `knob_specs`, typed by `config_type` or the default's type; `None`
  there keeps the model's default), the docs table (`knob_table`), the validation of `choices` and of the numeric
  range `valid` (by the model, and by `config.validate` before a run starts).

  Args:
    default: the value of the generic network (the named CIFAR models override a few, see `_MODELS`).
    doc: one line: what the knob does.
    choices: the allowed values, where they are a fixed set.
    valid: the allowed range of a number, a key of `RANGES`.
    config_type: the config field's type where the default's type does not say it (None defaults, dtypes).
    set_by: where a knob is set by the engine from another config field (e.g. the compute dtype from
      `config.dtype`) instead of from `config.model`.
  """
  return dataclasses.field(default=default, metadata={
      "knob": True, "doc": doc, "choices": tuple(choices) if choices is not None else None, "valid": valid,
      "config_type": config_type or type(default), "set_by": set_by})


def _choice(knob: str, value: Any, choices: Sequence[Any]) -> None:
  if value not in choices:
    raise ValueError(f"unknown {knob} {value!r}; choose one of {list(choices)}")


class ResNet(nn.Module):
  """A residual network (or, with shortcut='none', its plain counterpart).

  Structure fields (set by the named models): `block`, `stage_sizes`, `widths`, `stem_width`, `stem_kernel`,
  `stem_strides`. Every other field is a knob, declared with `knob` and documented where it is declared.
  """
  num_classes: int
  stage_sizes: Sequence[int]
  block: type[ResidualBlock] = BasicBlock
  widths: Sequence[int] = (64, 128, 256, 512)
  stem_width: int = 64
  stem_kernel: int = 7
  stem_strides: int = 2
  # Knobs: each declared once, here.
  variant: str = knob("v1.5", "'v1': stride on the first 1x1 of a downsampling bottleneck (paper, Keras); 'v1.5': on "
                      "the 3x3 (torchvision); 'preact': pre-activation units (He et al. 2016)", choices=VARIANTS)
  shortcut: str = knob("B", "'A' identity with zero-padded channels (no parameters), 'B' projection where the shape "
                       "changes, 'C' projection in every block, 'none' the plain network", choices=SHORTCUTS)
  zero_init_residual: bool = knob(False, "the last BatchNorm scale of each residual branch starts at 0 (needs a "
                                  "shortcut and a post-activation variant)")
  stem_pool: str = knob("max", "3x3/2 pooling after the stem convolution", choices=STEM_POOLS)
  global_pool: str = knob("avg", "pooling before the classifier", choices=GLOBAL_POOLS)
  head: str = knob("dense", "classifier: 'dense'; 'conv', a 1x1 convolution before pooling (same parameters and, "
                   "with 'avg' pooling, the same logits as 'dense'); 'mlp', hidden layers first", choices=HEADS)
  head_hidden: tuple[int, ...] = knob((), "hidden widths of the 'mlp' head, e.g. (4096, 4096)")
  dropout: float = knob(0.0, "dropout rate before the classifier's last layer", valid="unit")
  activation: str = knob("relu", "the nonlinearity everywhere (stem, blocks, hidden layers)",
                         choices=tuple(ACTIVATIONS))
  width: float = knob(1.0, "channel multiplier of the stem and every stage", valid="positive")
  dtype: Any = knob(jnp.float32, "compute dtype (BatchNorm statistics and the logits stay float32)",
                    config_type=str, set_by="config.dtype")
  param_dtype: Any = knob(jnp.float32, "dtype of the conv and dense parameters (BatchNorm's stay float32)",
                          config_type=str)
  bn_momentum: float = knob(0.9, "momentum of BatchNorm's running averages", valid="unit")
  bn_epsilon: float = knob(1e-5, "BatchNorm's epsilon", valid="positive")
  bn_axis_name: str | None = knob(None, "named mapped axis over which BatchNorm averages its batch statistics",
                                  config_type=str, set_by="config.sync_batch_stats")
  bn_axis_index_groups: Any = knob(None, "device groups of that axis whose statistics are averaged together, "
                                   "e.g. ((0, 1), (2, 3)); None: all devices", config_type=tuple)
  stem_type: str = knob("classic", "'classic': one 7x7 convolution; 'deep': three 3x3 convolutions of stem_width, "
                        "stem_width, 2 x stem_width (ResNet-C, -D, -S); 'deep_tiered': the first 3/4 as wide "
                        "(ResNet-T)", choices=STEM_TYPES)
  avg_down: bool = knob(False, "downsampling projection shortcuts average 2x2 windows, then a stride-1 1x1 "
                        "convolution (ResNet-D; needs shortcut 'B' or 'C')")
  cardinality: int = knob(1, "groups of each bottleneck's 3x3 convolution (ResNeXt's 32 in 32x4d)", valid="positive")
  base_width: int = knob(64, "bottleneck inner width per group at 64 channels (ResNeXt's 4 in 32x4d; 128 doubles "
                         "the bottleneck as in Wide ResNet-50-2)", valid="positive")
  attn_layer: str = knob("none", "channel attention at the end of each residual branch: 'se' squeeze-and-excitation "
                         "(reduction 16), 'eca' (adaptive 1-D kernel)", choices=ATTENTION_LAYERS)
  drop_path_rate: float = knob(0.0, "stochastic depth: the last block's branch is dropped per example with this "
                               "probability in training, earlier blocks' with a rate growing linearly from 0; "
                               "survivors are scaled by 1/(1 - rate); off at evaluation", valid="unit")
  branch_dropout: float = knob(0.0, "dropout before each convolution of a residual branch but the first (Wide "
                               "ResNets: 0.3 between the two 3x3s)", valid="unit")
  lesion_blocks: tuple[int, ...] = knob((), "flat block indices (0..N-1, see `ResNet.block_plan`) whose residual "
                                        "branch is skipped at inference (lesion studies; `drop_blocks` in "
                                        "earlier versions); training ignores it")

  def __post_init__(self):
    self._validate()
    super().__post_init__()

  def _validate(self) -> None:
    for spec in _knob_fields():
      if spec.metadata["choices"] is not None:
        _choice(spec.name, getattr(self, spec.name), spec.metadata["choices"])
    if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 1:
      raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
    if self.zero_init_residual and self.shortcut == "none":
      raise ValueError("zero_init_residual=True with shortcut='none' makes every block output zeros: "
                       "turn zero_init_residual off for plain networks, or choose shortcut 'A', 'B' or 'C'")
    if self.zero_init_residual and self.variant == "preact":
      raise ValueError("zero_init_residual needs a BatchNorm at the end of the residual branch, which 'preact' "
                       "units do not have: use variant 'v1' or 'v1.5', or turn zero_init_residual off")
    if self.head == "mlp" and not self.head_hidden:
      raise ValueError("head='mlp' needs head_hidden widths, e.g. head_hidden=(4096, 4096)")
    if self.head != "mlp" and self.head_hidden:
      raise ValueError(f"head_hidden={tuple(self.head_hidden)} is only used by head='mlp' (head is {self.head!r})")
    if any(not isinstance(h, int) or h < 1 for h in self.head_hidden):
      raise ValueError(f"head_hidden must be positive integers, got {tuple(self.head_hidden)}")
    if self.head == "conv" and self.global_pool == "flatten":
      raise ValueError("head='conv' classifies every position before pooling; combine it with global_pool 'avg' "
                       "or 'max', not 'flatten'")
    for name, spec in knob_specs().items():
      if spec["valid"]:
        ok, requirement = RANGES[spec["valid"]]
        if not ok(getattr(self, name)):
          raise ValueError(f"{name}={getattr(self, name)!r} {requirement}")
    if self.bn_axis_index_groups is not None and self.bn_axis_name is None:
      raise ValueError("bn_axis_index_groups needs bn_axis_name (the named axis the groups partition)")
    for knob in ("dtype", "param_dtype"):
      try:
        floating = jnp.issubdtype(jnp.dtype(getattr(self, knob)), jnp.floating)
      except TypeError:
        floating = False
      if not floating:
        raise ValueError(f"{knob} must be a floating dtype such as 'float32' or 'bfloat16', "
                         f"got {getattr(self, knob)!r}")
    if self.drop_path_rate and self.shortcut == "none":
      raise ValueError("drop_path_rate drops whole residual branches, and shortcut='none' has no other path: a dropped "
                       "block would drop the signal. Use a shortcut ('A', 'B' or 'C') or drop_path_rate=0")
    if self.avg_down and self.shortcut in ("A", "none"):
      raise ValueError(f"avg_down changes the projection shortcut, and shortcut={self.shortcut!r} has none: use "
                       "shortcut 'B' or 'C', or avg_down=False")
    if self.block is not Bottleneck and (self.cardinality != 1 or self.base_width != 64):
      raise ValueError(f"cardinality and base_width shape bottleneck blocks; this network has {self.block.__name__}s "
                       "(use cardinality=1, base_width=64, or a bottleneck network such as resnet50)")
    if self.block is Bottleneck and any(bottleneck_width(self._scaled(w), self.cardinality, self.base_width) < 1
                                        for w in self.widths):
      raise ValueError(f"cardinality={self.cardinality}, base_width={self.base_width} at width={self.width} give a "
                       "bottleneck of no channels (floor(channels * base_width / 64) is 0): raise base_width or width")
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(f"stage_sizes {tuple(self.stage_sizes)} and widths {tuple(self.widths)} differ in length")
    self._validate_lesion_blocks()

  def _validate_lesion_blocks(self) -> None:
    plan = self.block_plan()
    for index in self.lesion_blocks:
      try:
        index = operator.index(index)
      except TypeError:
        raise ValueError(f"lesion_blocks must hold block indices (integers), got {index!r}") from None
      if not 0 <= index < len(plan):
        raise ValueError(f"lesion_blocks index {index!r} is out of range: this network has {len(plan)} blocks, "
                         f"numbered 0..{len(plan) - 1}")
      path, changes_shape = plan[index]
      if changes_shape and self.shortcut == "none":
        raise ValueError(f"lesion_blocks index {index} ({path}) changes the feature shape and shortcut='none' has "
                         "nothing to carry it: drop only blocks that keep the shape, or use shortcut 'A', 'B' or 'C'")

  def _scaled(self, width: int) -> int:
    return max(1, int(round(width * self.width)))

  def _stem_features(self) -> int:
    return stem_widths(self.stem_type, self._scaled(self.stem_width))[-1]

  def drop_path_rates(self) -> list[float]:
    """Each block's stochastic-depth rate, in the flat order of `block_plan`: drop_path_rate x i / (N - 1), from 0 at
    the first block to drop_path_rate at the last (Huang et al. 2016's linear decay of survival; timm's spread)."""
    n = sum(self.stage_sizes)
    return [self.drop_path_rate * i / max(n - 1, 1) for i in range(n)]

  def block_plan(self) -> list[tuple[str, bool]]:
    """(path, changes_shape) of every block, in the flat order `lesion_blocks` indexes."""
    plan = []
    channels = self._stem_features()
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      features = self._scaled(width) * self.block.expansion
      for j in range(num_blocks):
        strided = i > 0 and j == 0
        plan.append((f"stage{i + 1}/block{j}", strided or channels != features))
        channels = features
    return plan

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, train_backbone: bool | None = None) -> jax.Array:
    """Logits of `x` (NHWC, normalised).

    `train` selects training mode (BatchNorm with batch statistics, dropout on). `train_backbone=False` with
    `train=True` keeps everything before the head in inference mode (running statistics, lesions applied) while
    the head trains: a linear probe on a frozen backbone. None means `train`.
    """
    backbone_train = train if train_backbone is None else train_backbone
    act = ACTIVATIONS[self.activation]
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                             kernel_init=_conv_init)
    norm = functools.partial(
        batchnorm.BatchNorm, use_running_average=not backbone_train, momentum=self.bn_momentum,
        epsilon=self.bn_epsilon,
        dtype=self.dtype, param_dtype=jnp.float32, axis_name=self.bn_axis_name,
        axis_index_groups=self.bn_axis_index_groups)
    block = functools.partial(self.block, variant=self.variant, shortcut=self.shortcut, conv=conv, norm=norm,
                              act=act, zero_init=self.zero_init_residual, cardinality=self.cardinality,
                              base_width=self.base_width, avg_down=self.avg_down, attn=self.attn_layer,
                              branch_dropout=self.branch_dropout)

    x = jnp.asarray(x, self.dtype)
    x = Stem(self._scaled(self.stem_width), self.stem_kernel, self.stem_strides, self.stem_pool, conv, norm, act,
             self.stem_type, name="stem")(x)
    first = 0
    rates = self.drop_path_rates() if self.drop_path_rate else []
    for i, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
      lesioned = tuple(k - first for k in self.lesion_blocks if first <= k < first + num_blocks)
      x = Stage(block, num_blocks, self._scaled(width), 1 if i == 0 else 2, lesioned,
                # The pre-activation stem already normalised and activated the first block's input.
                preactivate_first=i > 0, drop_path=tuple(rates[first:first + num_blocks]),
                name=f"stage{i + 1}")(x, backbone_train)
      first += num_blocks
    if self.variant == "preact":
      x = act(norm(name="final_bn")(x))
    logits = Head(self.head, self.num_classes, self.global_pool, tuple(self.head_hidden), self.dropout, act,
                  self.dtype, self.param_dtype, name="head")(x, train)
    return jnp.asarray(logits, jnp.float32)


# --- The named models: a depth table, not a class per network. ---

_IMAGENET_DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
    200: (Bottleneck, (3, 24, 36, 3)),
}
_CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)  # 6n + 2: the paper's (any other 6n + 2 also works, see `create`)


def _cifar_factory(depth: int) -> Callable[..., ResNet]:
  return functools.partial(ResNet, block=BasicBlock, stage_sizes=((depth - 2) // 6,) * 3, widths=(16, 32, 64),
                           stem_width=16, stem_kernel=3, stem_strides=1, stem_pool="none", shortcut="A")


def _wide_cifar_factory(depth: int, k: int) -> Callable[..., ResNet]:
  """WRN-depth-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks, (depth - 4) / 6 per stage, widths 16k,
  32k, 64k after a 3x3 convolution of 16, projection shortcuts where the shape changes, dropout 0.3 between the
  convolutions (the paper's CIFAR setting; `branch_dropout=0` gives its no-dropout rows)."""
  return functools.partial(ResNet, block=BasicBlock, stage_sizes=((depth - 4) // 6,) * 3,
                           widths=(16 * k, 32 * k, 64 * k), stem_width=16, stem_kernel=3, stem_strides=1,
                           stem_pool="none", variant="preact", shortcut="B", branch_dropout=0.3)


def _family(name: str, block: type[ResidualBlock], sizes: tuple[int, ...], **knobs) -> tuple[str, Callable]:
  return name, functools.partial(ResNet, block=block, stage_sizes=sizes, **knobs)


# The 2017-2019 relatives, named and built as timm (and, for ResNeXt and Wide ResNet, torchvision) build them.
_DEEP = dict(stem_type="deep", stem_width=32)  # ResNet-C: the 7x7 replaced by three 3x3s of 32, 32, 64
_D = dict(_DEEP, avg_down=True)  # ResNet-D: C plus average-pool downsampling in the projection shortcuts
_R50, _R101 = (3, 4, 6, 3), (3, 4, 23, 3)
_FAMILY = dict([
    _family("resnet26d", Bottleneck, (2, 2, 2, 2), **_D),
    _family("resnet50c", Bottleneck, _R50, **_DEEP),
    _family("resnet50d", Bottleneck, _R50, **_D),
    _family("resnet101d", Bottleneck, _R101, **_D),
    _family("resnet50s", Bottleneck, _R50, stem_type="deep", stem_width=64),
    _family("resnet50t", Bottleneck, _R50, stem_type="deep_tiered", stem_width=32, avg_down=True),
    _family("seresnet50", Bottleneck, _R50, attn_layer="se"),
    _family("ecaresnet50d", Bottleneck, _R50, attn_layer="eca", **_D),
    _family("resnext50_32x4d", Bottleneck, _R50, cardinality=32, base_width=4),
    _family("resnext101_32x8d", Bottleneck, _R101, cardinality=32, base_width=8),
    _family("resnext101_64x4d", Bottleneck, _R101, cardinality=64, base_width=4),
    _family("seresnext50_32x4d", Bottleneck, _R50, cardinality=32, base_width=4, attn_layer="se"),
    _family("wide_resnet50_2", Bottleneck, _R50, base_width=128),
    _family("wide_resnet101_2", Bottleneck, _R101, base_width=128),
])
_WIDE_CIFAR = ((28, 10), (16, 8))  # The paper's CIFAR nets (any depth 6n + 4 and width k also work, see `create`)

_MODELS: dict[str, Callable[..., ResNet]] = {
    **{f"resnet{depth}": functools.partial(ResNet, block=block, stage_sizes=sizes)
       for depth, (block, sizes) in _IMAGENET_DEPTHS.items()},
    **_FAMILY,
    **{f"cifar_resnet{depth}": _cifar_factory(depth) for depth in _CIFAR_DEPTHS},
    **{f"wrn_{depth}_{k}": _wide_cifar_factory(depth, k) for depth, k in _WIDE_CIFAR},
}


def names() -> list[str]:
  """The registered model names, ImageNet nets first."""
  return list(_MODELS)


def _cifar_net(name: str) -> Callable[..., ResNet]:
  """A CIFAR ResNet of any depth 6n + 2 (`cifar_resnet8`, `cifar_resnet74`, ...) or Wide ResNet of any depth 6n + 4
  and width (`wrn_40_4`, ...), beside the registered ones.

  Raises:
    ValueError: an unknown name, naming the valid ones.
  """
  wide = re.fullmatch(r"wrn_(\d+)_(\d+)", name)
  if wide:
    depth, k = (int(g) for g in wide.groups())
    if depth >= 10 and (depth - 4) % 6 == 0 and k >= 1:
      return _wide_cifar_factory(depth, k)
    raise ValueError(f"unknown model {name!r}: Wide ResNets are wrn_<depth>_<k> with depth 6n+4 (10, 16, 22, 28, 40) "
                     "and k >= 1")
  prefix = "cifar_resnet"
  depth = name[len(prefix):]
  if name.startswith(prefix) and depth.isdigit():
    if int(depth) >= 8 and (int(depth) - 2) % 6 == 0:
      return _cifar_factory(int(depth))
    raise ValueError(f"unknown model {name!r}: CIFAR ResNets have depth 6n+2 (8, 14, 20, 26, 32, ..., 56, 110), "
                     f"{depth} is not")
  raise ValueError(f"unknown model {name!r}; choose one of {names()} (or cifar_resnet<6n+2>, wrn_<6n+4>_<k>)")


def _knob_fields() -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(ResNet) if f.metadata.get("knob")]


# The knobs `create` accepts, in declaration order: every field of `ResNet` declared with `knob`.
KNOBS = tuple(f.name for f in _knob_fields())


def knob_specs() -> dict[str, dict[str, Any]]:
  """{knob: {'default', 'doc', 'choices', 'config_type', 'set_by'}} from the declarations in `ResNet`."""
  return {f.name: {"default": f.default, **f.metadata} for f in _knob_fields()}


def config_knobs() -> tuple[str, ...]:
  """The knobs a config sets through `config.model` (the others are set by the engine, see `knob`'s `set_by`)."""
  return tuple(name for name, spec in knob_specs().items() if spec["set_by"] is None)


def _family_label(name: str) -> str:
  # The depth-parametrised families are shown as patterns; every other model by its name.
  for prefix in ("cifar_resnet", "wrn_"):
    if name.startswith(prefix):
      return prefix + "*"
  return name


def family_defaults(knob_name: str) -> dict[Any, list[str]]:
  """{value: [model names or patterns]} where the named models override the generic default of `knob_name`."""
  out: dict[Any, list[str]] = {}
  for name, factory in _MODELS.items():
    if knob_name in factory.keywords:
      labels = out.setdefault(factory.keywords[knob_name], [])
      if _family_label(name) not in labels:
        labels.append(_family_label(name))
  return out


def _value_text(value: Any) -> str:
  if isinstance(value, str):
    return repr(value)
  if hasattr(value, "dtype") or isinstance(value, type):
    return jnp.dtype(value).name
  return repr(value)


def knob_table() -> str:
  """The markdown table of every knob (docs/models.md holds a copy that a test keeps equal to this)."""
  lines = ["| knob | what it does | values | default | set with |", "|---|---|---|---|---|"]
  for name, spec in knob_specs().items():
    values = ", ".join(_value_text(c) for c in spec["choices"]) if spec["choices"] else spec["config_type"].__name__
    default = _value_text(spec["default"])
    overrides = family_defaults(name)
    if overrides:
      default += "; " + "; ".join(", ".join(f"`{n}`" for n in labels) + f": {_value_text(v)}"
                                  for v, labels in overrides.items())
    where = f"`{spec['set_by']}`" if spec["set_by"] else f"`config.model.{name}`"
    lines.append(f"| `{name}` | {spec['doc']} | {values} | {default} | {where} |".replace("\n", " "))
  return "\n".join(lines) + "\n"


def _as_tuple(value: Any) -> Any:
  # Configs hand over lists; module fields should be hashable tuples.
  if isinstance(value, (list, tuple)):
    return tuple(_as_tuple(v) for v in value)
  return value


def create(name: str, *, num_classes: int, **overrides: Any) -> ResNet:
  """Returns the named ResNet with knob overrides applied.

  Args:
    name: one of `names()`, or `cifar_resnet<depth>` for any depth 6n + 2.
    num_classes: size of the classifier.
    **overrides: knobs (see `KNOBS`, each documented where `ResNet` declares it); a value of None means "keep the
      model's default", so configs can pass every knob unconditionally. Dtypes may be given by name ('bfloat16').

  Raises:
    ValueError: unknown name or knob, bad knob value, or impossible combination.
  """
  factory = _MODELS.get(name) or _cifar_net(name)
  unknown = sorted(set(overrides) - set(KNOBS))
  if unknown:
    raise ValueError(f"unknown model knob(s) {unknown}; valid knobs are {list(KNOBS)}")
  knobs = {k: _as_tuple(v) for k, v in overrides.items() if v is not None}
  for knob_name in ("dtype", "param_dtype"):
    if knob_name in knobs and isinstance(knobs[knob_name], str):
      try:
        knobs[knob_name] = jnp.dtype(knobs[knob_name])
      except TypeError:
        pass  # the module's validation names the valid choices
  return factory(num_classes=num_classes, **knobs)
