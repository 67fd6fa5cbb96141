"""Augmentation policies on uint8 images in TensorFlow: RandAugment, TrivialAugment, AutoAugment, random erasing.

`config.data.augment` names a policy as timm spells it:
- 'rand-m9-mstd0.5-inc1': RandAugment (Cubuk et al. 2020) as timm implements it: `n` ops per image (default 2),
  drawn with replacement from 15, each applied with probability `p` (0.5) at magnitude `m` (0-10; default 10) plus
  Gaussian noise of std `mstd` (above 100: uniform in [0, m]), clipped to [0, `mmax`] (10); `inc1` takes the
  variants whose severity increases with the magnitude (ResNet strikes back uses 'rand-m7-mstd0.5-inc1').
- 'trivial': TrivialAugment (wide; Müller & Hutter 2021) as torchvision's `TrivialAugmentWide`: one of 14 ops at one
  of 31 magnitude bins, nearest-neighbour geometry, black fill.
- 'original' (or 'autoaugment'), optionally '-mstd0.5': AutoAugment's ImageNet policy (Cubuk et al. 2019): one of
  25 sub-policies of two ops, each with its own probability and magnitude.

The ops follow PIL (`ImageOps`, `ImageEnhance`, `Image.transform`), which timm and torchvision apply: the pixel ops
in the same integer arithmetic, the geometric ones through TensorFlow's projective transform with PIL's pixel-centre
convention (tests/test_augment.py states and checks the tolerance of each). Geometric ops fill with ImageNet's mean
(timm's `img_mean`; black for TrivialAugment). Every random choice is drawn from the example's seed, so augmented
images are a function of (seed, epoch, example), like the crop.

Random erasing (Zhong et al. 2020, timm's `RandomErasing` in its 'pixel' mode): with probability `p`, one rectangle
of 2-33 % of the image with aspect ratio in [0.3, 1/0.3] (10 attempts) is replaced by Gaussian noise in the
normalised space. `erasing_box` draws the rectangle per example; `erase` fills it after normalisation.
"""
from __future__ import annotations

import math

import tensorflow as tf

from resnet_jax.data.policies import LEVEL_MAX, Policy, parse  # noqa: F401  (parse: the policy strings' one reader)

FILL = (124, 116, 104)  # ImageNet's mean on the 0-255 scale, rounded: timm's fill of the geometric ops.


# ----------------------------------------------------------------------------------------------------------------
# Pixel ops (PIL's integer arithmetic)
# ----------------------------------------------------------------------------------------------------------------
def invert(image):
  return 255 - image


def solarize(image, threshold):
  """Pixels at or above `threshold` inverted (ImageOps.solarize)."""
  return tf.where(tf.cast(image, tf.int32) >= tf.cast(threshold, tf.int32), 255 - image, image)


def solarize_add(image, add, threshold=128):
  """`add` added to pixels below `threshold`, capped at 255 (timm's solarize_add)."""
  pixels = tf.cast(image, tf.int32)
  return tf.cast(tf.where(pixels < threshold, tf.minimum(255, pixels + tf.cast(add, tf.int32)), pixels), tf.uint8)


def posterize(image, bits):
  """Only the `bits` (0-8) most significant bits of each pixel kept (ImageOps.posterize)."""
  shift = 8 - tf.clip_by_value(tf.cast(bits, tf.int32), 0, 8)
  pixels = tf.cast(image, tf.int32)
  return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, shift), shift), tf.uint8)


def _per_channel_lut(image, lut_fn):
  """Applies a 256-entry lookup table made by `lut_fn(channel_pixels)` to each channel."""
  channels = []
  for c in range(image.shape[-1]):
    channel = tf.cast(image[..., c], tf.int32)
    channels.append(tf.gather(lut_fn(channel), channel))
  return tf.cast(tf.stack(channels, axis=-1), tf.uint8)


def autocontrast(image):
  """Each channel stretched to 0-255 from its own min and max (ImageOps.autocontrast, no cutoff)."""
  def lut(channel):
    lo, hi = tf.cast(tf.reduce_min(channel), tf.float64), tf.cast(tf.reduce_max(channel), tf.float64)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.cast(tf.clip_by_value(tf.range(256, dtype=tf.float64) * scale - lo * scale, 0.0, 255.0), tf.int32)
    return tf.where(hi > lo, stretched, tf.range(256))
  return _per_channel_lut(image, lut)


def equalize(image):
  """Each channel's histogram equalised as PIL does it (ImageOps.equalize)."""
  def lut(channel):
    histogram = tf.math.bincount(tf.reshape(channel, [-1]), minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    safe = tf.maximum(step, 1)
    table = tf.minimum((step // 2 + tf.cumsum(histogram, exclusive=True)) // safe, 255)
    return tf.where(tf.logical_and(tf.size(nonzero) > 1, step > 0), table, tf.range(256))
  return _per_channel_lut(image, lut)


def blend(degenerate, image, factor):
  """PIL's Image.blend(degenerate, image, factor): degenerate + factor (image - degenerate) in float32, clipped and
  truncated to uint8 (ImageEnhance's enhance)."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + tf.cast(factor, tf.float32) * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def grayscale(image):
  """PIL's convert('L'): (19595 R + 38470 G + 7471 B + 2^15) >> 16, as int32 [H, W, 1]."""
  pixels = tf.cast(image, tf.int32)
  return (pixels[..., :1] * 19595 + pixels[..., 1:2] * 38470 + pixels[..., 2:3] * 7471 + 0x8000) // 65536


def color(image, factor):
  """Saturation (ImageEnhance.Color): a blend with the grey image."""
  return blend(grayscale(image), image, factor)


def contrast(image, factor):
  """ImageEnhance.Contrast: a blend with the mean grey level, rounded."""
  mean = tf.floor(tf.reduce_mean(tf.cast(grayscale(image), tf.float64)) + 0.5)
  return blend(tf.cast(mean, tf.float32), image, factor)


def brightness(image, factor):
  """ImageEnhance.Brightness: a blend with black."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """ImageEnhance.Sharpness: a blend with PIL's SMOOTH filter (3x3 [1 1 1; 1 5 1; 1 1 1] / 13, rounded; the border
  pixels as they are)."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  channels = image.shape[-1]
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], "VALID")[0]
  smooth = tf.cast(tf.floor(tf.clip_by_value(smooth, 0.0, 255.0) + 0.5), tf.uint8)
  inner = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  rows, cols = tf.range(height)[:, None], tf.range(width)[None, :]
  border = (rows == 0) | (rows == height - 1) | (cols == 0) | (cols == width - 1)
  degenerate = tf.where(border[..., None], image, inner)
  return blend(degenerate, image, factor)


# ----------------------------------------------------------------------------------------------------------------
# Geometric ops (PIL's affine transform)
# ----------------------------------------------------------------------------------------------------------------
def affine(image, matrix, *, interpolation: str = "bilinear", fill=FILL):
  """PIL's `image.transform(size, AFFINE, matrix)`: output pixel (x, y) samples the input at (a x + b y + c,
  d x + e y + f), both measured from the image's corner with pixel centres at +0.5; outside the image, `fill`."""
  a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
  # TensorFlow measures from the first pixel's centre.
  transform = tf.stack([a, b, 0.5 * a + 0.5 * b + c - 0.5, d, e, 0.5 * d + 0.5 * e + f - 0.5, 0.0, 0.0])[None]
  fill = tf.constant(fill, tf.float32)[:image.shape[-1]]

  # PIL samples pixel floor(x + 0.5) and fills where x < -0.5 (x from the first pixel's centre); TensorFlow rounds
  # half away from zero. A hair added to the offsets makes the ties at -0.5, -1.5, ... go PIL's way.
  tie = tf.constant([0.0, 0.0, 1e-4, 0.0, 0.0, 1e-4, 0.0, 0.0])[None]

  def warp(pixels, interpolation, fill_mode):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=pixels[None], transforms=transform + tie if interpolation == "NEAREST" else transform,
        output_shape=tf.shape(image)[:2], fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode)[0]
  # PIL fills where the sample point falls outside the image and, inside it, interpolates with the edge pixels
  # repeated: TensorFlow's 'NEAREST' edge mode, masked by where a nearest-neighbour sample lands in the image.
  values = warp(tf.cast(image, tf.float32), interpolation.upper(), "NEAREST")
  inside = warp(tf.ones_like(image[..., :1], tf.float32), "NEAREST", "CONSTANT") > 0.5
  # PIL truncates the interpolated value; the hair above it keeps exact integers whole.
  out = tf.where(inside, tf.floor(values + 1e-3), fill)
  return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def rotate(image, degrees, **kwargs):
  """PIL's `image.rotate(degrees)` (counter-clockwise about the centre, same size)."""
  height, width = (tf.cast(s, tf.float32) for s in tf.unstack(tf.shape(image)[:2]))
  angle = -tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = width / 2.0, height / 2.0
  return affine(image, (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy), **kwargs)


def shear_x(image, factor, **kwargs):
  return affine(image, (1.0, factor, 0.0, 0.0, 1.0, 0.0), **kwargs)


def shear_y(image, factor, **kwargs):
  return affine(image, (1.0, 0.0, 0.0, factor, 1.0, 0.0), **kwargs)


def translate_x(image, pixels, **kwargs):
  return affine(image, (1.0, 0.0, pixels, 0.0, 1.0, 0.0), **kwargs)


def translate_y(image, pixels, **kwargs):
  return affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, pixels), **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Ops at a magnitude (timm's level-to-argument rules; `sign` is +1 or -1, drawn per op)
# ----------------------------------------------------------------------------------------------------------------
def _int(x):
  return tf.cast(tf.floor(x), tf.int32)


def _geometric(op, arg):
  return lambda image, level, sign, size, geo: op(image, arg(level, sign, size), **geo)


def _enhance(op, increasing: bool):
  if increasing:
    return lambda image, level, sign, size, geo: op(image, tf.maximum(0.1, 1.0 + sign * level / LEVEL_MAX * 0.9))
  return lambda image, level, sign, size, geo: op(image, level / LEVEL_MAX * 1.8 + 0.1)


TIMM_OPS = {
    "AutoContrast": lambda image, level, sign, size, geo: autocontrast(image),
    "Equalize": lambda image, level, sign, size, geo: equalize(image),
    "Invert": lambda image, level, sign, size, geo: invert(image),
    "Rotate": _geometric(rotate, lambda level, sign, size: sign * level / LEVEL_MAX * 30.0),
    "Posterize": lambda image, level, sign, size, geo: posterize(image, _int(level / LEVEL_MAX * 4)),
    "PosterizeIncreasing": lambda image, level, sign, size, geo: posterize(image, 4 - _int(level / LEVEL_MAX * 4)),
    "PosterizeOriginal": lambda image, level, sign, size, geo: posterize(image, _int(level / LEVEL_MAX * 4) + 4),
    "Solarize": lambda image, level, sign, size, geo: solarize(image, tf.minimum(256, _int(level / LEVEL_MAX * 256))),
    "SolarizeIncreasing": lambda image, level, sign, size, geo: solarize(
        image, 256 - tf.minimum(256, _int(level / LEVEL_MAX * 256))),
    "SolarizeAdd": lambda image, level, sign, size, geo: solarize_add(
        image, tf.minimum(128, _int(level / LEVEL_MAX * 110))),
    "Color": _enhance(color, False), "ColorIncreasing": _enhance(color, True),
    "Contrast": _enhance(contrast, False), "ContrastIncreasing": _enhance(contrast, True),
    "Brightness": _enhance(brightness, False), "BrightnessIncreasing": _enhance(brightness, True),
    "Sharpness": _enhance(sharpness, False), "SharpnessIncreasing": _enhance(sharpness, True),
    "ShearX": _geometric(shear_x, lambda level, sign, size: sign * level / LEVEL_MAX * 0.3),
    "ShearY": _geometric(shear_y, lambda level, sign, size: sign * level / LEVEL_MAX * 0.3),
    "TranslateXRel": _geometric(translate_x, lambda level, sign, size: sign * level / LEVEL_MAX * 0.45 * size[1]),
    "TranslateYRel": _geometric(translate_y, lambda level, sign, size: sign * level / LEVEL_MAX * 0.45 * size[0]),
}
RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
RAND_INCREASING_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
                       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
                       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")

# AutoAugment's ImageNet policy (Cubuk et al. 2019, appendix; as timm's 'original'): (op, probability, magnitude).
IMAGENET_POLICY = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)), (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)), (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)), (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)), (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)), (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)), (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)), (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)), (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)), (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)), (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

# TrivialAugment (wide), torchvision's ranges over 31 bins: (op, argument at bin 0, at bin 30, signed).
TRIVIAL_BINS = 31
TRIVIAL_OPS = {
    "Identity": lambda image, m, geo: image,
    "ShearX": lambda image, m, geo: shear_x(image, m, **geo),
    "ShearY": lambda image, m, geo: shear_y(image, m, **geo),
    "TranslateX": lambda image, m, geo: translate_x(image, tf.cast(tf.cast(m, tf.int32), tf.float32), **geo),
    "TranslateY": lambda image, m, geo: translate_y(image, tf.cast(tf.cast(m, tf.int32), tf.float32), **geo),
    "Rotate": lambda image, m, geo: rotate(image, m, **geo),
    "Brightness": lambda image, m, geo: brightness(image, 1.0 + m),
    "Color": lambda image, m, geo: color(image, 1.0 + m),
    "Contrast": lambda image, m, geo: contrast(image, 1.0 + m),
    "Sharpness": lambda image, m, geo: sharpness(image, 1.0 + m),
    "Posterize": lambda image, m, geo: posterize(image, _int(m)),
    "Solarize": lambda image, m, geo: solarize(image, tf.math.ceil(m)),
    "AutoContrast": lambda image, m, geo: autocontrast(image),
    "Equalize": lambda image, m, geo: equalize(image),
}
TRIVIAL_RANGES = {"ShearX": (0.0, 0.99, True), "ShearY": (0.0, 0.99, True), "TranslateX": (0.0, 32.0, True),
                  "TranslateY": (0.0, 32.0, True), "Rotate": (0.0, 135.0, True), "Brightness": (0.0, 0.99, True),
                  "Color": (0.0, 0.99, True), "Contrast": (0.0, 0.99, True), "Sharpness": (0.0, 0.99, True),
                  "Solarize": (255.0, 0.0, False)}


def trivial_magnitude(name: str, bin_index):
  """torchvision's magnitude of op `name` at `bin_index` (0-30), before the sign."""
  if name == "Posterize":  # 8 - round(bin / 5): 8 bits down to 2.
    return 8.0 - tf.round(tf.cast(bin_index, tf.float32) / ((TRIVIAL_BINS - 1) / 6.0))
  low, high, _ = TRIVIAL_RANGES.get(name, (0.0, 0.0, False))
  return low + (high - low) * tf.cast(bin_index, tf.float32) / (TRIVIAL_BINS - 1)


# ----------------------------------------------------------------------------------------------------------------
# Policies
# ----------------------------------------------------------------------------------------------------------------
def _magnitude(policy: Policy, magnitude, seed):
  if policy.magnitude_std == math.inf:
    magnitude = tf.random.stateless_uniform([], seed, 0.0, magnitude)
  elif policy.magnitude_std > 0:
    magnitude = magnitude + policy.magnitude_std * tf.random.stateless_normal([], seed)
  return tf.clip_by_value(tf.cast(magnitude, tf.float32), 0.0, policy.magnitude_max)


def _timm_op(image, names, index, level, sign):
  size = tf.cast(tf.shape(image)[:2], tf.float32)
  geo = {"interpolation": "bilinear", "fill": FILL}
  if len(names) == 1:
    return TIMM_OPS[names[0]](image, level, sign, size, geo)
  return tf.switch_case(index, [lambda name=name: tf.ensure_shape(TIMM_OPS[name](image, level, sign, size, geo),
                                                                  image.shape) for name in names])


def _sign(seed):
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def apply(policy: Policy, image, seed):
  """`image` (uint8 [H, W, C], static shape) augmented by `policy`, every choice drawn from `seed`."""
  seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, 4 * max(policy.num_ops, 2) + 2)))
  if policy.kind == "rand":
    names = RAND_INCREASING_OPS if policy.increasing else RAND_OPS
    for _ in range(policy.num_ops):
      index = tf.random.stateless_uniform([], next(seeds), 0, len(names), dtype=tf.int32)
      applied = tf.random.stateless_uniform([], next(seeds)) < policy.prob
      level, sign = _magnitude(policy, policy.magnitude, next(seeds)), _sign(next(seeds))
      image = tf.cond(applied, lambda image=image, index=index, level=level, sign=sign: _timm_op(
          image, names, index, level, sign), lambda image=image: image)
    return image
  if policy.kind == "original":
    choice = tf.random.stateless_uniform([], next(seeds), 0, len(IMAGENET_POLICY), dtype=tf.int32)

    def sub_policy(ops):
      out = image
      for position, (name, prob, magnitude) in enumerate(ops):
        applied = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 10 + position)) < prob
        level = _magnitude(policy, magnitude, tf.random.experimental.stateless_fold_in(seed, 20 + position))
        sign = _sign(tf.random.experimental.stateless_fold_in(seed, 30 + position))
        out = tf.cond(applied, lambda out=out, name=name, level=level, sign=sign: _timm_op(
            out, (name,), 0, level, sign), lambda out=out: out)
      return out
    return tf.switch_case(choice, [lambda ops=ops: sub_policy(ops) for ops in IMAGENET_POLICY])
  # TrivialAugment: one op, one bin, a sign.
  names = tuple(TRIVIAL_OPS)
  index = tf.random.stateless_uniform([], next(seeds), 0, len(names), dtype=tf.int32)
  bin_index = tf.random.stateless_uniform([], next(seeds), 0, TRIVIAL_BINS, dtype=tf.int32)
  sign = _sign(next(seeds))
  geo = {"interpolation": "nearest", "fill": (0, 0, 0)}

  def trivial(name):
    magnitude = trivial_magnitude(name, bin_index)
    if TRIVIAL_RANGES.get(name, (0, 0, False))[2]:
      magnitude = magnitude * sign
    return tf.ensure_shape(TRIVIAL_OPS[name](image, magnitude, geo), image.shape)
  return tf.switch_case(index, [lambda name=name: trivial(name) for name in names])


# ----------------------------------------------------------------------------------------------------------------
# Random erasing
# ----------------------------------------------------------------------------------------------------------------
ERASE_AREA = (0.02, 1 / 3)
ERASE_ASPECT = (0.3, 1 / 0.3)
ERASE_ATTEMPTS = 10


def erasing_box(seed, height: int, width: int, probability: float):
  """int32 [top, left, height, width] of timm's random-erasing rectangle for one image (all zero: none)."""
  draws = tf.random.stateless_uniform([ERASE_ATTEMPTS, 2], seed)
  area = (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * draws[:, 0]) * height * width
  log_low, log_high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
  aspect = tf.exp(log_low + (log_high - log_low) * draws[:, 1])
  h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  fits = (h < height) & (w < width)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  place = tf.random.stateless_uniform([2], tf.random.experimental.stateless_fold_in(seed, 1))
  top = tf.cast(place[0] * tf.cast(height - h[first] + 1, tf.float32), tf.int32)
  left = tf.cast(place[1] * tf.cast(width - w[first] + 1, tf.float32), tf.int32)
  erase = tf.reduce_any(fits) & (tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(
      seed, 2)) < probability)
  return tf.where(erase, tf.stack([top, left, h[first], w[first]]), tf.zeros([4], tf.int32))


def erase(images, boxes, seeds):
  """Normalised images [B, H, W, C] with each box [B, 4] filled with standard normal noise drawn from its seed."""
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  noise = tf.map_fn(lambda s: tf.random.stateless_normal(tf.shape(images)[1:], s), seeds,
                    fn_output_signature=tf.float32)
  rows = tf.range(height)[None, :, None]
  cols = tf.range(width)[None, None, :]
  top, left, h, w = (boxes[:, i, None, None] for i in range(4))
  inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
  return tf.where(inside[..., None], noise, images)
