"""Augmentation policies (resnet_jax/data/augment.py): every op against PIL on the same photo-like image, the
policies' magnitude rules, random erasing, repeated augmentation, and the pipeline with them on (exact resume).

Tolerances against PIL: the pixel ops (invert, solarize, posterize, autocontrast, equalize, colour, contrast,
brightness, sharpness) are exact; the geometric ops (rotate, shear, translate) leave at least 97 % of pixels equal and
99 % within 1/255: TensorFlow and PIL compute the bilinear weights in different precision, and a sample that falls
exactly on a pixel boundary (a translation by n + 0.5 pixels) may go either way.
"""
import itertools
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from resnet_jax.data import augment, datasets, pipeline, policies, tfrecords
from tests import runs

PHOTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "eval_transform", "photo0_500x333.jpg")
IMAGE = np.asarray(Image.open(PHOTO).convert("RGB"))[40:120, 60:170]  # 80 x 110, odd and not square
PIL_IMAGE = Image.fromarray(IMAGE)
FILL = augment.FILL


def _agreement(ours, reference):
  d = np.abs(np.asarray(ours).astype(int) - np.asarray(reference).astype(int))
  return (d == 0).mean(), (d <= 1).mean()


def _exact(ours, reference):
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))


def _solarize_add_reference(image, add, threshold=128):
  return np.where(image < threshold, np.minimum(255, image.astype(int) + add), image).astype(np.uint8)


PIXEL_CASES = [
    ("invert", lambda t: augment.invert(t), lambda p: ImageOps.invert(p)),
    *[(f"solarize {v}", lambda t, v=v: augment.solarize(t, v), lambda p, v=v: ImageOps.solarize(p, v))
      for v in (0, 77, 128, 256)],
    *[(f"solarize_add {v}", lambda t, v=v: augment.solarize_add(t, v),
       lambda p, v=v: _solarize_add_reference(np.asarray(p), v)) for v in (0, 55, 110)],
    *[(f"posterize {b}", lambda t, b=b: augment.posterize(t, b),
       lambda p, b=b: ImageOps.posterize(p, b) if b < 8 else p) for b in (1, 4, 7, 8)],
    ("posterize 0", lambda t: augment.posterize(t, 0), lambda p: np.zeros_like(np.asarray(p))),
    ("autocontrast", lambda t: augment.autocontrast(t), lambda p: ImageOps.autocontrast(p)),
    ("equalize", lambda t: augment.equalize(t), lambda p: ImageOps.equalize(p)),
    *[(f"{name} {f}", lambda t, op=op, f=f: op(t, f), lambda p, enhancer=enhancer, f=f: enhancer(p).enhance(f))
      for (name, op, enhancer), f in itertools.product(
          [("color", augment.color, ImageEnhance.Color), ("contrast", augment.contrast, ImageEnhance.Contrast),
           ("brightness", augment.brightness, ImageEnhance.Brightness),
           ("sharpness", augment.sharpness, ImageEnhance.Sharpness)], (0.1, 0.55, 1.0, 1.37, 1.9))],
]


@pytest.mark.parametrize("name,ours,reference", PIXEL_CASES, ids=[c[0] for c in PIXEL_CASES])
def test_pixel_ops_are_pils(name, ours, reference):
  _exact(ours(tf.constant(IMAGE)), reference(PIL_IMAGE))


def test_pixel_ops_on_flat_and_two_level_images():
  """The degenerate histograms: one grey level (autocontrast and equalize leave it), two levels."""
  flat = np.full((9, 7, 3), 77, np.uint8)
  two = flat.copy()
  two[:3] = 200
  for image in (flat, two):
    _exact(augment.autocontrast(tf.constant(image)), ImageOps.autocontrast(Image.fromarray(image)))
    _exact(augment.equalize(tf.constant(image)), ImageOps.equalize(Image.fromarray(image)))


def _pil_affine(matrix, resample):
  return PIL_IMAGE.transform(PIL_IMAGE.size, Image.AFFINE, matrix, resample=resample, fillcolor=FILL)


GEOMETRIC_CASES = [
    *[(f"rotate {d} {i}", lambda t, d=d, i=i: augment.rotate(t, d, interpolation=i),
       lambda d=d, r=r: PIL_IMAGE.rotate(d, resample=r, fillcolor=FILL)) for d in (-30, 13.7, 90, 135)
      for i, r in (("bilinear", Image.BILINEAR), ("nearest", Image.NEAREST))],
    *[(f"shear_x {s}", lambda t, s=s: augment.shear_x(t, s), lambda s=s: _pil_affine((1, s, 0, 0, 1, 0),
                                                                                    Image.BILINEAR))
      for s in (-0.3, 0.17, 0.99)],
    *[(f"shear_y {s}", lambda t, s=s: augment.shear_y(t, s), lambda s=s: _pil_affine((1, 0, 0, s, 1, 0),
                                                                                    Image.BILINEAR))
      for s in (-0.3, 0.17, 0.99)],
    *[(f"translate_x {p}", lambda t, p=p: augment.translate_x(t, p), lambda p=p: _pil_affine((1, 0, p, 0, 1, 0),
                                                                                            Image.BILINEAR))
      for p in (-40.5, 13.0, 21.3)],
    *[(f"translate_y {p}", lambda t, p=p: augment.translate_y(t, p), lambda p=p: _pil_affine((1, 0, 0, 0, 1, p),
                                                                                            Image.BILINEAR))
      for p in (-40.5, 13.0, 21.3)],
]


@pytest.mark.parametrize("name,ours,reference", GEOMETRIC_CASES, ids=[c[0] for c in GEOMETRIC_CASES])
def test_geometric_ops_are_pils_within_the_stated_tolerance(name, ours, reference):
  equal, within_one = _agreement(ours(tf.constant(IMAGE)), reference())
  assert equal >= 0.97 and within_one >= 0.99, (equal, within_one)


def test_the_geometric_tolerance_can_fail():
  """Rotating about the corner instead of the centre, or filling with black, breaks it."""
  reference = PIL_IMAGE.rotate(13.7, resample=Image.BILINEAR, fillcolor=FILL)
  assert _agreement(augment.rotate(tf.constant(IMAGE), 13.7, fill=(0, 0, 0)), reference)[1] < 0.99
  assert _agreement(augment.rotate(tf.constant(IMAGE), 14.7), reference)[1] < 0.99


# --- Magnitudes and policies ------------------------------------------------------------------------------------
def _timm(name, level, sign=1.0):
  return augment._timm_op(tf.constant(IMAGE), (name,), 0, tf.constant(level, tf.float32), tf.constant(float(sign)))


@pytest.mark.parametrize("name,level,sign,expected", [
    ("Rotate", 10, -1, lambda t: augment.rotate(t, -30.0)),
    ("Solarize", 5, 1, lambda t: augment.solarize(t, 128)),
    ("SolarizeIncreasing", 5, 1, lambda t: augment.solarize(t, 128)),
    ("SolarizeAdd", 10, 1, lambda t: augment.solarize_add(t, 110)),
    ("Posterize", 7, 1, lambda t: augment.posterize(t, 2)),
    ("PosterizeIncreasing", 10, 1, lambda t: augment.posterize(t, 0)),
    ("PosterizeOriginal", 9, 1, lambda t: augment.posterize(t, 7)),
    ("Color", 5, 1, lambda t: augment.color(t, 1.0)),
    ("ColorIncreasing", 5, -1, lambda t: augment.color(t, 0.55)),
    ("ContrastIncreasing", 10, 1, lambda t: augment.contrast(t, 1.9)),
    ("ShearX", 10, -1, lambda t: augment.shear_x(t, -0.3)),
    ("TranslateXRel", 10, 1, lambda t: augment.translate_x(t, 0.45 * 110)),
    ("TranslateYRel", 10, 1, lambda t: augment.translate_y(t, 0.45 * 80)),
])
def test_magnitudes_follow_timms_level_rules(name, level, sign, expected):
  _exact(_timm(name, level, sign), expected(tf.constant(IMAGE)))


def test_trivial_magnitude_bins_are_torchvisions():
  assert float(augment.trivial_magnitude("Rotate", 30)) == pytest.approx(135.0)
  assert float(augment.trivial_magnitude("ShearX", 15)) == pytest.approx(0.495)
  assert [int(augment.trivial_magnitude("Posterize", b)) for b in (0, 2, 3, 30)] == [8, 8, 7, 2]
  assert float(augment.trivial_magnitude("Solarize", 0)) == 255.0


def test_policy_strings_parse_as_timm_reads_them():
  assert policies.parse("rand-m7-mstd0.5-inc1") == policies.Policy("rand", 2, 7.0, 0.5, 10.0, True, 0.5)
  assert policies.parse("rand-n3-m9-mstd101-p1") == policies.Policy("rand", 3, 9.0, math.inf, 10.0, False, 1.0)
  assert policies.parse("original-mstd0.5").kind == "original"
  assert policies.parse("trivial").kind == "trivial" and policies.parse("") is None
  for bad, message in (("randaugment", "unknown policy 'randaugment'"), ("rand-q3", "cannot read 'q3'"),
                       ("rand-m12", "0 <= m <= mmax"), ("rand-p1.5", "0 <= p <= 1"),
                       ("trivial-m3", "takes no options")):
    with pytest.raises(ValueError, match=message):
      policies.parse(bad)


@pytest.mark.parametrize("text", ["rand-m9-mstd0.5-inc1", "rand-n3-m5-mstd101", "trivial", "original-mstd0.5"])
def test_policies_are_functions_of_the_seed(text):
  policy = policies.parse(text)
  fn = tf.function(lambda image, seed: augment.apply(policy, image, seed))
  image = tf.constant(IMAGE)
  outs = [fn(image, tf.constant([0, s], tf.int64)).numpy() for s in range(12)]
  again = fn(image, tf.constant([0, 3], tf.int64)).numpy()
  _exact(again, outs[3])
  changed = sum(not np.array_equal(o, IMAGE) for o in outs)
  assert changed >= 6, f"{text}: only {changed} of 12 seeds changed the image"
  assert all(o.shape == IMAGE.shape and o.dtype == np.uint8 for o in outs)


def test_randaugment_with_probability_zero_is_the_identity():
  policy = policies.parse("rand-m9-p0")
  _exact(augment.apply(policy, tf.constant(IMAGE), tf.constant([1, 2], tf.int64)), IMAGE)


# --- Random erasing --------------------------------------------------------------------------------------------
def test_erasing_boxes_follow_timms_ranges_and_probability():
  boxes = np.stack([augment.erasing_box(tf.constant([7, s], tf.int64), 64, 48, 0.5).numpy() for s in range(400)])
  erased = boxes[:, 2] > 0
  assert abs(erased.mean() - 0.5) < 0.1
  top, left, h, w = boxes[erased].T
  assert (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 48).all()
  area = h * w / (64 * 48)
  assert area.min() >= 0.015 and area.max() <= 0.36  # 2-33 % up to rounding of the sides
  assert ((w / h) >= 0.25).all() and ((w / h) <= 4.0).all()


def test_erase_fills_only_the_box_with_standard_normal_noise():
  images = tf.zeros([2, 32, 32, 3])
  boxes = tf.constant([[4, 5, 20, 10], [0, 0, 0, 0]], tf.int32)
  out = augment.erase(images, boxes, tf.constant([[1, 2], [3, 4]], tf.int64)).numpy()
  inside = out[0, 4:24, 5:15]
  assert abs(inside.mean()) < 0.15 and abs(inside.std() - 1) < 0.15
  out[0, 4:24, 5:15] = 0
  assert not out.any()


# --- Repeated augmentation and the pipeline --------------------------------------------------------------------
@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("repeats", [4, 3])
def test_repeated_augmentation_puts_each_image_k_times_in_a_batch_on_different_devices(shapes_data_dir, cache,
                                                                                       repeats):
  """Slot s of a batch of 32 holds image s % ceil(32 / k): the copies of an image sit ceil(32 / k) slots apart (on
  different devices of a 4-device batch), each with its own augmentation id; k = 3 does not divide 32 (the last
  image's third copy is cut, as timm's sampler cuts its padding)."""
  config = runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir, cache=cache,
                            preprocess="cifar", repeated_augmentation=repeats, shuffle_buffer=64)
  builder = datasets.builder_for(config)
  records = tfrecords.load_records(builder, "train") if cache else None
  stream = pipeline.epoch_records(builder, "train", seed=0, epoch=0, cache_records=records, local_batch=32,
                                  repeats=repeats, shuffle_buffer=64)
  batches = list(stream.take(64).as_numpy_iterator())
  distinct = -(-32 // repeats)
  for batch in (batches[:32], batches[32:]):
    ids = [example_id for _, example_id, _ in batch]
    images = [record for _, _, record in batch]
    assert len(set(ids)) == 32  # every copy its own augmentation
    assert len(set(images)) == distinct
    for s in range(32):
      assert images[s] == images[s % distinct]
  assert not set(r for _, _, r in batches[:32]) & set(r for _, _, r in batches[32:])


@pytest.mark.parametrize("cache", [True, False])
def test_the_pipeline_with_every_augmentation_resumes_exactly(shapes_data_dir, cache):
  config = runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir, cache=cache,
                            preprocess="imagenet", image_size=32, augment="rand-m9-mstd0.5-inc1",
                            random_erasing=0.5, repeated_augmentation=3, shuffle_buffer=64)
  from resnet_jax import data
  straight = [b for b, _ in itertools.islice(data.train_stream(config, global_batch_size=16, seed=3), 5)]
  resumed = [b for b, _ in itertools.islice(data.train_stream(config, global_batch_size=16, seed=3, start_step=3),
                                            2)]
  for a, b in zip(straight[3:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  plain = runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir, cache=cache,
                           preprocess="imagenet", image_size=32, shuffle_buffer=64)
  first = next(data.train_stream(plain, global_batch_size=16, seed=3))[0]
  assert not np.allclose(first["image"], straight[0]["image"])
  # Three copies of each of 6 images in a batch of 16 (the last one's third copy cut).
  labels = straight[0]["label"]
  np.testing.assert_array_equal(labels[:6], labels[6:12])
  np.testing.assert_array_equal(labels[:4], labels[12:])
