"""Image preprocessing in TensorFlow: decoding, augmentation, normalisation.

Two families, chosen by `config.data.preprocess`:
- 'imagenet': training takes an Inception-style random resized crop (area 8-100 % of the image, aspect ratio
  3/4-4/3), decoding only the crop window of a JPEG (`tf.image.decode_and_crop_jpeg`), then resizes it and flips it
  at random. Evaluation (`config.data.eval_transform`) either takes the central square of side `crop_fraction` x
  the shorter side and resizes it, decoding only the window ('crop_resize', fast: the usual "resize the shorter side
  to image_size / crop_fraction, centre crop image_size" up to resampling), or does exactly that as torchvision and
  timm do ('resize_crop'): the whole JPEG decoded with the accurate integer DCT (as PIL decodes it), the short side
  resized to floor(image_size / crop_fraction) with an antialiased bilinear or bicubic filter in two passes rounded
  to uint8 in between (in PIL's order), then the central image_size square (offsets rounded half to
  even, as torchvision's CenterCrop). Its pixels match torchvision's on PIL images to within 1/255 (tests).
- 'cifar': training pads by 4 pixels, takes a random crop of the original size and flips at random; evaluation
  uses the image as it is (both resize first if the stored size differs from `image_size`).

Either family's training images may also get, after the crop and flip (each off by default, so that recipes that do
not ask for them give the same images): a random rotation by up to `rotation_degrees` either way (edges filled by
reflection), and colour jitter of strength s (brightness, contrast and saturation each scaled by a factor drawn from
[1 - s, 1 + s], in that order). The flip itself can be turned off.

Images stay uint8 until `normalize`, the last step, which runs on whole batches.

All randomness is stateless: every random choice is a pure function of a per-example seed built by
`example_seed(seed, ...)` from the run's seed and the example's place in the stream (epoch, position). Replaying
the stream from any point therefore reproduces the same augmented images, which exact resume relies on.
"""
import functools
import math
from collections.abc import Callable

import tensorflow as tf

from resnet_jax.data import augment as augment_lib
from resnet_jax.data.policies import check_eval_transform

FAMILIES = ("cifar", "imagenet")

# Per-channel statistics on the 0-255 scale.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Training-split statistics of well-known small datasets; others are measured (see datasets.normalization_stats).
KNOWN_STATS = {
    "cifar10": ((125.31, 122.95, 113.87), (62.99, 62.09, 66.70)),
    "cifar100": ((129.30, 124.07, 112.43), (68.17, 65.39, 70.42)),
}

AREA_RANGE = (0.08, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)
CIFAR_PADDING = 4


def example_seed(seed, *ids) -> tf.Tensor:
  """A stateless-op seed (int64 [2]) unique to `seed` and the integers `ids` (e.g. process, epoch, position)."""
  key = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
  for value in ids:
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
  return key


def decode(image_bytes: tf.Tensor, channels: int = 3) -> tf.Tensor:
  """Decodes a JPEG, PNG, BMP or GIF (first frame) to uint8 [H, W, channels]."""
  return tf.io.decode_image(image_bytes, channels=channels, expand_animations=False)


def image_shape(image_bytes: tf.Tensor) -> tf.Tensor:
  """(height, width) of an encoded image, reading only a JPEG's header (other formats are decoded)."""
  return tf.cond(
      tf.io.is_jpeg(image_bytes),
      lambda: tf.image.extract_jpeg_shape(image_bytes)[:2],
      lambda: tf.shape(decode(image_bytes))[:2])


def center_crop_window(shape: tf.Tensor, crop_fraction: float) -> tf.Tensor:
  """[y, x, height, width] of the central square of side `crop_fraction` x the shorter side."""
  height, width = shape[0], shape[1]
  side = tf.cast(tf.round(crop_fraction * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(height - side) // 2, (width - side) // 2, side, side])


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor, *, crop_fraction: float = 0.875,
                       area_range=AREA_RANGE, aspect_range=ASPECT_RANGE, max_attempts: int = 10) -> tf.Tensor:
  """[y, x, height, width] of an Inception-style random crop.

  The crop covers `area_range` of the image with an aspect ratio (width / height) in `aspect_range`. When no such
  crop is found within `max_attempts` (very elongated images), the evaluation centre crop is used instead.
  """
  shape = tf.cast(shape, tf.int32)
  whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], axis=0), bounding_boxes=whole, seed=seed, min_object_covered=0.0,
      aspect_ratio_range=aspect_range, area_range=area_range, max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  sampled = tf.stack([begin[0], begin[1], size[0], size[1]])
  # The op falls back to the whole image when every attempt fails; a genuine full-image crop is just as well
  # replaced by the centre crop (it is a measure-zero event for a continuous area draw).
  failed = tf.logical_and(tf.equal(size[0], shape[0]), tf.equal(size[1], shape[1]))
  return tf.where(failed, center_crop_window(shape, crop_fraction), sampled)


def decode_and_crop(image_bytes: tf.Tensor, window: tf.Tensor, *, fused: bool = True) -> tf.Tensor:
  """Decodes only `window` ([y, x, height, width]) of an image to uint8 RGB.

  With `fused`, JPEGs go through `tf.image.decode_and_crop_jpeg`, which skips the entropy decoding of most blocks
  outside the window; other formats (and `fused=False`) decode the whole image, then slice.
  """
  def unfused():
    image = decode(image_bytes, 3)
    return tf.slice(image, tf.stack([window[0], window[1], 0]), tf.stack([window[2], window[3], 3]))

  if not fused:
    return unfused()
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3), unfused)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize of a uint8 image to [size, size], rounded back to uint8 (it stays uint8 until `normalize`)."""
  resized = tf.image.resize(image, [size, size], method="bilinear")
  return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def imagenet_train(image_bytes: tf.Tensor, seed: tf.Tensor, *, image_size: int, crop_fraction: float = 0.875,
                   fused: bool = True, flip: bool = True) -> tf.Tensor:
  """Random resized crop + random horizontal flip (unless not `flip`): uint8 [image_size, image_size, 3]."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  window = random_crop_window(image_shape(image_bytes), crop_seed, crop_fraction=crop_fraction)
  image = resize(decode_and_crop(image_bytes, window, fused=fused), image_size)
  return tf.image.stateless_random_flip_left_right(image, flip_seed) if flip else image


def imagenet_eval(image_bytes: tf.Tensor, *, image_size: int, crop_fraction: float = 0.875) -> tf.Tensor:
  """Central crop (`crop_fraction` of the shorter side) resized to uint8 [image_size, image_size, 3]."""
  window = center_crop_window(image_shape(image_bytes), crop_fraction)
  return resize(decode_and_crop(image_bytes, window), image_size)


def decode_like_pil(image_bytes: tf.Tensor, channels: int = 3) -> tf.Tensor:
  """Decodes an image as PIL does: JPEGs with libjpeg's accurate integer DCT (TensorFlow's default is the fast one,
  a few levels off on most pixels), other formats as `decode`."""
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.io.decode_jpeg(image_bytes, channels=channels, dct_method="INTEGER_ACCURATE"),
                 lambda: decode(image_bytes, channels))


def resize_like_pil(image: tf.Tensor, height, width, interpolation: str = "bilinear") -> tf.Tensor:
  """Antialiased resize of a uint8 image to [height, width] as PIL's `Image.resize` does it: two passes, each rounded
  to uint8 (bicubic overshoot is clipped between them, as in PIL), in PIL's order: the width first, unless the
  height shrinks by more than twice what the width does (tall images), then the height first."""
  def one_pass(x, size):
    x = tf.image.resize(x, size, method=interpolation, antialias=True)
    return tf.clip_by_value(tf.floor(x + 0.5), 0.0, 255.0)
  image = tf.cast(image, tf.float32)
  in_height, in_width = tf.shape(image)[0], tf.shape(image)[1]
  height_first = tf.logical_and(in_height > height, in_height - height > 2 * (in_width - width))
  out = tf.cond(height_first,
                lambda: one_pass(one_pass(image, tf.stack([height, in_width])), tf.stack([height, width])),
                lambda: one_pass(one_pass(image, tf.stack([in_height, width])), tf.stack([height, width])))
  return tf.cast(out, tf.uint8)


def short_side_size(shape: tf.Tensor, short: int) -> tuple[tf.Tensor, tf.Tensor]:
  """(height, width) with the shorter side `short` and the longer int(short * long / short_before) (torchvision)."""
  height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
  scaled = lambda long, short_before: tf.cast(tf.floor(short * long / short_before), tf.int32)
  return tf.cond(height <= width, lambda: (tf.constant(short, tf.int32), scaled(width, height)),
                 lambda: (scaled(height, width), tf.constant(short, tf.int32)))


def resize_size(image_size: int, crop_fraction: float) -> int:
  """The short side before the centre crop: floor(image_size / crop_fraction), as timm computes it (a hair of slack
  so that 224 / (224 / 232) is 232)."""
  return math.floor(image_size / crop_fraction + 1e-9)


def resize_crop_eval(image_bytes: tf.Tensor, *, image_size: int, crop_fraction: float = 0.875,
                     interpolation: str = "bilinear", channels: int = 3) -> tf.Tensor:
  """torchvision's / timm's evaluation transform: Resize(floor(image_size / crop_fraction)) of the short side, then
  CenterCrop(image_size), on an image decoded as PIL decodes it. uint8 [image_size, image_size, channels]."""
  image = decode_like_pil(image_bytes, channels)
  height, width = short_side_size(tf.shape(image), resize_size(image_size, crop_fraction))
  image = resize_like_pil(image, height, width, interpolation)
  top = tf.cast(tf.round(tf.cast(height - image_size, tf.float32) / 2.0), tf.int32)  # half to even, as round()
  left = tf.cast(tf.round(tf.cast(width - image_size, tf.float32) / 2.0), tf.int32)
  return tf.ensure_shape(image[top:top + image_size, left:left + image_size], [image_size, image_size, channels])


def _decode_at_size(image_bytes: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
  image = decode(image_bytes, channels)
  shape = tf.shape(image)
  return tf.cond(tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size)),
                 lambda: image, lambda: resize(image, image_size))


def cifar_train(image_bytes: tf.Tensor, seed: tf.Tensor, *, image_size: int, channels: int = 3,
                padding: int = CIFAR_PADDING, flip: bool = True) -> tf.Tensor:
  """Zero-pad by `padding`, random crop back to image_size, random flip (unless not `flip`): uint8 [image_size,
  image_size, C]."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = _decode_at_size(image_bytes, image_size, channels)
  padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
  image = tf.image.stateless_random_crop(padded, [image_size, image_size, channels], seed=crop_seed)
  return tf.image.stateless_random_flip_left_right(image, flip_seed) if flip else image


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
  """A uint8 image [H, W, C] rotated by `degrees` (counter-clockwise) about its centre, bilinear, edges reflected."""
  angle = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  height, width = (tf.cast(d, tf.float32) for d in tf.unstack(tf.shape(image)[:2]))
  cos, sin = tf.cos(angle), tf.sin(angle)
  # The projective transform maps each output pixel (x, y) back to the input pixel it samples.
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[None]
  rotated = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(image, tf.float32)[None], transforms=transform, output_shape=tf.shape(image)[:2],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")[0]
  return _to_uint8(rotated)


def color_jitter(image: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
  """Brightness, contrast and (for RGB) saturation of a uint8 image, each scaled by a factor drawn from
  [1 - strength, 1 + strength], in that order."""
  factors = tf.random.stateless_uniform([3], seed, minval=1.0 - strength, maxval=1.0 + strength)
  image = tf.clip_by_value(tf.cast(image, tf.float32) / 255.0 * factors[0], 0.0, 1.0)
  image = tf.clip_by_value(tf.image.adjust_contrast(image, factors[1]), 0.0, 1.0)
  if image.shape[-1] == 3:
    image = tf.clip_by_value(tf.image.adjust_saturation(image, factors[2]), 0.0, 1.0)
  return _to_uint8(image * 255.0)


def cifar_eval(image_bytes: tf.Tensor, *, image_size: int, channels: int = 3) -> tf.Tensor:
  """The image itself (resized if stored at another size): uint8 [image_size, image_size, C]."""
  image = _decode_at_size(image_bytes, image_size, channels)
  return tf.ensure_shape(image, [image_size, image_size, channels])


def train_fn(family: str, *, image_size: int, channels: int = 3, crop_fraction: float = 0.875, flip: bool = True,
             rotation_degrees: float = 0.0, color_jitter_strength: float = 0.0,
             policy: str | None = None) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """(image_bytes, seed) -> uint8 training image, for a preprocessing family.

  `flip`, `rotation_degrees` and `color_jitter_strength` are config.data.flip, .rotation_degrees and .color_jitter
  (see the module docstring), `policy` is config.data.augment (`resnet_jax.data.augment`, applied last); the
  rotation, the jitter and the policy draw from seeds folded from the example's, so the crop and flip are the same
  with them as without them.

  Raises:
    ValueError: an unknown family. (The ranges of the rotation and the jitter are checked by config.validate.)
  """
  _check_family(family)
  if family == "imagenet":
    channels = 3
    base = lambda image_bytes, seed: tf.ensure_shape(
        imagenet_train(image_bytes, seed, image_size=image_size, crop_fraction=crop_fraction, flip=flip),
        [image_size, image_size, 3])
  else:
    # The paper's 4-pixel padding at 32 px, in proportion at other sizes.
    padding = max(1, image_size * CIFAR_PADDING // 32)
    base = lambda image_bytes, seed: tf.ensure_shape(
        cifar_train(image_bytes, seed, image_size=image_size, channels=channels, padding=padding, flip=flip),
        [image_size, image_size, channels])
  parsed = augment_lib.parse(policy)
  if not rotation_degrees and not color_jitter_strength and parsed is None:
    return base

  def augment(image_bytes, seed):
    image = base(image_bytes, seed)
    if rotation_degrees:
      degrees = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1),
                                            minval=-rotation_degrees, maxval=rotation_degrees)
      image = rotate(image, degrees)
    if color_jitter_strength:
      image = color_jitter(image, tf.random.experimental.stateless_fold_in(seed, 2), color_jitter_strength)
    if parsed is not None:
      image = augment_lib.apply(parsed, tf.ensure_shape(image, [image_size, image_size, channels]),
                                tf.random.experimental.stateless_fold_in(seed, 3))
    return tf.ensure_shape(image, [image_size, image_size, channels])
  return augment


def eval_fn(family: str, *, image_size: int, channels: int = 3, crop_fraction: float = 0.875,
            transform: str = "crop_resize", interpolation: str = "bilinear") -> Callable[[tf.Tensor], tf.Tensor]:
  """image_bytes -> uint8 evaluation image, for a preprocessing family (`transform` and `interpolation`: the
  'imagenet' family's evaluation, see the module docstring).

  Raises:
    ValueError: an unknown family, transform or interpolation.
  """
  _check_family(family)
  check_eval_transform(transform, interpolation)
  if family == "imagenet" and transform == "resize_crop":
    return functools.partial(resize_crop_eval, image_size=image_size, crop_fraction=crop_fraction,
                             interpolation=interpolation)
  if family == "imagenet":
    return lambda image_bytes: tf.ensure_shape(
        imagenet_eval(image_bytes, image_size=image_size, crop_fraction=crop_fraction), [image_size, image_size, 3])
  return lambda image_bytes: cifar_eval(image_bytes, image_size=image_size, channels=channels)


def normalize(images: tf.Tensor, mean, std) -> tf.Tensor:
  """uint8 images [..., C] -> float32 (images - mean) / std, with per-channel statistics on the 0-255 scale."""
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (tf.cast(images, tf.float32) - mean) / std


def _check_family(family: str):
  if family not in FAMILIES:
    raise ValueError(f"Unknown preprocessing family {family!r}; choose one of {list(FAMILIES)} "
                     "(config.data.preprocess).")
