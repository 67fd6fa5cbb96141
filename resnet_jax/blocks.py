"""The units residual networks are built of: residual blocks (basic and bottleneck, post- and pre-activation, every
shortcut option, grouped convolutions, channel attention, stochastic depth), the stem (classic or deep), a stage of
blocks, and the classifier head. `resnet_jax.models.ResNet` assembles them.

Each block sows the output of its residual branch into the collection `INTERMEDIATES` (see `ResidualBlock`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

# The collection the blocks sow their residual-branch outputs into.
INTERMEDIATES = "intermediates"

ModuleDef = Any

# The classifier's initialisers: flax's defaults (LeCun normal kernels, zero biases), kept on purpose. torchvision
# draws both from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) instead; with a trained backbone either trains the same way.
_dense_kernel_init = nn.initializers.lecun_normal()
_dense_bias_init = nn.initializers.zeros


def _same_padding(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
  # Symmetric padding, as in the paper's reference models (Keras, torchvision). XLA's 'SAME' pads the bottom/right
  # more on even inputs with stride 2, which shifts the sampling grid and breaks weight compatibility.
  return ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))


def pad_identity(x: jax.Array, strides: int, features: int) -> jax.Array:
  """Option-A shortcut: subsample by `strides` and zero-pad channels up to `features` (no parameters)."""
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  extra = features - x.shape[-1]
  if extra < 0:
    raise ValueError(f"shortcut 'A' cannot shrink channels ({x.shape[-1]} -> {features}); use shortcut 'B' or 'C'")
  if extra:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, extra)))
  return x


def avg_pool_2x2_ceil(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2 that keeps the last row and column of an odd-sized map.

  The semantics of PyTorch's `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)`, which timm's ResNet-D
  shortcut uses: an odd size H gives (H + 1) / 2 outputs, and a window that hangs over the edge averages only the
  values inside the map (at 7x7, the last output of a row is the mean of 2 values, the corner the last value itself).
  """
  pads = tuple((0, size % 2) for size in x.shape[1:3])
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding=pads, count_include_pad=False)


class Projection(nn.Module):
  """Options B and C: a strided 1x1 convolution, followed by BatchNorm unless `norm` is None (pre-activation).

  With `avg_down` (ResNet-D, He et al. 2019) a downsampling projection first averages 2x2 windows and then applies a
  stride-1 1x1 convolution, so it reads every input position instead of a quarter of them.
  """
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef | None
  avg_down: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    strides = self.strides
    if self.avg_down and strides > 1:
      x, strides = avg_pool_2x2_ceil(x), 1
    x = self.conv(self.features, (1, 1), strides=strides, padding=_same_padding(1), name="conv")(x)
    if self.norm is not None:
      x = self.norm(name="bn")(x)
    return x


def make_divisible(value: float, divisor: int = 8) -> int:
  """`value` rounded to the nearest multiple of `divisor`, at least `divisor` (timm's rule for SE widths)."""
  return max(divisor, int(value + divisor / 2) // divisor * divisor)


def se_channels(channels: int) -> int:
  """Width of a squeeze-and-excitation bottleneck: channels / 16 rounded to a multiple of 8 (timm's SEModule)."""
  return make_divisible(channels / 16)


def eca_kernel_size(channels: int) -> int:
  """ECA's 1-D kernel size, adaptive to the channel count: the odd number nearest |log2(C) + 1| / 2, at least 3."""
  t = int(abs(math.log(channels, 2) + 1) / 2)
  return max(t if t % 2 else t + 1, 3)


class SqueezeExcite(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018): channel gates from the globally pooled features.

  Pool, a 1x1 convolution to `se_channels(C)` with bias, ReLU, a 1x1 convolution back to C with bias, sigmoid, and
  the input scaled by the gates (timm's SEModule, reduction 16, as its `seresnet*` models use it).
  """
  conv: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = nn.relu(self.conv(se_channels(x.shape[-1]), (1, 1), padding="VALID", use_bias=True, name="fc1")(s))
    s = self.conv(x.shape[-1], (1, 1), padding="VALID", use_bias=True, name="fc2")(s)
    return x * nn.sigmoid(s)


class EfficientChannelAttention(nn.Module):
  """ECA (Wang et al. 2020): channel gates from a 1-D convolution across the pooled channels, no reduction.

  The pooled features (one value per channel) are convolved as a sequence along the channel axis by a bias-free
  kernel of `eca_kernel_size(C)` taps with zero padding, then a sigmoid gates the input (timm's EcaModule).
  """
  conv: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = eca_kernel_size(x.shape[-1])
    s = jnp.mean(x, axis=(1, 2))[..., None]  # (N, C, 1): the channels as a sequence of one feature
    s = self.conv(1, (k,), padding=((k // 2, k // 2),), name="conv")(s)
    return x * nn.sigmoid(s[:, None, None, :, 0])


ATTENTION = {"se": SqueezeExcite, "eca": EfficientChannelAttention}


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth (Huang et al. 2016): zero each example's `x` with probability `rate`, and divide the others by
  1 - rate so the expectation is unchanged (timm's DropPath with scale_by_keep)."""
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


class ResidualBlock(nn.Module):
  """A residual unit: out = act(shortcut(x) + branch(x)) (v1, v1.5) or shortcut(x) + branch(x) ('preact').

  Subclasses only say which convolutions the branch stacks (`layers`); everything else is shared.
  Convolution i (from 1) is named `conv{i}` and its BatchNorm `bn{i}` (after the conv in v1/v1.5, before it in
  'preact'). The end of the branch is, in order: channel attention (`attn`, after the last BatchNorm, where timm
  places it), stochastic depth (`drop_path`, training only), then the addition.
  """
  channels: int  # output channels of a basic block, inner channels of a bottleneck
  strides: int
  variant: str
  shortcut: str
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  zero_init: bool = False  # last BatchNorm scale starts at zero
  lesioned: bool = False  # skip the residual branch at inference (a lesion study; not a regulariser)
  preactivate: bool = True  # 'preact': False when the stem has already applied BN + activation
  cardinality: int = 1  # groups of the bottleneck's 3x3 convolution (ResNeXt)
  base_width: int = 64  # inner width per group at 64 channels (ResNeXt's "4d"; 128: Wide ResNet-50-2)
  avg_down: bool = False  # ResNet-D projection shortcut (see `Projection`)
  attn: str = "none"  # channel attention at the end of the branch: a key of ATTENTION, or 'none'
  drop_path: float = 0.0  # probability of dropping this block's branch per example in training
  branch_dropout: float = 0.0  # dropout before every convolution of the branch but the first (Wide ResNets)
  expansion: ClassVar[int] = 1

  def layers(self) -> tuple[tuple[int, int, int, int], ...]:
    """(features, kernel size, stride, groups) of each convolution of the residual branch."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = self.channels * self.expansion
    changes_shape = self.strides != 1 or x.shape[-1] != features
    preact = self.variant == "preact"
    # Pre-activation units normalise their input once for both paths: the projection shortcut reads the
    # normalised input too (He et al. 2016), while an identity shortcut carries the raw input.
    pre = self.act(self.norm(name="bn1")(x)) if preact and self.preactivate else x

    y = pre
    layers = self.layers()
    for i, (feat, kernel, stride, groups) in enumerate(layers, start=1):
      last = i == len(layers)
      if preact and i > 1:
        y = self.act(self.norm(name=f"bn{i}")(y))
      if i > 1 and self.branch_dropout:
        y = nn.Dropout(self.branch_dropout, deterministic=not train)(y)
      y = self.conv(feat, (kernel, kernel), strides=stride, padding=_same_padding(kernel), feature_group_count=groups,
                    name=f"conv{i}")(y)
      if not preact:
        scale_init = nn.initializers.zeros if (last and self.zero_init) else nn.initializers.ones
        y = self.norm(name=f"bn{i}", scale_init=scale_init)(y)
        if not last:
          y = self.act(y)
    if self.attn != "none":
      y = ATTENTION[self.attn](self.conv, name="attn")(y)
    if self.drop_path and train:
      y = drop_path(y, self.drop_path, self.make_rng("dropout"))

    if self.shortcut == "none":
      shortcut = None
    elif self.shortcut == "C" or (self.shortcut == "B" and changes_shape):
      shortcut = Projection(features, self.strides, self.conv, None if preact else self.norm, self.avg_down,
                            name="shortcut")(pre)
    else:
      shortcut = pad_identity(x, self.strides, features)

    skipped = self.lesioned and not train
    if skipped:
      # The branch is still built (so parameters exist whatever mode `init` runs in); XLA removes it.
      y = jnp.zeros_like(y)
    self.sow(INTERMEDIATES, "branch", y)

    if shortcut is None:
      # A removed layer of a plain network passes its input through (the caller forbids it where shapes change).
      return x if skipped else (y if preact else self.act(y))
    out = shortcut + y
    return out if preact else self.act(out)


class BasicBlock(ResidualBlock):
  """Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets)."""
  expansion: ClassVar[int] = 1

  def layers(self):
    return ((self.channels, 3, self.strides, 1), (self.channels, 3, 1, 1))


def bottleneck_width(channels: int, cardinality: int, base_width: int) -> int:
  """Inner width of a bottleneck: floor(channels * base_width / 64) per group, times the groups (ResNeXt, timm and
  torchvision's rule; 64 and 1 give `channels`, base width 128 doubles it as in Wide ResNet-50-2)."""
  return int(math.floor(channels * (base_width / 64))) * cardinality


class Bottleneck(ResidualBlock):
  """1x1 reduce, 3x3, 1x1 expand (x4). The stride sits on the first 1x1 in v1, on the 3x3 otherwise; the 3x3 is
  grouped into `cardinality` groups (ResNeXt) and the inner width follows `bottleneck_width`."""
  expansion: ClassVar[int] = 4

  def layers(self):
    s1, s2 = (self.strides, 1) if self.variant == "v1" else (1, self.strides)
    inner = bottleneck_width(self.channels, self.cardinality, self.base_width)
    return ((inner, 1, s1, 1), (inner, 3, s2, self.cardinality), (self.channels * 4, 1, 1, 1))


def stem_widths(kind: str, width: int) -> tuple[int, ...]:
  """Output channels of each stem convolution: 'classic' one conv of `width`; 'deep' (ResNet-C/-S, timm's stem_type
  'deep') three 3x3 convs `width`, `width`, 2 x `width`; 'deep_tiered' (ResNet-T) 3/4 of the first."""
  if kind == "classic":
    return (width,)
  first = max(1, 3 * (width // 4)) if kind == "deep_tiered" else width
  return (first, width, 2 * width)


class Stem(nn.Module):
  """Convolution(s), BatchNorm, activation, optional 3x3/2 pooling.

  'classic': one `kernel` x `kernel` convolution with stride `strides` (`conv`, `bn`). 'deep' and 'deep_tiered':
  three 3x3 convolutions, the first with stride `strides`, each followed by BatchNorm and the activation
  (`conv1`..`conv3`, `bn1`..`bn3`; the widths are `stem_widths`).
  """
  features: int
  kernel: int
  strides: int
  pool: str
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]
  kind: str = "classic"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kind == "classic":
      x = self.conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                    padding=_same_padding(self.kernel), name="conv")(x)
      x = self.act(self.norm(name="bn")(x))
    else:
      for i, features in enumerate(stem_widths(self.kind, self.features), start=1):
        x = self.conv(features, (3, 3), strides=self.strides if i == 1 else 1, padding=_same_padding(3),
                      name=f"conv{i}")(x)
        x = self.act(self.norm(name=f"bn{i}")(x))
    if self.pool == "max":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=_same_padding(3))
    elif self.pool == "avg":
      x = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=_same_padding(3))
    return x


class Stage(nn.Module):
  """`num_blocks` blocks; the first one carries the stride."""
  block: ModuleDef  # a block class with the shared settings bound (functools.partial)
  num_blocks: int
  channels: int
  strides: int
  lesioned: tuple[int, ...] = ()  # indices within this stage
  preactivate_first: bool = True
  drop_path: tuple[float, ...] = ()  # each block's stochastic-depth rate (empty: none)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for j in range(self.num_blocks):
      x = self.block(
          channels=self.channels,
          strides=self.strides if j == 0 else 1,
          lesioned=j in self.lesioned,
          preactivate=self.preactivate_first or j > 0,
          drop_path=self.drop_path[j] if self.drop_path else 0.0,
          name=f"block{j}",
      )(x, train)
    return x


def global_pool(x: jax.Array, kind: str) -> jax.Array:
  """NHWC -> NC by average or max over space, or NHWC -> N(HWC) by flattening."""
  if kind == "avg":
    return jnp.mean(x, axis=(1, 2))
  if kind == "max":
    return jnp.max(x, axis=(1, 2))
  return x.reshape(x.shape[0], -1)


class Head(nn.Module):
  """Classifier: pooling, optional hidden layers, dropout, the final layer.

  'conv' applies the classifier as a 1x1 convolution before pooling. A 1x1 convolution is a dense layer applied
  at every position, so it is written as `nn.Dense` over the channel axis: its parameters then have exactly the
  dense head's shapes and can be swapped in (with average pooling the logits are equal, since pooling is linear).
  """
  kind: str
  num_classes: int
  pool: str
  hidden: tuple[int, ...]
  dropout: float
  act: Callable[[jax.Array], jax.Array]
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype,
                              kernel_init=_dense_kernel_init, bias_init=_dense_bias_init)
    drop = (lambda h: nn.Dropout(self.dropout, deterministic=not train)(h)) if self.dropout else (lambda h: h)
    if self.kind == "conv":
      return global_pool(dense(self.num_classes, name="conv")(drop(x)), self.pool)
    x = global_pool(x, self.pool)
    for i, width in enumerate(self.hidden):
      x = self.act(dense(width, name=f"hidden{i}")(x))
    return dense(self.num_classes, name="dense")(drop(x))
