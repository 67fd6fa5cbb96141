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


# --- The augmentation knobs (config.data.flip, .rotation_degrees, .color_jitter) -------------------------------------
@pytest.mark.parametrize("family", preprocess.FAMILIES)
def test_flip_off_never_mirrors(family):
  encoded = _png(_coordinate_image(48, 48))
  on = preprocess.train_fn(family, image_size=16)
  off = preprocess.train_fn(family, image_size=16, flip=False)
  ons, offs = _over_seeds(lambda s: on(encoded, s), 40, seed=2), _over_seeds(lambda s: off(encoded, s), 40, seed=2)
  for out in offs:  # The column channel never runs backwards (padding, all zero, aside).
    for row in out.astype(int):
      cols = row[row[:, 2] == 255, 1]
      assert np.all(np.diff(cols) >= 0)
  # The same crops: each flip-on image is the flip-off one or its mirror image, and about half are mirrored.
  mirrored = 0
  for a, b in zip(ons, offs):
    assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    mirrored += not np.array_equal(a, b)
  assert 8 < mirrored < 32


def test_rotate_turns_about_the_centre_counter_clockwise():
  image = _coordinate_image(9, 9)
  np.testing.assert_array_equal(preprocess.rotate(image, 0.0), image)
  np.testing.assert_array_equal(preprocess.rotate(image, 90.0), np.rot90(image))  # Counter-clockwise.
  turned = preprocess.rotate(_coordinate_image(20, 30), 7.0).numpy()
  assert turned.shape == (20, 30, 3) and turned.dtype == np.uint8


@pytest.mark.parametrize("family", preprocess.FAMILIES)
def test_rotation_and_jitter_come_after_the_same_crop_and_flip(family):
  """With the knobs on, each image is the knobs-off image (same crop, same flip) rotated by an angle within the
  range and jittered, all from the example's seed: a replay gives the same images."""
  encoded = _png(_coordinate_image(40, 40))
  base = preprocess.train_fn(family, image_size=24)
  rotated = preprocess.train_fn(family, image_size=24, rotation_degrees=15.0)
  both = preprocess.train_fn(family, image_size=24, rotation_degrees=15.0, color_jitter_strength=0.4)
  for i, (b, r) in enumerate(zip(_over_seeds(lambda s: base(encoded, s), 12), _over_seeds(lambda s: rotated(encoded, s),
                                                                                          12))):
    seed = preprocess.example_seed(0, i)
    angle = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 1), -15.0, 15.0)
    np.testing.assert_array_equal(r, preprocess.rotate(b, angle), err_msg=str(i))
  first, again = _over_seeds(lambda s: both(encoded, s), 12), _over_seeds(lambda s: both(encoded, s), 12)
  for x, y in zip(first, again):
    np.testing.assert_array_equal(x, y)
  assert len({x.tobytes() for x in first}) == 12


def test_color_jitter_scales_brightness_contrast_and_saturation_within_its_strength():
  rng = np.random.default_rng(0)
  image = rng.integers(60, 200, (16, 16, 3)).astype(np.uint8)
  outs = _over_seeds(lambda s: preprocess.color_jitter(image, s, 0.3), 50)
  ratios = [o.astype(float).mean() / image.mean() for o in outs]
  assert 0.6 < min(ratios) < 0.95 and 1.05 < max(ratios) < 1.4  # Brightness (and contrast) within [0.7, 1.3]-ish.
  assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outs)
  gray = np.full((8, 8, 3), 100, np.uint8)  # No colour to saturate or contrast: only brightness changes.
  for o in _over_seeds(lambda s: preprocess.color_jitter(gray, s, 0.3), 10):
    assert len(np.unique(o)) == 1
  single = preprocess.color_jitter(image[..., :1], preprocess.example_seed(0, 1), 0.3)  # Grayscale: no saturation.
  assert single.shape == (16, 16, 1)


@pytest.mark.parametrize("field, value, message", [
    ("rotation_degrees", -1.0, r"config.data.rotation_degrees=-1.0 must be in \[0, 180\]"),
    ("rotation_degrees", 200.0, r"rotation_degrees=200.0 must be in \[0, 180\]"),
    ("color_jitter", 1.0, r"config.data.color_jitter=1.0 must be in \[0, 1\)"),
])
def test_out_of_range_knobs_name_their_config_field(field, value, message):
  from configs import default
  from resnet_jax import config as config_lib
  config = default.get_config()
  config.data[field] = value
  with pytest.raises(ValueError, match=message):
    config_lib.validate(config)


def test_the_training_stream_with_every_knob_resumes_exactly(shapes_data_dir):
  from resnet_jax import data
  from tests import runs
  config = runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir, preprocess="cifar",
                            image_size=32, cache=True, flip=False, rotation_degrees=10.0, color_jitter=0.2)
  plain = runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir, preprocess="cifar",
                           image_size=32, cache=True)
  stream = data.train_iterator(config, global_batch_size=50, seed=0, process_index=0, process_count=1)
  batches = [next(stream) for _ in range(3)]
  resumed = next(data.train_iterator(config, global_batch_size=50, seed=0, start_step=2, process_index=0,
                                     process_count=1))
  np.testing.assert_array_equal(resumed["image"], batches[2]["image"])
  reference = next(data.train_iterator(plain, global_batch_size=50, seed=0, process_index=0, process_count=1))
  np.testing.assert_array_equal(reference["label"], batches[0]["label"])  # Same order: the knobs change images only.
  assert not np.array_equal(reference["image"], batches[0]["image"])
