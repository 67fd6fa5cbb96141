"""The built-in `shapes` dataset (resnet_jax/data/shapes.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.data import shapes


def _load(data_dir, split):
  builder = tfds.builder("shapes", config="small", data_dir=str(data_dir))
  examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
  return np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])


def test_registered_with_ten_classes_and_configs():
  assert "shapes" in tfds.list_builders(with_community_datasets=False)
  assert len(shapes.CLASS_NAMES) == 10
  assert {"circle", "square", "triangle"} <= set(shapes.CLASS_NAMES)
  assert {c.name for c in shapes.BUILDER_CONFIGS} >= {"default", "small", "hard", "large", "px16"}


def test_every_builder_config_draws_at_its_size():
  for config in shapes.BUILDER_CONFIGS:
    images, labels = shapes.generate(config, "test", 0, 20)
    size = config.image_size
    assert images.shape == (20, size, size, 3) and images.dtype == np.uint8, config.name
    assert np.bincount(labels, minlength=10).tolist() == [2] * 10, config.name
    assert images.std() > 20, config.name  # Drawn, not blank.


def test_generate_is_deterministic_balanced_and_seeded():
  config = shapes.BUILDER_CONFIGS[1]
  images, labels = shapes.generate(config, "train", 0, 1000)
  again, labels_again = shapes.generate(config, "train", 0, 1000)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, labels_again)
  assert images.shape == (1000, 32, 32, 3) and images.dtype == np.uint8
  assert np.bincount(labels, minlength=10).tolist() == [100] * 10
  other, _ = shapes.generate(shapes.ShapesConfig(name="other", seed=1), "train", 0, 1000)
  assert not np.array_equal(images, other)
  test_images, _ = shapes.generate(config, "test", 0, 1000)
  assert not np.array_equal(images, test_images)


def test_png_encoding_round_trips():
  images, _ = shapes.generate(shapes.BUILDER_CONFIGS[1], "test", 0, 4)
  for image in images:
    np.testing.assert_array_equal(tf.io.decode_png(shapes.encode_png(image)).numpy(), image)


def test_builds_twice_identically_with_balanced_classes(shapes_data_dir, tmp_path):
  # The session's build is the first; a second one from scratch must give the same examples.
  tfds.builder("shapes", config="small", data_dir=str(tmp_path)).download_and_prepare()
  builds = [{split: _load(directory, split) for split in ("train", "test")} for directory in (shapes_data_dir,
                                                                                                tmp_path)]
  for split, size in (("train", 2000), ("test", 500)):
    images, labels = builds[0][split]
    np.testing.assert_array_equal(images, builds[1][split][0])
    np.testing.assert_array_equal(labels, builds[1][split][1])
    assert images.shape == (size, 32, 32, 3)
    assert np.bincount(labels, minlength=10).tolist() == [size // 10] * 10
    assert len({im.tobytes() for im in images}) == size  # No duplicates.
  # Prepared images are those `generate` draws (in the stored, shuffled order).
  drawn, _ = shapes.generate(shapes.BUILDER_CONFIGS[1], "test", 0, 500)
  assert {im.tobytes() for im in drawn} == {im.tobytes() for im in builds[0]["test"][0]}

  # A linear classifier (softmax regression on standardised pixels) stays far from perfect: rotation, position
  # and colour all vary. Measured: 8 % test accuracy here (chance is 10 %) while it fits 98 % of its 2k training
  # images; on the default config with 20k training images (30 epochs of Adam) 10 % test, 33 % train.
  x_train, y_train = builds[0]["train"]
  x_test, y_test = builds[0]["test"]
  x_train = x_train.reshape(len(x_train), -1).astype(np.float32)
  x_test = x_test.reshape(len(x_test), -1).astype(np.float32)
  mean, std = x_train.mean(0), x_train.std(0) + 1.0
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  params = (jnp.zeros((x_train.shape[1], 10)), jnp.zeros(10))
  optimizer = optax.adam(1e-3)
  state = optimizer.init(params)

  def loss_fn(p):
    logits = x_train @ p[0] + p[1]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y_train).mean() + 1e-3 * jnp.sum(p[0] ** 2)

  @jax.jit
  def step(p, s):
    updates, s = optimizer.update(jax.grad(loss_fn)(p), s)
    return optax.apply_updates(p, updates), s

  for _ in range(200):
    params, state = step(params, state)
  train_accuracy = float(np.mean(np.argmax(x_train @ params[0] + params[1], -1) == y_train))
  test_accuracy = float(np.mean(np.argmax(x_test @ params[0] + params[1], -1) == y_test))
  assert train_accuracy > 0.5  # The classifier did fit what it could...
  assert test_accuracy < 0.3  # ...and that does not generalise.


# --- shapes/depth16: the configuration for depth studies --------------------------------------------------------
def _depth16(**changes):
  import dataclasses
  config = next(c for c in shapes.BUILDER_CONFIGS if c.name == "depth16")
  return dataclasses.replace(config, **changes) if changes else config


def _linear_probe_accuracy(config, num_train=10_000, num_test=2_000, epochs=20):
  """Test accuracy of softmax regression on standardised pixels (Adam 1e-3, batch 250, weights from zero)."""
  train_x, train_y = shapes.generate(config, "train", 0, num_train)
  test_x, test_y = shapes.generate(config, "test", 0, num_test)
  train_x = train_x.reshape(num_train, -1).astype(np.float32)
  test_x = test_x.reshape(num_test, -1).astype(np.float32)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
  params = {"w": jnp.zeros((train_x.shape[1], 10)), "b": jnp.zeros(10)}
  tx = optax.adam(1e-3)

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y).mean()

  @jax.jit
  def epoch(carry, order):
    def step(carry, index):
      p, s = carry
      updates, s = tx.update(jax.grad(loss)(p, x_all[index], y_all[index]), s, p)
      return (optax.apply_updates(p, updates), s), None
    return jax.lax.scan(step, carry, order.reshape(-1, 250))[0]

  x_all, y_all = jnp.asarray(train_x), jnp.asarray(train_y)
  rng, carry = np.random.default_rng(0), (params, tx.init(params))
  for _ in range(epochs):
    carry = epoch(carry, jnp.asarray(rng.permutation(num_train)))
  p = carry[0]
  return float(np.mean(np.argmax(test_x @ np.asarray(p["w"]) + np.asarray(p["b"]), 1) == test_y))


def test_depth16_a_linear_classifier_on_its_pixels_stays_below_30_percent():
  """The design criterion, on a small version (10k training images; the full dataset measured 25.1 %). The same
  probe finds a full colour cue, so the bound is not a weak probe's."""
  assert _linear_probe_accuracy(_depth16()) < 0.30
  assert _linear_probe_accuracy(_depth16(class_colour_fraction=1.0)) > 0.6


def test_depth16_is_deterministic_and_cues_only_its_fraction():
  config = _depth16()
  images, labels = shapes.generate(config, "train", 3, 2000)
  again, labels_again = shapes.generate(config, "train", 3, 2000)
  np.testing.assert_array_equal(images, again)
  np.testing.assert_array_equal(labels, labels_again)
  # A fraction too small to cue any image draws the same random numbers: the cue alone changes about a quarter.
  plain, plain_labels = shapes.generate(_depth16(class_colour_fraction=1e-12), "train", 3, 2000)
  np.testing.assert_array_equal(labels, plain_labels)
  changed = np.mean(np.any(images != plain, axis=(1, 2, 3)))
  assert 0.15 < changed < 0.35, changed


# Digests of the first 64 test images of each earlier builder config, as drawn before depth16 existed: adding a
# configuration must not change the images of the others (results recorded on them must reproduce).
EARLIER_DIGESTS = {"default": "3a71e9b22b99fbd0", "small": "3a71e9b22b99fbd0", "hard": "f9a04d5d85978360",
                   "large": "45bcdc9b1f719a6d", "px16": "d4e91434e5c9276f"}


def test_earlier_configs_draw_the_images_they_always_drew():
  import hashlib
  for config in shapes.BUILDER_CONFIGS:
    if config.name in EARLIER_DIGESTS:
      images, labels = shapes.generate(config, "test", 0, 64)
      digest = hashlib.sha256(images.tobytes() + labels.astype(np.int64).tobytes()).hexdigest()[:16]
      assert digest == EARLIER_DIGESTS[config.name], config.name
  assert set(EARLIER_DIGESTS) == {"default", "small", "hard", "large", "px16"}
