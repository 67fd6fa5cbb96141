"""The units residual networks are built of: residual blocks (basic and bottleneck, post- and pre-activation, every
shortcut option), the stem, a stage of blocks, and the classifier head. `resnet_jax.models.ResNet` assembles them.

Each block sows the output of its residual branch into the collection `INTERMEDIATES` (see `ResidualBlock`).
"""
from __future__ import annotations

import functools
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


class Projection(nn.Module):
  """Options B and C: a strided 1x1 convolution, followed by BatchNorm unless `norm` is None (pre-activation)."""
  features: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef | None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, (1, 1), strides=self.strides, padding=_same_padding(1), name="conv")(x)
    if self.norm is not None:
      x = self.norm(name="bn")(x)
    return x


class ResidualBlock(nn.Module):
  """A residual unit: out = act(shortcut(x) + branch(x)) (v1, v1.5) or shortcut(x) + branch(x) ('preact').

  Subclasses only say which convolutions the branch stacks (`layers`); everything else is shared.
  Convolution i (from 1) is named `conv{i}` and its BatchNorm `bn{i}` (after the conv in v1/v1.5, before it in
  'preact').
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
  expansion: ClassVar[int] = 1

  def layers(self) -> tuple[tuple[int, int, int], ...]:
    """(features, kernel size, stride) of each convolution of the residual branch."""
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
    for i, (feat, kernel, stride) in enumerate(layers, start=1):
      last = i == len(layers)
      if preact and i > 1:
        y = self.act(self.norm(name=f"bn{i}")(y))
      y = self.conv(feat, (kernel, kernel), strides=stride, padding=_same_padding(kernel), name=f"conv{i}")(y)
      if not preact:
        scale_init = nn.initializers.zeros if (last and self.zero_init) else nn.initializers.ones
        y = self.norm(name=f"bn{i}", scale_init=scale_init)(y)
        if not last:
          y = self.act(y)

    if self.shortcut == "none":
      shortcut = None
    elif self.shortcut == "C" or (self.shortcut == "B" and changes_shape):
      shortcut = Projection(features, self.strides, self.conv, None if preact else self.norm, name="shortcut")(pre)
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
    return ((self.channels, 3, self.strides), (self.channels, 3, 1))


class Bottleneck(ResidualBlock):
  """1x1 reduce, 3x3, 1x1 expand (x4). The stride sits on the first 1x1 in v1, on the 3x3 otherwise."""
  expansion: ClassVar[int] = 4

  def layers(self):
    s1, s2 = (self.strides, 1) if self.variant == "v1" else (1, self.strides)
    return ((self.channels, 1, s1), (self.channels, 3, s2), (self.channels * 4, 1, 1))


class Stem(nn.Module):
  """Convolution, BatchNorm, activation, optional 3x3/2 pooling."""
  features: int
  kernel: int
  strides: int
  pool: str
  conv: ModuleDef
  norm: ModuleDef
  act: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.conv(self.features, (self.kernel, self.kernel), strides=self.strides,
                  padding=_same_padding(self.kernel), name="conv")(x)
    x = self.act(self.norm(name="bn")(x))
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

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for j in range(self.num_blocks):
      x = self.block(
          channels=self.channels,
          strides=self.strides if j == 0 else 1,
          lesioned=j in self.lesioned,
          preactivate=self.preactivate_first or j > 0,
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
