"""Augmentation and evaluation preprocessing (resnet_jax/data/preprocess.py)."""
import numpy as np
import pytest
import tensorflow as tf

from resnet_jax.data import preprocess


def _coordinate_image(height, width):
  """An image whose pixels say where they are: channel 0 = row, 1 = column (both < 256), 2 = 255."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([rows, cols, np.full_like(rows, 255)], axis=-1).astype(np.uint8)


def _jpeg(height=120, width=160, seed=0):
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return tf.io.encode_jpeg(image, quality=90)


def _png(image):
  return tf.io.encode_png(image)


def _over_seeds(fn, count, seed=0):
  """[fn(example_seed(seed, i)) for i < count], computed in one tf.data pass (eager calls one by one are slow)."""
  seeds = tf.data.Dataset.range(count).map(lambda i: fn(preprocess.example_seed(seed, i)))
  return list(seeds.as_numpy_iterator())


def test_example_seed_differs_by_every_id_and_is_reproducible():
  seeds = {tuple(preprocess.example_seed(7, p, e, i).numpy()) for p in range(2) for e in range(3) for i in range(5)}
  assert len(seeds) == 2 * 3 * 5
  np.testing.assert_array_equal(preprocess.example_seed(7, 1, 2, 3), preprocess.example_seed(7, 1, 2, 3))
  assert tuple(preprocess.example_seed(8, 1, 2, 3).numpy()) not in seeds


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (100, 100), (100, 900)])
def test_random_crop_window_within_bounds_area_and_aspect(shape):
  # (100, 900) is elongated enough that many draws fail and fall back to the centre crop.
  height, width = shape
  center = preprocess.center_crop_window(tf.constant(shape), 0.875).numpy().tolist()
  windows = _over_seeds(lambda seed: preprocess.random_crop_window(tf.constant(shape), seed), 200)
  assert len({tuple(w) for w in windows}) > (20 if shape == (100, 900) else 150)  # Crops really vary.
  for y, x, h, w in windows:
    assert 0 <= y and 0 <= x and h >= 1 and w >= 1
    assert y + h <= height and x + w <= width
    if [y, x, h, w] == center:
      continue  # The fallback: no admissible crop found.
    # Sampled crops: area and aspect within the Inception ranges, up to integer rounding of the sides.
    area = h * w / (height * width)
    assert 0.08 * 0.9 <= area <= 1.0
    assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_random_crop_window_falls_back_to_center_crop_for_extreme_images():
  # A 4x1000 strip admits no crop of aspect 3/4-4/3 covering 8 % of it: the centre crop is used.
  shape = tf.constant([4, 1000])
  window = preprocess.random_crop_window(shape, preprocess.example_seed(0, 1)).numpy().tolist()
  assert window == preprocess.center_crop_window(shape, 0.875).numpy().tolist()


def test_center_crop_window():
  assert preprocess.center_crop_window(tf.constant([375, 500]), 0.875).numpy().tolist() == [23, 86, 328, 328]
  assert preprocess.center_crop_window(tf.constant([256, 256]), 0.875).numpy().tolist() == [16, 16, 224, 224]


def test_fused_and_unfused_decode_agree():
  jpeg = _jpeg(350, 400)
  window = tf.constant([37, 51, 200, 170])
  fused = preprocess.decode_and_crop(jpeg, window, fused=True)
  unfused = preprocess.decode_and_crop(jpeg, window, fused=False)
  np.testing.assert_array_equal(fused, unfused)
  np.testing.assert_array_equal(unfused, preprocess.decode(jpeg)[37:237, 51:221])


def test_imagenet_train_shape_dtype_and_png_input():
  for image_bytes in (_jpeg(), _png(_coordinate_image(90, 70))):
    image = preprocess.imagenet_train(image_bytes, preprocess.example_seed(0, 1), image_size=32)
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8


def test_cifar_crop_is_a_shift_of_at_most_four_pixels_and_flips_about_half():
  image = _coordinate_image(32, 32)
  encoded = _png(image)
  flips, shifts = 0, set()
  trials = 200
  for out in _over_seeds(lambda seed: preprocess.cifar_train(encoded, seed, image_size=32), trials, seed=3):
    out = out.astype(int)
    valid = out[..., 2] == 255  # Padding pixels are zero in every channel.
    rows, cols = out[..., 0][valid], out[..., 1][valid]
    # The visible part is a translated (and possibly mirrored) window of the original.
    ys, xs = np.nonzero(valid)
    dy = set((rows - ys).tolist())
    assert len(dy) == 1 and abs(dy.pop()) <= 4
    if len(set((cols - xs).tolist())) == 1:
      shifts.add(int(cols[0] - xs[0]))
      assert abs(cols[0] - xs[0]) <= 4
    else:
      flips += 1
      assert len(set((cols + xs).tolist())) == 1  # Mirrored: column index runs backwards.
  assert 0.35 < flips / trials < 0.65
  assert len(shifts) > 4  # Crops really vary.


def test_imagenet_train_flips_about_half():
  # A left-right gradient: a flip reverses its sign.
  image = np.broadcast_to(np.linspace(0, 255, 64).astype(np.uint8)[None, :, None], (64, 64, 3)).copy()
  encoded = _png(image)
  trials = 200
  flips = 0
  for out in _over_seeds(lambda seed: preprocess.imagenet_train(encoded, seed, image_size=16), trials, seed=5):
    out = out.astype(int)
    flips += out[:, 0].mean() > out[:, -1].mean()
  assert 0.35 < flips / trials < 0.65


def test_eval_preprocessing_is_deterministic():
  jpeg = _jpeg(375, 500)
  first = preprocess.imagenet_eval(jpeg, image_size=64, crop_fraction=0.875)
  second = preprocess.imagenet_eval(jpeg, image_size=64, crop_fraction=0.875)
  np.testing.assert_array_equal(first, second)
  assert first.shape == (64, 64, 3) and first.dtype == tf.uint8
  png = _png(_coordinate_image(32, 32))
  np.testing.assert_array_equal(preprocess.cifar_eval(png, image_size=32), _coordinate_image(32, 32))


@pytest.mark.parametrize("family", preprocess.FAMILIES)
def test_same_result_eagerly_and_inside_tf_data(family):
  images = [_jpeg(120, 160, seed=s) if family == "imagenet" else _png(_coordinate_image(32, 32)) for s in range(6)]
  train = preprocess.train_fn(family, image_size=32)
  evaluate = preprocess.eval_fn(family, image_size=32)
  eager_train = [train(image, preprocess.example_seed(1, 0, i)).numpy() for i, image in enumerate(images)]
  eager_eval = [evaluate(image).numpy() for image in images]
  dataset = tf.data.Dataset.from_tensor_slices(tf.stack(images)).enumerate().map(
      lambda i, image: (train(image, preprocess.example_seed(1, 0, i)), evaluate(image)), num_parallel_calls=4)
  for (graph_train, graph_eval), expected_train, expected_eval in zip(
      dataset.as_numpy_iterator(), eager_train, eager_eval):
    np.testing.assert_array_equal(graph_train, expected_train)
    np.testing.assert_array_equal(graph_eval, expected_eval)


def test_normalize():
  images = tf.constant([[[[0, 128, 255]]]], tf.uint8)
  out = preprocess.normalize(images, (0.0, 128.0, 127.5), (1.0, 2.0, 127.5)).numpy()
  np.testing.assert_allclose(out.reshape(-1), [0.0, 0.0, 1.0])
  assert out.dtype == np.float32


def test_unknown_family_lists_the_known_ones():
  with pytest.raises(ValueError, match="'cifar', 'imagenet'"):
    preprocess.train_fn("inception", image_size=32)
