"""`shapes`: a built-in, generated image-classification dataset (a TFDS builder).

Ten classes of geometric shapes drawn with a random colour, size, position and rotation on a cluttered, noisy
background. It needs no download, prepares in under a minute on two CPU cores, and is CIFAR-shaped (32x32 RGB) by
default, so CIFAR ResNets train on it directly. A linear model on pixels stays at chance (position, rotation and
colour vary), while a CIFAR ResNet-20 passes 90 % test accuracy within about 60k training images.

Every image is a pure function of the config's seed, the split and the example index, and the same bytes on every
CPU: two preparations with the same config give identical examples, on any machine. Drawing is vectorised with
NumPy over chunks of images (each shape is a signed distance field evaluated on the pixel grid and blended with one
pixel of anti-aliasing), and images are stored as PNG encoded here with `zlib`: drawing and encoding involve neither
TensorFlow nor a Python loop over pixels.

Why the same bytes everywhere: every value that reaches a pixel comes from the integer stream of NumPy's PCG64
through IEEE-754 basic operations (+ - * / and sqrt, each correctly rounded by every CPU), comparisons, min / max,
rounding and integer arithmetic, one elementwise operation at a time. Nothing calls a transcendental function
(NumPy chooses its sin, cos, hypot and arctan2 kernels by CPU feature at run time, and AVX-512's round differently
in the last bit from AVX2's; libm's differ between systems), reduces floats in an order a kernel could change, or
leaves a compiler room to fuse a multiply and an add. Sines, cosines and arctangents are short series below, and the
pixel noise is a sum of uniform bytes (`_noise`). Version 2.0.0 of the builder draws this way; 1.0.0 used NumPy's
sin, cos, hypot, arctan2 and normal draws, whose bytes depended on the CPU (a pixel in thousands of images).

Importing this module registers the builder with TFDS under the name `shapes`:

    tfds.builder('shapes/small', data_dir=...).download_and_prepare()
"""
import colorsys
import dataclasses
import struct
import zlib

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = (
    "circle", "square", "triangle", "ring", "cross", "star", "half_disc", "crescent", "ell", "hourglass",
)

# The class colours of `ShapesConfig.class_colour_fraction`: ten hues evenly spaced around the colour wheel, at full
# saturation and value (RGB in [0, 1]), in the order of CLASS_NAMES.
CLASS_COLOURS = np.array([colorsys.hsv_to_rgb(k / 10, 1.0, 1.0) for k in range(10)], np.float32)

# Examples drawn per vectorised call: large enough to amortise NumPy overhead, small enough (a few MB of float32
# per intermediate at 32x32) to stay in cache-friendly memory. Also the unit of seeding, so it is part of the
# dataset's definition: changing it changes the images.
_CHUNK = 1000
_SPLIT_IDS = {"train": 0, "test": 1}
_DESCRIPTION = ("Geometric shapes (10 classes) with random colour, size, position and rotation on a cluttered, noisy "
                "background. Generated: no download.")


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
  """Size, length and difficulty of a `shapes` variant.

  Attributes:
    image_size: height and width in pixels.
    num_train: number of training examples.
    num_test: number of test examples.
    seed: the seed every image derives from.
    radius_range: shape radius as fractions of the image size (min, max).
    min_contrast: least difference, in [0, 1] colour units on the most different channel, between the shape's
      colour and the background's base colour.
    num_lines: clutter line segments drawn behind the shape.
    num_dots: clutter dots drawn behind the shape.
    num_occluders: clutter line segments drawn over the shape.
    gradient: largest amplitude of the background's linear colour ramp.
    noise_std: standard deviation of the per-pixel noise, in [0, 1] colour units (nearly Gaussian: a sum of four
      uniform bytes, scaled; see `_noise`).
    class_colour_fraction: fraction of the shapes (each image drawn independently) painted in their class's own
      colour (`CLASS_COLOURS`) instead of a random one: a weak colour cue to the label, which gives a network a
      first learning signal before it has learnt any shape. 0 (the default) draws nothing extra, so configs
      without it keep their images.
    num_distractors: shapes of other classes (each image's own, drawn at random) painted under the labelled one,
      smaller than it: the label is the class of the largest shape, the one on top, so recognising which shapes are
      present is not enough. 0 (the default) draws nothing extra.
    distractor_scale: distractor radius as fractions of the labelled shape's radius (min, max).
    stretch: largest aspect ratio of a shape: each shape (labelled and distractor) is stretched along its own axis
      by a factor drawn log-uniformly in [1/stretch, stretch]. 1 (the default) draws nothing extra.
  """
  image_size: int = 32
  num_train: int = 50_000
  num_test: int = 10_000
  seed: int = 0
  radius_range: tuple[float, float] = (0.25, 0.42)
  min_contrast: float = 0.3
  num_lines: int = 3
  num_dots: int = 4
  num_occluders: int = 0
  gradient: float = 0.3
  noise_std: float = 0.04
  class_colour_fraction: float = 0.0
  num_distractors: int = 0
  distractor_scale: tuple[float, float] = (0.5, 0.75)
  stretch: float = 1.0


BUILDER_CONFIGS = (
    ShapesConfig(name="default", description="32x32, 50k train / 10k test, moderate clutter and noise."),
    ShapesConfig(name="small", num_train=2_000, num_test=500,
                 description="32x32, 2k train / 500 test: for tests and quick checks."),
    ShapesConfig(name="hard", radius_range=(0.16, 0.36), min_contrast=0.2, num_lines=6, num_dots=8,
                 num_occluders=2, gradient=0.5, noise_std=0.1,
                 description="32x32, 50k / 10k, smaller shapes, lower contrast, more clutter (some over the shape) "
                             "and noise."),
    ShapesConfig(name="large", image_size=64, description="64x64, 50k / 10k, default difficulty."),
    ShapesConfig(name="px16", image_size=16,
                 description="16x16, 50k / 10k, the default's drawing parameters (shapes of 4-7 pixels radius, slower "
                             "to learn): a quarter of the compute per image, for depth ablations on a CPU."),
    ShapesConfig(name="depth16", image_size=16, radius_range=(0.35, 0.48), class_colour_fraction=0.25,
                 description="16x16, 50k / 10k, px16's clutter and noise, larger shapes (radius 5.6-7.7 pixels), a "
                             "quarter of them in their class's colour (a weak cue: deep residual nets start learning "
                             "sooner): for depth studies on a CPU."),
    ShapesConfig(name="distract16", image_size=16, radius_range=(0.3, 0.42), class_colour_fraction=0.25,
                 num_distractors=2,
                 description="16x16, 50k / 10k, depth16's drawing with smaller shapes (radius 4.8-6.7 pixels) over two "
                             "smaller shapes of other classes (the label is the largest, on top): harder; measured "
                             "to favour depth less than depth16 at a laptop budget (docs/ablations.md)."),
)


class Shapes(tfds.core.GeneratorBasedBuilder):
  """Generated geometric shapes, 10 classes (see `CLASS_NAMES`)."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "The same bytes on every CPU: exact arithmetic instead of NumPy's SIMD sin, cos, hypot, arctan2 and "
               "normal draws (every image changes by about a level of noise).",
  }
  BUILDER_CONFIGS = list(BUILDER_CONFIGS)
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {
        "train": self._generate_examples(split="train", num_examples=config.num_train),
        "test": self._generate_examples(split="test", num_examples=config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for start in range(0, num_examples, _CHUNK):
      count = min(_CHUNK, num_examples - start)
      images, labels = generate(config, split, start // _CHUNK, count)
      for offset, (image, label) in enumerate(zip(images, labels)):
        index = start + offset
        yield index, {"image": encode_png(image), "label": int(label)}


def generate(config: ShapesConfig, split: str, chunk: int, count: int) -> tuple[np.ndarray, np.ndarray]:
  """Draws one chunk of examples.

  Args:
    config: the dataset variant.
    split: 'train' or 'test' (each has its own random stream).
    chunk: index of the chunk of `_CHUNK` examples within the split.
    count: examples to draw (at most `_CHUNK`; fewer for a split's last chunk).

  Returns:
    (images uint8 [count, size, size, 3], labels int64 [count]). Labels are balanced within every chunk: each class
    appears `count // 10` or `count // 10 + 1` times, in a shuffled order.
  """
  if split not in _SPLIT_IDS:
    raise ValueError(f"Unknown split {split!r}; choose one of {sorted(_SPLIT_IDS)}.")
  low, high = config.distractor_scale
  if config.num_distractors and not 0 < low <= high < 1:
    raise ValueError(f"distractor_scale={config.distractor_scale} of config {config.name!r}: distractors must be "
                     "smaller than the labelled shape (0 < min <= max < 1), or the label is ambiguous.")
  if config.stretch < 1:
    raise ValueError(f"stretch={config.stretch} of config {config.name!r}: the largest aspect ratio is at least 1 "
                     "(1 draws unstretched shapes).")
  rng = np.random.default_rng([config.seed, _SPLIT_IDS[split], chunk])
  num_classes = len(CLASS_NAMES)
  labels = rng.permutation(np.arange(count) % num_classes)
  size = config.image_size
  # Pixel-centre coordinates, shared by every image: [1, size, size].
  # float32 throughout: twice as fast as float64 and far more precise than the 8-bit output needs.
  ys, xs = np.meshgrid(np.arange(size, dtype=np.float32) + 0.5, np.arange(size, dtype=np.float32) + 0.5,
                       indexing="ij")
  ys, xs = ys[None], xs[None]

  base = _uniform(rng, 0.0, 1.0, (count, 3))
  canvas = _background(rng, base, ys, xs, config.gradient, size)
  for _ in range(config.num_lines):
    canvas = _blend(canvas, _line_alpha(rng, ys, xs, count, size), _uniform(rng, 0, 1, (count, 3)))
  for _ in range(config.num_dots):
    canvas = _blend(canvas, _dot_alpha(rng, ys, xs, count, size), _uniform(rng, 0, 1, (count, 3)))

  radius = _uniform(rng, *config.radius_range, count) * size
  # Keep the shape's centre far enough inside that at most a sliver is cut off at the border.
  margin = 0.8 * radius
  cy = _uniform(rng, margin, size - margin)
  cx = _uniform(rng, margin, size - margin)
  angle = _uniform(rng, 0.0, 2 * np.pi, count)
  colour = _contrasting_colour(rng, base, config.min_contrast)
  if config.class_colour_fraction:
    cued = rng.random(count) < config.class_colour_fraction
    colour[cued] = CLASS_COLOURS[labels[cued]]
  # Anything below draws random numbers only where its config asks for it, so earlier configs keep their images.
  aspect = _aspect(rng, config.stretch, count)
  for _ in range(config.num_distractors):
    # Another class (any of the other nine, uniformly), smaller, anywhere in the image, under the labelled shape.
    other = (labels + rng.integers(1, num_classes, count)) % num_classes
    d_radius = radius * _uniform(rng, *config.distractor_scale, count)
    d_margin = 0.8 * d_radius
    d_cy = _uniform(rng, d_margin, size - d_margin)
    d_cx = _uniform(rng, d_margin, size - d_margin)
    d_angle = _uniform(rng, 0.0, 2 * np.pi, count)
    d_colour = _contrasting_colour(rng, base, config.min_contrast)
    d_aspect = _aspect(rng, config.stretch, count)
    canvas = _blend(canvas, _shape_alpha(other, d_radius, d_cy, d_cx, d_angle, d_aspect, ys, xs), d_colour)
  canvas = _blend(canvas, _shape_alpha(labels, radius, cy, cx, angle, aspect, ys, xs), colour)

  for _ in range(config.num_occluders):
    canvas = _blend(canvas, _line_alpha(rng, ys, xs, count, size), _uniform(rng, 0, 1, (count, 3)))
  canvas = canvas + _noise(rng, canvas.shape, config.noise_std)
  images = np.clip(np.round(canvas * 255.0), 0, 255).astype(np.uint8)
  return images, labels.astype(np.int64)


def _aspect(rng, stretch, count):
  """Per-image aspect ratios, log-uniform in [1/stretch, stretch] (None, drawing nothing, for stretch 1)."""
  if stretch == 1.0:
    return None
  # stretch ** t for t uniform in [-1, 1], as a square-root ladder: exp and log would round differently by CPU.
  t = _uniform(rng, -1.0, 1.0, count)
  return _power(np.float32(stretch), t)


def _power(base, t):
  """base ** t for t in [-1, 1], float32: binary digits of |t| times repeated square roots of base (basic operations
  only, accurate to a float32 step; exponentials and logarithms would round differently on different CPUs)."""
  t = np.asarray(t, np.float64)
  magnitude = np.abs(t)
  result = np.ones_like(magnitude)
  root = np.float64(base)
  for _ in range(30):  # |t| to 2**-30; the remaining factor is below base ** 2**-30, far under a float32 step.
    magnitude = magnitude * 2.0
    bit = magnitude >= 1.0
    magnitude = np.where(bit, magnitude - 1.0, magnitude)
    root = np.sqrt(root)
    result = np.where(bit, result * root, result)
  return np.where(t < 0, 1.0 / result, result).astype(np.float32)


def _shape_alpha(labels, radius, cy, cx, angle, aspect, ys, xs):
  """Coverage [count, size, size] of each image's shape: class `labels`, centred at (cy, cx), rotated by `angle`,
  stretched by `aspect` along its own first axis (None: not stretched), with one pixel of anti-aliasing."""
  # Local coordinates in units of the radius, rotated by the shape's angle: [count, size, size].
  sin, cos = _sin_cos(angle)
  sin, cos = sin[:, None, None], cos[:, None, None]
  dy = (ys - cy[:, None, None]) / radius[:, None, None]
  dx = (xs - cx[:, None, None]) / radius[:, None, None]
  u = cos * dx + sin * dy
  v = -sin * dx + cos * dy
  scale = radius[:, None, None]
  if aspect is not None:
    # Stretched by a along u and 1/a along v (area kept); distances shrink by at most the larger factor, which
    # keeps the anti-aliasing band about a pixel wide.
    a = aspect[:, None, None]
    u = u / a
    v = v * a
    scale = scale * np.minimum(a, 1.0 / a)
  sdf = np.empty_like(u)
  for label, shape_sdf in enumerate(_SDFS):
    members = labels == label
    if members.any():
      sdf[members] = shape_sdf(u[members], v[members])
  # The signed distance is in radius units, so scale it back to pixels.
  return np.clip(0.5 - sdf * scale, 0.0, 1.0)


def _uniform(rng, low, high, shape=None):
  """`rng.uniform(low, high, shape)` as float32, written out so that no compiler can fuse its multiply and add.

  NumPy's own computes `low + (high - low) * u` in C, where a compiler for a CPU with fused multiply-add (ARM, for
  one) may fuse it; here each step is a separate NumPy operation. On x86 the two give the same numbers.
  """
  low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
  if shape is None:
    shape = np.broadcast_shapes(low.shape, high.shape)
  # random() is the top 53 bits of a 64-bit draw times 2**-53: exact.
  return (low + (high - low) * rng.random(shape)).astype(np.float32)


def _noise(rng, shape, std):
  """Zero-mean noise of standard deviation `std`, float32 [shape]: a sum of four uniform bytes, centred and scaled.

  The sum of four independent uniforms is bell-shaped (within 3.5 standard deviations, kurtosis 2.6 against a
  Gaussian's 3) and, being integer arithmetic, the same on every CPU, where NumPy's normal draws call libm's `exp`
  and `log1p` in their rare branches. Its steps are 1/148 of a standard deviation, far below an 8-bit level.
  """
  draws = rng.integers(0, 256, (4, *shape), dtype=np.uint8)
  total = draws[0].astype(np.int16) + draws[1] + draws[2] + draws[3]  # 0..1020, mean 510.
  scale = np.float32(std / np.sqrt(4 * (256**2 - 1) / 12))  # A byte's variance is (256**2 - 1) / 12.
  return (total - np.int16(510)).astype(np.float32) * scale


# --- Trigonometry in basic operations ----------------------------------------------------------------------------
# Short series evaluated in float64 with separate multiplies and adds, then rounded to float32: accurate to about
# 1e-16 before rounding (so within one float32 step of NumPy's), and a function of the input bits alone.
_HALF_PI = np.pi / 2
_TAN_PI_8 = np.sqrt(2.0) - 1.0


def _sin_cos(angle):
  """(sin, cos) of float32 angles (radians, any finite value) as float32 arrays of the same shape."""
  a = np.asarray(angle, np.float64)
  quadrant = np.round(a / _HALF_PI)
  r = a - quadrant * _HALF_PI  # In [-pi/4, pi/4], up to the rounding of quadrant * pi/2.
  z = r * r
  # Taylor series to the r**15 and r**16 terms: the first term left out is below 6e-17 for |r| <= pi/4.
  sin_r, cos_r = np.ones_like(z), np.ones_like(z)
  for n in range(15, 1, -2):
    sin_r = 1.0 - z / (n * (n - 1)) * sin_r
  for n in range(16, 1, -2):
    cos_r = 1.0 - z / (n * (n - 1)) * cos_r
  sin_r = r * sin_r
  q = quadrant.astype(np.int64) % 4
  sin = np.select([q == 0, q == 1, q == 2], [sin_r, cos_r, -sin_r], -cos_r)
  cos = np.select([q == 0, q == 1, q == 2], [cos_r, -sin_r, -cos_r], sin_r)
  return sin.astype(np.float32), cos.astype(np.float32)


def _atan2(y, x):
  """The angle of (x, y) in [-pi, pi], float32, like `np.arctan2` (0 at the origin)."""
  y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
  ay, ax = np.abs(y), np.abs(x)
  big, small = np.maximum(ax, ay), np.minimum(ax, ay)
  t = small / np.where(big > 0, big, 1.0)  # In [0, 1].
  # atan(t) = pi/4 + atan((t - 1) / (t + 1)), which brings t above tan(pi/8) back to |t| <= tan(pi/8).
  reduced = t > _TAN_PI_8
  t = np.where(reduced, (t - 1.0) / (t + 1.0), t)
  # Taylor series of atan to the t**41 term: the first term left out is below 1e-17 for |t| <= tan(pi/8).
  z = t * t
  series = np.full_like(z, 1.0 / 43)
  for n in range(41, 0, -2):
    series = 1.0 / n - z * series
  angle = np.where(reduced, np.pi / 4, 0.0) + t * series
  angle = np.where(ay > ax, _HALF_PI - angle, angle)
  angle = np.where(x < 0, np.pi - angle, angle)
  angle = np.where(y < 0, -angle, angle)
  return angle.astype(np.float32)


def _hypot(a, b):
  """sqrt(a**2 + b**2) in basic operations (`np.hypot`'s kernels round differently on different CPUs)."""
  return np.sqrt(a * a + b * b)


def _background(rng, base, ys, xs, gradient, size):
  """Base colour plus a linear ramp of random direction and amplitude per channel: [count, size, size, 3]."""
  count = base.shape[0]
  sin, cos = _sin_cos(_uniform(rng, 0.0, 2 * np.pi, count)[:, None, None])
  ramp = (cos * (xs - size / 2) + sin * (ys - size / 2)) / size
  amplitude = _uniform(rng, -gradient, gradient, (count, 1, 1, 3))
  return base[:, None, None, :] + ramp[..., None] * amplitude


def _contrasting_colour(rng, base, min_contrast):
  """A random colour at least `min_contrast` away from `base` on its most different channel."""
  colour = _uniform(rng, 0.0, 1.0, base.shape)
  diff = np.abs(colour - base)
  too_close = diff.max(axis=1) < min_contrast
  channel = diff.argmax(axis=1)
  rows = np.nonzero(too_close)[0]
  b = base[rows, channel[rows]]
  # Push the most different channel away from the base, towards whichever end of [0, 1] has room.
  colour[rows, channel[rows]] = np.where(b + min_contrast <= 1.0, b + min_contrast, b - min_contrast)
  return colour


def _blend(canvas, alpha, colour):
  """Paints `colour` [count, 3] over `canvas` [count, H, W, 3] with coverage `alpha` [count, H, W]."""
  # In place (canvas += alpha * (colour - canvas)): blending dominates the drawing time.
  delta = colour[:, None, None, :] - canvas
  delta *= alpha[..., None]
  canvas += delta
  return canvas


def _line_alpha(rng, ys, xs, count, size):
  """Coverage of a random line segment about one pixel wide, anti-aliased: [count, size, size]."""
  p = _uniform(rng, 0, size, (count, 2, 2))  # [count, endpoint, (y, x)]
  width = _uniform(rng, 0.6, 1.4, count)
  ay, ax = p[:, 0, 0, None, None], p[:, 0, 1, None, None]
  by, bx = p[:, 1, 0, None, None], p[:, 1, 1, None, None]
  ey, ex = by - ay, bx - ax
  t = np.clip(((ys - ay) * ey + (xs - ax) * ex) / np.maximum(ey**2 + ex**2, 1e-6), 0.0, 1.0)
  dist = _hypot(ys - (ay + t * ey), xs - (ax + t * ex))
  return np.clip(0.5 + width[:, None, None] / 2 - dist, 0.0, 1.0)


def _dot_alpha(rng, ys, xs, count, size):
  """Coverage of a random small disc (radius 0.7-2 px): [count, size, size]."""
  cy, cx = _uniform(rng, 0, size, (2, count, 1, 1))
  radius = _uniform(rng, 0.7, 2.0, (count, 1, 1))
  return np.clip(0.5 + radius - _hypot(ys - cy, xs - cx), 0.0, 1.0)


# Signed distance fields (negative inside) in local coordinates (u, v) scaled so the shape's radius is 1. Some are
# only approximate distances away from the edge, which is harmless: only the band |sdf| < 1 px sets anti-aliasing.
def _box(u, v, half_u, half_v, cu=0.0, cv=0.0):
  return np.maximum(np.abs(u - cu) - half_u, np.abs(v - cv) - half_v)


def _circle(u, v):
  return _hypot(u, v) - 1.0


def _square(u, v):
  return _box(u, v, 0.8, 0.8)


def _triangle(u, v):
  # Equilateral: three half-planes at distance 0.55 from the centre (circumradius 1.1), their normals at 90, 210
  # and 330 degrees.
  half_root3 = np.float32(np.sqrt(3.0) / 2)
  return np.maximum(np.maximum(v, -half_root3 * u - 0.5 * v), half_root3 * u - 0.5 * v) - 0.55


def _ring(u, v):
  rho = _hypot(u, v)
  return np.maximum(rho - 1.0, 0.55 - rho)


def _cross(u, v):
  return np.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))


def _star(u, v):
  # Five points: the boundary radius falls linearly in angle from 1 at a tip to 0.45 between tips.
  phase = _atan2(v, u) * np.float32(5 / (2 * np.pi))
  phase = phase - np.floor(phase)
  boundary = 0.45 + 0.55 * np.abs(2 * phase - 1)
  return _hypot(u, v) - boundary


def _half_disc(u, v):
  v = v + 0.4  # Centre the half disc's mass near the origin.
  return np.maximum(_hypot(u, v) - 1.0, -v)


def _crescent(u, v):
  return np.maximum(_hypot(u, v) - 1.0, 0.85 - _hypot(u - 0.5, v))


def _ell(u, v):
  return np.minimum(_box(u, v, 0.25, 0.9, cu=-0.55), _box(u, v, 0.8, 0.25, cv=0.65))


def _hourglass(u, v):
  return np.maximum(np.abs(u) - 0.9 * np.abs(v), np.abs(v) - 0.95)


_SDFS = (_circle, _square, _triangle, _ring, _cross, _star, _half_disc, _crescent, _ell, _hourglass)
assert len(_SDFS) == len(CLASS_NAMES)


def encode_png(image: np.ndarray) -> bytes:
  """Encodes an RGB uint8 image [H, W, 3] as PNG (8-bit truecolour, no filtering)."""
  height, width, channels = image.shape
  if channels != 3 or image.dtype != np.uint8:
    raise ValueError(f"Expected uint8 [H, W, 3], got {image.dtype} {image.shape}.")

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

  # Each row starts with filter type 0 (None).
  rows = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
          + chunk(b"IEND", b""))
