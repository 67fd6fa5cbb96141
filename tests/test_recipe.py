"""The modern recipe's training pieces: mixup / CutMix, soft-target losses, gradient accumulation.

Mixing and the losses are checked against their definitions (timm's `Mixup` and `BinaryCrossEntropy`) written out
in numpy; accumulation against one batch k times larger (exactly where BatchNorm is out of the way, and against
per-micro-batch gradients where it is not); a tiny run with all of them on resumes bitwise.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import config as config_lib
from resnet_jax import metrics, mixing, train
from tests.runs import assert_trees_close, final_params, tiny_config, train_records

KEYS = [jax.random.key(i) for i in range(400)]


def _mixer(settings, label_smoothing=0.0):
  """mixing.mix for one settings, compiled once (draws for many keys in a test)."""
  return jax.jit(functools.partial(mixing.mix, num_classes=10, settings=settings, label_smoothing=label_smoothing))


def _slice(batch=8, size=16, classes=10):
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, classes, batch).astype(np.int32)
  return jnp.asarray(images), jnp.asarray(labels)


# --- Mixing ---------------------------------------------------------------------------------------------------
def test_off_is_the_identity_with_smoothed_one_hot_targets():
  images, labels = _slice()
  out, targets, dominant, lam = mixing.mix(KEYS[0], images, labels, 10, mixing.Mixing(), 0.1)
  np.testing.assert_array_equal(out, images)
  np.testing.assert_array_equal(dominant, labels)
  assert float(lam) == 1.0
  np.testing.assert_allclose(targets, np.eye(10)[labels] * 0.9 + 0.01, rtol=1e-6)


def test_mixup_blends_each_example_with_its_mirror_and_the_targets_alike():
  images, labels = _slice()
  mix = _mixer(mixing.Mixing(mixup_alpha=0.2), 0.1)
  lams = []
  for key in KEYS[:50]:
    out, targets, dominant, lam = mix(key, images, labels)
    lam = float(lam)
    lams.append(lam)
    np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], rtol=1e-5, atol=1e-6)
    one_hot = np.eye(10)[labels] * 0.9 + 0.01
    np.testing.assert_allclose(targets, lam * one_hot + (1 - lam) * one_hot[::-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(targets).sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(dominant, labels if lam >= 0.5 else labels[::-1])
  # Beta(0.2, 0.2) piles up near 0 and 1, symmetric about 1/2.
  lams = np.array(lams)
  assert 0.3 < lams.mean() < 0.7 and ((lams < 0.1) | (lams > 0.9)).mean() > 0.5


def test_cutmix_pastes_one_box_from_the_mirror_and_lambda_is_its_area():
  images, labels = _slice(size=32)
  mix = _mixer(mixing.Mixing(cutmix_alpha=1.0))
  images, labels_np = np.asarray(images), np.asarray(labels)
  for key in KEYS[:50]:
    out, targets, dominant, lam = (np.asarray(x) for x in mix(key, images, labels))
    pasted = np.asarray((out != images).any(axis=(0, 3)))  # [H, W]: pixels that came from the mirror
    rows, cols = np.nonzero(pasted)
    if len(rows):  # a rectangle
      assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
      np.testing.assert_array_equal(out[:, pasted], images[::-1][:, pasted])
    assert float(lam) == pytest.approx(1 - pasted.sum() / 32 ** 2, abs=1e-6)
    np.testing.assert_allclose(targets, lam * np.eye(10)[labels_np] + (1 - lam) * np.eye(10)[labels_np[::-1]],
                               atol=1e-6)


def test_cutmix_box_is_timms():
  """timm's rand_bbox: sides int(32 * sqrt(1 - lam)), centre (cy, cx), clipped to the image."""
  for lam, expected_side in ((0.75, 16), (0.5, 22), (0.0, 32)):
    y0, y1, x0, x1 = (int(v) for v in mixing.cutmix_box(KEYS[1], 32, 32, jnp.float32(lam)))
    assert y1 - y0 <= expected_side and x1 - x0 <= expected_side
    if 0 < y0 and y1 < 32:
      assert y1 - y0 == expected_side // 2 * 2


def test_switch_and_probability_draw_as_set():
  images, labels = _slice()
  mix = _mixer(mixing.Mixing(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.5, switch_prob=0.25))
  kinds = []
  for key in KEYS:
    out, _, _, lam = mix(key, images, labels)
    changed = np.asarray(out != images).any(axis=(0, 3))
    if float(lam) == 1.0:
      kinds.append("none")
    elif changed.all() or not np.asarray(out == images).any():
      kinds.append("mixup")
    else:
      kinds.append("cutmix")
  kinds = np.array(kinds)
  # 400 draws: P(mixed) 0.5, P(cutmix | mixed) 0.25 (binomial standard deviations 0.025 and ~0.03).
  assert abs((kinds != "none").mean() - 0.5) < 0.1
  assert abs((kinds == "cutmix").sum() / (kinds != "none").sum() - 0.25) < 0.1


def test_the_same_key_mixes_the_same_way():
  images, labels = _slice()
  settings = mixing.Mixing(mixup_alpha=0.2, cutmix_alpha=1.0)
  a = mixing.mix(KEYS[3], images, labels, 10, settings)
  b = jax.jit(functools.partial(mixing.mix, num_classes=10, settings=settings))(KEYS[3], images, labels)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


# --- Losses ---------------------------------------------------------------------------------------------------
def test_softmax_loss_with_one_hot_targets_is_the_cross_entropy():
  logits = jax.random.normal(KEYS[0], (6, 10))
  labels = jnp.arange(6) % 10
  np.testing.assert_allclose(
      metrics.training_loss("softmax_xent", logits, mixing.smoothed_one_hot(labels, 10, 0.1)),
      metrics.cross_entropy(logits, labels, 0.1), rtol=1e-6)


@pytest.mark.parametrize("threshold", [None, 0.2])
def test_sigmoid_loss_is_the_mean_binary_cross_entropy_over_classes(threshold):
  logits = np.asarray(jax.random.normal(KEYS[0], (6, 10))) * 4
  targets = np.asarray(jax.random.uniform(KEYS[1], (6, 10)))
  t = targets if threshold is None else (targets > threshold).astype(np.float64)
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)
  got = metrics.training_loss("sigmoid_xent", jnp.asarray(logits), jnp.asarray(targets), threshold)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sigmoid_loss_gradient_is_sigmoid_minus_target_over_classes_even_at_zero():
  logits = jnp.array([[0.0, 0.0, 0.0, 2.0]])
  targets = jnp.array([[0.0, 1.0, 0.3, 0.5]])
  grad = jax.grad(lambda x: metrics.training_loss("sigmoid_xent", x, targets).sum())(logits)
  np.testing.assert_allclose(grad, (jax.nn.sigmoid(logits) - targets) / 4, rtol=1e-6)


def test_unknown_loss_and_threshold_without_bce_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown loss 'hinge'"):
    metrics.training_loss("hinge", jnp.zeros((1, 2)), jnp.zeros((1, 2)))
  with pytest.raises(ValueError, match="sigmoid_xent"):
    config_lib.resolve("configs/shapes.py", ["--config.bce_target_threshold=0.2"])
  with pytest.raises(ValueError, match="config.loss='hinge' is not a loss"):
    config_lib.resolve("configs/shapes.py", ["--config.loss=hinge"])
  with pytest.raises(ValueError, match=r"config.mixing.prob=1.5 must be in \[0, 1\]"):
    config_lib.resolve("configs/shapes.py", ["--config.mixing.prob=1.5"])
  with pytest.raises(ValueError, match="grad_accum_steps=3 must divide config.batch_size=128"):
    config_lib.resolve("configs/shapes.py", ["--config.grad_accum_steps=3"])


def test_mixing_fields_are_the_declared_config_section():
  """One declaration: config.mixing's fields are mixing.Mixing's, with the same defaults."""
  import dataclasses

  from configs import default
  fields = {f.name: f.default for f in dataclasses.fields(mixing.Mixing)}
  assert dict(default.get_config().mixing) == fields


# --- Gradient accumulation --------------------------------------------------------------------------------------
def _parts(**overrides):
  from configs import shapes
  from resnet_jax import data
  config = shapes.get_config()
  config.model.width = 0.25
  config.batch_size = 16
  config.num_epochs = 1.0
  config.schedule.warmup_epochs = None
  config.schedule.warmup_steps = 0
  for key, value in overrides.items():
    config[key] = value
  info = data.DatasetInfo(num_classes=10, num_train=64, num_eval=16, image_shape=(16, 16, 3))
  return config, train.build(config, info)


def _step(config, parts, accum, *, devices=1, **kwargs):
  from resnet_jax import parallel
  strategy = parallel.ShardMap(parallel.data_mesh(jax.devices()[:devices]))
  step = strategy.map_step(functools.partial(
      train.train_step, model=parts.model, tx=parts.tx, rng=jax.random.key(1), label_smoothing=0.0,
      ema_decay=None, frozen_backbone=config.freeze_backbone, grad_accum_steps=accum, **kwargs), donate_state=False)
  return lambda state, batch: step(strategy.put_state(state), strategy.put_batch(batch))


def test_accumulated_micro_batches_give_the_update_of_one_batch_where_batchnorm_is_out_of_the_way():
  """A linear probe (BatchNorm on running statistics): 4 micro-batches of 4 = one batch of 16, on 2 devices."""
  config, parts = _parts(freeze_backbone=True)
  variables = train.init_variables(parts.eval_model, jax.random.key(0), (16, 16, 3))
  images, labels = _slice(batch=16)
  batch = {"image": np.asarray(images), "label": np.asarray(labels)}
  one, sums_one = _step(config, parts, 1, devices=2)(parts.make_state(variables), batch)
  four, sums_four = _step(config, parts, 4, devices=2)(parts.make_state(variables), batch)
  assert_trees_close(four.params, one.params, rtol=1e-5, atol=1e-7)
  assert not np.allclose(four.params["head"]["dense"]["bias"], variables["params"]["head"]["dense"]["bias"])
  assert float(sums_four["loss"][1]) == float(sums_one["loss"][1]) == 16
  assert float(sums_four["loss"][0]) == pytest.approx(float(sums_one["loss"][0]), rel=1e-5)


def test_accumulation_averages_the_micro_batch_gradients_and_updates_batchnorm_once_per_micro_batch():
  """With BatchNorm in training mode: the update is SGD's with the mean of the gradients of the micro-batches, each
  normalised by its own statistics, and the running averages are updated micro-batch after micro-batch."""
  config, parts = _parts()
  config.optimizer.name = "sgd"
  variables = train.init_variables(parts.eval_model, jax.random.key(0), (16, 16, 3))
  images, labels = _slice(batch=16)
  state = parts.make_state(variables)
  new, _ = _step(config, parts, 2)(state, {"image": np.asarray(images), "label": np.asarray(labels)})

  grads, stats = [], variables["batch_stats"]
  for half in (slice(0, 8), slice(8, 16)):
    def loss(params, stats=stats, half=half):
      logits, updates = parts.eval_model.apply({"params": params, "batch_stats": stats}, images[half], train=True,
                                          rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
      return metrics.cross_entropy(logits, labels[half]).mean(), updates["batch_stats"]
    g, stats = jax.grad(loss, has_aux=True)(variables["params"])
    grads.append(g)
  mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
  updates, _ = parts.tx.update(mean, state.opt_state, state.params)
  import optax
  assert_trees_close(new.params, optax.apply_updates(state.params, updates), rtol=1e-5, atol=1e-6)
  assert_trees_close(new.batch_stats, stats, rtol=1e-5, atol=1e-6)


# --- A run with all of it ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run), with the other interrupted-run tests.
def test_mixed_bce_accumulated_run_trains_and_resumes_bitwise(tmp_path, shapes_data_dir, xla_cache_dir, monkeypatch):
  """mixup + CutMix, BCE with a target threshold, 2 micro-batches: a run preempted at step 3 then rerun ends bitwise
  equal to one that was not (the mixing draws are functions of the step), with the same logged losses."""
  from resnet_jax import checkpoint
  overrides = {"mixing.mixup_alpha": 0.2, "mixing.cutmix_alpha": 1.0, "loss": "sigmoid_xent",
               "bce_target_threshold": 0.2, "grad_accum_steps": 2, "label_smoothing": 0.1}
  config = tiny_config(shapes_data_dir, xla_cache_dir, **overrides)
  config_lib.validate(config)
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(config, straight)

  resumed = str(tmp_path / "resumed")
  monkeypatch.setattr(checkpoint, "preemption_requested", lambda step, **_: step == 3)
  train.train_and_evaluate(config, resumed)
  assert max(train_records(resumed)) == 3
  monkeypatch.undo()
  train.train_and_evaluate(config, resumed)
  assert_trees_close(final_params(resumed), final_params(straight), rtol=0, atol=0)
  records = train_records(straight)
  assert {s: r["loss"] for s, r in train_records(resumed).items()} == {s: r["loss"] for s, r in records.items()}
  assert all(0 <= r["top1"] <= 1 for r in records.values())


# --- The recipe configs ---------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("config_file", ["configs/imagenet_bag_of_tricks.py", "configs/imagenet_rsb_a2.py"])
def test_recipe_configs_train_a_few_steps_on_the_built_in_data(config_file, tmp_path, shapes_data_dir, xla_cache_dir):
  """Each recipe as its file sets it (model, loss, mixing, policy, repeats, evaluation transform), on shapes/small at
  32 px with an eighth of the width: two steps and an evaluation, the loss finite."""
  overrides = {"data.name": "shapes", "data.builder_config": "small", "data.data_dir": shapes_data_dir,
               "data.image_size": 32, "data.cache": True, "model.width": 0.125, "batch_size": 12,
               "eval_batch_size": 100, "num_epochs": None, "num_steps": 2, "schedule.warmup_epochs": None,
               "schedule.warmup_steps": 1, "log_every_steps": 1, "eval_every_epochs": None,
               "compilation_cache_dir": xla_cache_dir}
  config = config_lib.resolve(config_file, [f"--config.{k}={v}" for k, v in overrides.items()])
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(results["loss"]) and 0 <= results["top1"] <= 1
  assert all(np.isfinite(r["loss"]) for r in train_records(str(tmp_path / "run")).values())
