"""The evaluation transform that published accuracies were measured with ('resize_crop'), against torchvision's and
timm's own transforms on committed photo-like JPEGs of odd sizes (tests/fixtures/eval_transform/make.py made them with
torch, torchvision and timm; no PyTorch is needed here).

Criteria: at least 99 % of pixels within 1/255 of the reference and none off by more than 3/255, and the same top-1
(logits close) of a small network on the normalised images.
"""
import functools
import json
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from resnet_jax import models, pretrained, weights
from resnet_jax.data import preprocess

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "eval_transform")
with open(os.path.join(FIXTURES, "cases.json")) as _f:
  CASES = json.load(_f)
EXPECTED = np.load(os.path.join(FIXTURES, "expected.npz"))


def _bytes(name):
  with open(os.path.join(FIXTURES, name), "rb") as f:
    return tf.constant(f.read())


def _ours(case, name, transform="resize_crop"):
  spec = CASES["transforms"][case]
  interpolation = spec["interpolation"] if transform == "resize_crop" else "bilinear"
  prepare = preprocess.eval_fn("imagenet", image_size=spec["image_size"], crop_fraction=spec["crop_fraction"],
                               transform=transform, interpolation=interpolation)
  return prepare(_bytes(name)).numpy()


def _agreement(got, want):
  diff = np.abs(got.astype(int) - want.astype(int))
  return (diff <= 1).mean(), diff.max()


@pytest.mark.parametrize("case", sorted(CASES["transforms"]))
@pytest.mark.parametrize("name", CASES["images"])
def test_resize_crop_matches_the_reference_transform(case, name):
  want = EXPECTED[f"{case}/{name}"]
  got = _ours(case, name)
  assert got.shape == want.shape
  within_one, worst = _agreement(got, want)
  assert within_one >= 0.99 and worst <= 3, (within_one, worst)


@pytest.mark.parametrize("case", sorted(CASES["transforms"]))
def test_the_fast_transform_is_measurably_different(case):
  """The criterion can fail: the default 'crop_resize' (TensorFlow's fast DCT, crop first, no antialiasing) misses
  it on most images."""
  misses = 0
  for name in CASES["images"]:
    within_one, worst = _agreement(_ours(case, name, "crop_resize"), EXPECTED[f"{case}/{name}"])
    misses += within_one < 0.99 or worst > 3
  assert misses >= len(CASES["images"]) // 2


def test_a_networks_logits_and_top1_on_our_images_are_those_on_torchvisions():
  from tests.test_family_weights import CASES as FAMILY
  from tests.test_family_weights import FIXTURES as FAMILY_DIR
  from tests.test_family_weights import _fixture_model
  model = _fixture_model(FAMILY["resnet_d"]["resnet_jax"])
  variables = weights.from_torch_layout(
      weights.read_safetensors(os.path.join(FAMILY_DIR, "resnet_d.safetensors")), model)
  images = np.stack([_ours("torchvision_v1", name) for name in CASES["images"]])
  mean = np.array(pretrained.IMAGENET_MEAN) * 255
  std = np.array(pretrained.IMAGENET_STD) * 255
  got = np.asarray(jax.jit(model.apply)(variables, ((images - mean) / std).astype(np.float32)))
  want = EXPECTED["logits/resnet_d/torchvision_v1"]
  np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
  np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())


def test_short_side_and_crop_follow_torchvision():
  """Resize(int) keeps the aspect ratio by truncation; the crop offsets round half to even (Python's round)."""
  assert preprocess.resize_size(224, 224 / 232) == 232 and preprocess.resize_size(224, 0.875) == 256
  assert preprocess.resize_size(160, 0.95) == 168
  h, w = preprocess.short_side_size(tf.constant([333, 500]), 256)
  assert (int(h), int(w)) == (256, 384)  # int(256 * 500 / 333) = 384
  h, w = preprocess.short_side_size(tf.constant([1003, 257]), 232)
  assert (int(h), int(w)) == (905, 232)


def test_published_weights_say_which_transform_reproduces_them():
  flags = pretrained.evaluation_flags("resnet50", "a1_in1k")
  assert "--config.data.eval_transform=resize_crop" in flags
  assert "--config.data.eval_interpolation=bicubic" in flags


def test_bad_transform_settings_are_clear_errors():
  make = functools.partial(preprocess.eval_fn, "imagenet", image_size=32)
  with pytest.raises(ValueError, match="Unknown evaluation transform 'resize'"):
    make(transform="resize")
  with pytest.raises(ValueError, match="Unknown interpolation 'nearest'"):
    make(transform="resize_crop", interpolation="nearest")
  with pytest.raises(ValueError, match="needs config.data.eval_transform='resize_crop'"):
    make(interpolation="bicubic")


def test_fixtures_cover_both_filters_and_upsampling():
  specs = CASES["transforms"].values()
  assert {s["interpolation"] for s in specs} == {"bilinear", "bicubic"}
  shortest = min(min(int(d) for d in n.split("_")[1][:-4].split("x")) for n in CASES["images"])
  assert shortest < max(preprocess.resize_size(s["image_size"], s["crop_fraction"]) for s in specs)
  assert models  # the family's network, converted from the same weights timm ran
