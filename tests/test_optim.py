"""Tests for resnet_jax.optim: durations, schedules, optimizers, weight-decay masks, EMA and freezing."""
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from resnet_jax import config as config_lib
from resnet_jax import optim


def _lr(schedule, step):
  return float(schedule(jnp.asarray(step)))


# ------------------------------------------------------------------------------------------------ durations


def _config(**overrides):
  """configs/default.py with every duration unset, then `overrides` ('a.b' keys)."""
  config = default.get_config()
  for key in ("num_epochs", "num_steps", "eval_every_epochs", "eval_every_steps", "checkpoint_every_epochs",
              "checkpoint_every_steps", "schedule.warmup_epochs", "schedule.warmup_steps"):
    config_lib.unset_field(config, key)
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def test_durations_in_epochs_and_steps_resolve_to_steps():
  config = _config(**{"num_epochs": 90, "eval_every_epochs": 2, "checkpoint_every_steps": 500,
                      "schedule.warmup_epochs": 0.5, "schedule.boundaries_epochs": (30, 60, 80)})
  d = optim.plan_steps(config, steps_per_epoch=100)
  assert d == optim.StepPlan(total_steps=9000, warmup_steps=50, boundaries=(3000, 6000, 8000), eval_every=200,
                             checkpoint_every=500)
  d = optim.plan_steps(_config(num_steps=64000, **{"schedule.boundaries_steps": (32000, 48000)}),
                              steps_per_epoch=None)
  assert (d.total_steps, d.warmup_steps, d.boundaries, d.eval_every) == (64000, 0, (32000, 48000), None)


def test_fractional_epochs_round_to_nearest_step():
  # 0.29 * 100 is 28.999... in binary floating point: truncation would lose a step.
  assert optim.steps_from(_config(**{"schedule.warmup_epochs": 0.29}).schedule, "warmup", 100) == 29


def test_both_epochs_and_steps_is_an_error_naming_the_fields():
  with pytest.raises(ValueError, match="num_epochs.*num_steps.*set the other to None"):
    optim.plan_steps(_config(num_epochs=1, num_steps=10), steps_per_epoch=10)


def test_neither_epochs_nor_steps_is_an_error():
  with pytest.raises(ValueError, match="Neither num_epochs nor num_steps"):
    optim.plan_steps(_config(), steps_per_epoch=10)


def test_ambiguous_warmup_is_an_error():
  config = _config(num_steps=100, **{"schedule.warmup_epochs": 1, "schedule.warmup_steps": 10})
  with pytest.raises(ValueError, match="warmup_epochs.*warmup_steps"):
    optim.plan_steps(config, steps_per_epoch=10)


def test_ambiguous_eval_interval_is_an_error():
  with pytest.raises(ValueError, match="eval_every_epochs.*eval_every_steps"):
    optim.plan_steps(_config(num_steps=100, eval_every_epochs=1, eval_every_steps=5), steps_per_epoch=10)


def test_epochs_without_epoch_length_is_an_error():
  with pytest.raises(ValueError, match="Set num_steps instead"):
    optim.plan_steps(_config(num_epochs=3), steps_per_epoch=None)


@pytest.mark.parametrize("overrides, message", [
    ({"num_steps": 10, "schedule.warmup_steps": 11}, "longer than training"),
    ({"num_steps": 100, "schedule.boundaries_steps": (60, 30)}, "strictly increasing"),
    ({"num_steps": 100, "schedule.warmup_steps": 10, "schedule.boundaries_steps": (5,)}, "after the warmup"),
    ({"num_steps": 100, "schedule.boundaries_steps": (200,)}, "end of training"),
    ({"num_steps": 0}, "positive"),
    ({"num_steps": -1}, "non-negative"),
    ({"num_steps": 100, "eval_every_epochs": 0.01}, "positive"),
])
def test_inconsistent_durations_are_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    optim.plan_steps(_config(**overrides), steps_per_epoch=10)


def test_fractional_step_counts_are_errors():
  # Config fields typed int never hold one; sections built otherwise (benchmarks) are checked all the same.
  with pytest.raises(ValueError, match="whole number"):
    optim.steps_from(types.SimpleNamespace(num_epochs=None, num_steps=10.5), "num", 10)


# ------------------------------------------------------------------------------------------------ schedules


def _schedule(total_steps=1000, steps_per_epoch=100, global_batch_size=512, **fields):
  config = _config(**{"num_steps": total_steps, "schedule.base_lr": 0.1,
                      **{f"schedule.{k}": v for k, v in fields.items()}})
  return optim.create_schedule(config.schedule, optim.plan_steps(config, steps_per_epoch),
                               global_batch_size=global_batch_size)


def test_peak_follows_linear_scaling_rule():
  assert optim.scaled_learning_rate(0.1, 1024) == pytest.approx(0.4)
  assert optim.scaled_learning_rate(0.1, 1024, reference_batch=512) == pytest.approx(0.2)
  assert _lr(_schedule(name="constant", global_batch_size=128), 0) == pytest.approx(0.05)


def test_warmup_cosine_boundaries():
  s = _schedule(name="cosine", warmup_epochs=1, end_lr=0.001)  # peak 0.2, 100 warmup steps, 900 decay steps
  assert _lr(s, 0) == 0.0
  assert _lr(s, 50) == pytest.approx(0.1)          # linear warmup from 0
  assert _lr(s, 100) == pytest.approx(0.2)         # warmup end == peak
  assert _lr(s, 550) == pytest.approx((0.2 + 0.001) / 2)  # half way through the cosine
  assert _lr(s, 1000) == pytest.approx(0.001)      # cosine end == end_lr
  assert _lr(s, 5000) == pytest.approx(0.001)      # and stays there
  lrs = [_lr(s, t) for t in range(100, 1001, 50)]
  assert all(a > b for a, b in zip(lrs, lrs[1:]))  # monotone decay after warmup


def test_cosine_without_warmup_ends_at_zero_by_default():
  s = _schedule(name="cosine")
  assert _lr(s, 0) == pytest.approx(0.2)
  assert _lr(s, 1000) == pytest.approx(0.0, abs=1e-9)


def test_step_schedule_changes_exactly_at_boundaries():
  s = _schedule(name="step", warmup_steps=10, boundaries_epochs=(3, 6), decay_factor=0.5)
  expected = {9: 0.18, 10: 0.2, 299: 0.2, 300: 0.1, 599: 0.1, 600: 0.05, 999: 0.05}
  for step, lr in expected.items():
    assert _lr(s, step) == pytest.approx(lr), step


def test_step_schedule_default_factor_is_a_tenth():
  s = _schedule(name="step", boundaries_steps=(500,))
  assert _lr(s, 499) == pytest.approx(0.2)
  assert _lr(s, 500) == pytest.approx(0.02)


def test_step_schedule_needs_boundaries():
  with pytest.raises(ValueError, match="boundaries_epochs or schedule.boundaries_steps"):
    _schedule(name="step")


def test_polynomial_schedule():
  s = _schedule(name="polynomial", warmup_steps=200, power=2.0, end_lr=0.0001)
  assert _lr(s, 200) == pytest.approx(0.2)
  # Half way through the 800 decay steps: end + (peak - end) * 0.5 ** 2.
  assert _lr(s, 600) == pytest.approx(0.0001 + (0.2 - 0.0001) * 0.25)
  assert _lr(s, 1000) == pytest.approx(0.0001)


def test_unknown_schedule_lists_valid_names():
  with pytest.raises(ValueError, match="constant, cosine, polynomial, step"):
    _schedule(name="exponential")


# ------------------------------------------------------------------------------------------------ optimizers


class _TinyNet(nn.Module):
  """Conv, BatchNorm and Dense: every kind of leaf a ResNet has."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(4, (3, 3), use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
    x = nn.relu(x).mean(axis=(1, 2))
    x = nn.Dense(8, name="hidden")(x)
    return nn.Dense(3, name="head")(x)


@pytest.fixture(scope="module")
def params():
  variables = _TinyNet().init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
  return variables["params"]


def test_weight_decay_mask_selects_kernels_only(params):
  mask = optim.weight_decay_mask(params)
  assert mask == {
      "conv": {"kernel": True},
      "bn": {"scale": False, "bias": False},
      "hidden": {"kernel": True, "bias": False},
      "head": {"kernel": True, "bias": False},
  }


def _optimizer_config(name, **fields):
  fields = {"name": name, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, **fields}
  return _config(**{f"optimizer.{k}": v for k, v in fields.items()}).optimizer


def _first_update(config, params, grads, lr=0.1):
  tx = optim.create_optimizer(config, optax.constant_schedule(lr))
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_sgd_weight_decay_is_l2_on_kernels_before_momentum(params):
  # With zero gradients the first update is -lr * wd * param on kernels and nothing elsewhere.
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates = _first_update(_optimizer_config("sgd", weight_decay=1e-2), params, zeros, lr=0.1)
  mask = optim.weight_decay_mask(params)
  jax.tree.map(lambda u, p, m: np.testing.assert_allclose(u, -0.1 * 1e-2 * p if m else 0 * p, rtol=1e-6),
               updates, params, mask)
  # Momentum accumulates the decay term: after two steps with the same params it is (1 + 0.9) times larger.
  tx = optim.create_optimizer(_optimizer_config("sgd", weight_decay=1e-2), 0.1)
  state = tx.init(params)
  _, state = tx.update(zeros, state, params)
  second, _ = tx.update(zeros, state, params)
  np.testing.assert_allclose(second["conv"]["kernel"], -0.1 * 1e-2 * 1.9 * params["conv"]["kernel"], rtol=1e-6)


def test_nesterov_looks_ahead(params):
  grads = jax.tree.map(jnp.ones_like, params)
  plain = _first_update(_optimizer_config("sgd"), params, grads)
  nesterov = _first_update(_optimizer_config("sgd", nesterov=True), params, grads)
  np.testing.assert_allclose(plain["head"]["bias"], -0.1)
  np.testing.assert_allclose(nesterov["head"]["bias"], -0.1 * 1.9)


def test_gradient_clipping_bounds_the_global_norm(params):
  grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)
  updates = _first_update(_optimizer_config("sgd", momentum=0.0, grad_clip_norm=1.0), params, grads, lr=1.0)
  assert float(optax.global_norm(updates)) == pytest.approx(1.0, rel=1e-5)
  with pytest.raises(ValueError, match="grad_clip_norm=0.0 must be positive"):
    config_lib.validate(_config(**{"optimizer.grad_clip_norm": 0.0}))


def test_lars_skips_trust_ratio_for_batchnorm_and_biases(params):
  grads = jax.tree.map(jnp.ones_like, params)
  updates = _first_update(_optimizer_config("lars", momentum=0.0), params, grads, lr=1.0)
  # Excluded leaves get the plain gradient step; kernels get 0.001 * ||param|| along the gradient direction.
  np.testing.assert_allclose(updates["bn"]["scale"], -1.0)
  np.testing.assert_allclose(updates["head"]["bias"], -1.0)
  kernel = params["head"]["kernel"]
  assert float(jnp.linalg.norm(updates["head"]["kernel"])) == pytest.approx(
      1e-3 * float(jnp.linalg.norm(kernel)), rel=1e-5)


# Settings that suit each optimizer's scale on this problem: LARS moves a kernel by about
# lr * trust_coefficient * ||kernel|| per step, too little in 20 steps with the default coefficient of 0.001.
@pytest.mark.parametrize("name, lr, fields", [
    ("sgd", 0.05, {"nesterov": True}),
    ("lars", 0.5, {"trust_coefficient": 0.1}),
    ("adamw", 0.1, {}),
    ("lamb", 0.2, {}),
])
def test_each_optimizer_reduces_a_quadratic(params, name, lr, fields):
  target = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)

  def loss(p):
    return sum(jnp.sum((a - b) ** 2) for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(target)))

  config = _optimizer_config(name, weight_decay=1e-4, grad_clip_norm=10.0, **fields)
  durations = _config(**{"num_steps": 20, "schedule.name": "cosine", "schedule.base_lr": lr,
                         "schedule.warmup_steps": 2})
  tx = optim.create_optimizer(config, optim.create_schedule(
      durations.schedule, optim.plan_steps(durations, steps_per_epoch=None), global_batch_size=256))

  @jax.jit
  def step(p, state):
    updates, state = tx.update(jax.grad(loss)(p), state, p)
    return optax.apply_updates(p, updates), state

  p, state = params, tx.init(params)
  for _ in range(20):
    p, state = step(p, state)
  assert float(loss(p)) < 0.3 * float(loss(params))


def test_unknown_optimizer_lists_valid_names():
  with pytest.raises(ValueError, match="Unknown optimizer 'adam'.*sgd, lars, adamw, lamb"):
    optim.create_optimizer(_optimizer_config("adam"), 0.1)


# ------------------------------------------------------------------------------------------------ EMA, freezing


def test_ema_update(params):
  ema = jax.tree.map(jnp.zeros_like, params)
  ones = jax.tree.map(jnp.ones_like, params)
  once = optim.ema_update(ema, ones, 0.9)
  twice = optim.ema_update(once, ones, 0.9)
  for leaf in jax.tree.leaves(twice):
    np.testing.assert_allclose(leaf, 1 - 0.9 ** 2, rtol=1e-6)
  assert jax.tree.structure(twice) == jax.tree.structure(params)
  # decay 0 follows the params exactly; decay 1 never moves.
  assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(optim.ema_update(ema, params, 0.0)),
                                                   jax.tree.leaves(params)))
  assert all(jnp.array_equal(a, b) for a, b in zip(jax.tree.leaves(optim.ema_update(ema, params, 1.0)),
                                                   jax.tree.leaves(ema)))


def test_freeze_all_but_head_trains_only_the_head(params):
  tx = optim.freeze_all_but(optim.create_optimizer(_optimizer_config("sgd", weight_decay=1e-3), 0.1), params)
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  p = params
  for _ in range(3):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  for name in ("conv", "bn", "hidden"):
    for a, b in zip(jax.tree.leaves(p[name]), jax.tree.leaves(params[name])):
      assert jnp.array_equal(a, b), name
  for a, b in zip(jax.tree.leaves(p["head"]), jax.tree.leaves(params["head"])):
    assert not jnp.allclose(a, b)


def test_freeze_accepts_nested_prefixes_and_rejects_unknown_ones(params):
  tx = optim.freeze_all_but(optax.sgd(1.0), params, trainable_prefix=["hidden/bias", "bn"])
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, tx.init(params), params)
  moved = {jax.tree_util.keystr(path) for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]
           if jnp.any(u != 0)}
  assert moved == {"['hidden']['bias']", "['bn']['scale']", "['bn']['bias']"}
  with pytest.raises(ValueError, match=r"top-level names \['bn', 'conv', 'head', 'hidden'\]"):
    optim.freeze_all_but(optax.sgd(1.0), params, trainable_prefix="classifier")


# ------------------------------------------------------------------------------------------------ the base config


def test_base_config_resolves_for_every_optimizer(params):
  config = default.get_config()
  steps_per_epoch = 1281167 // config.batch_size  # ImageNet
  plan = optim.plan_steps(config, steps_per_epoch)
  assert plan.total_steps == round(config.num_epochs * steps_per_epoch)
  schedule = optim.create_schedule(config.schedule, plan, global_batch_size=config.batch_size)
  peak = config.schedule.base_lr * config.batch_size / config.schedule.reference_batch
  assert _lr(schedule, plan.warmup_steps) == pytest.approx(peak)
  assert _lr(schedule, plan.total_steps) == pytest.approx(config.schedule.end_lr, abs=1e-9)
  for name in optim.OPTIMIZERS:
    with config.unlocked():
      config.optimizer.name = name
    optim.create_optimizer(config.optimizer, schedule).init(params)  # every field it reads is well formed


# ------------------------------------------------------------------------------------------------ backbone multiplier


def _train(tx, params, steps=3):
  grads = jax.tree.map(jnp.ones_like, params)
  state, p = tx.init(params), params
  for _ in range(steps):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  return p


def test_backbone_multiplier_one_is_the_optimizer_itself(params):
  config = _optimizer_config("sgd", weight_decay=1e-3)
  assert config.backbone_lr_multiplier == 1.0  # The declared default.
  tx = optim.create_optimizer(config, 0.1)
  plain = optim.OPTIMIZERS["sgd"](config, 0.1, optim.weight_decay_mask)  # No multiplier (and no clipping) applied.
  for a, b in zip(jax.tree.leaves(_train(tx, params)), jax.tree.leaves(_train(plain, params))):
    assert jnp.array_equal(a, b)
  assert optim.scale_backbone(plain, 1.0) is plain


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_backbone_multiplier_zero_keeps_the_backbone_and_trains_the_head(params, name):
  config = _optimizer_config(name, weight_decay=1e-3, backbone_lr_multiplier=0.0)
  trained = _train(optim.create_optimizer(config, 0.1), params)
  full = _train(optim.create_optimizer(_optimizer_config(name, weight_decay=1e-3), 0.1), params)
  for key in ("conv", "bn", "hidden"):
    for a, b in zip(jax.tree.leaves(trained[key]), jax.tree.leaves(params[key])):
      assert jnp.array_equal(a, b), key  # Bitwise unchanged.
  for a, b in zip(jax.tree.leaves(trained["head"]), jax.tree.leaves(full["head"])):
    np.testing.assert_array_equal(a, b)  # The head trains as it would with the whole network.


def test_backbone_multiplier_scales_the_backbone_updates(params):
  grads = jax.tree.map(jnp.ones_like, params)
  base = _first_update(_optimizer_config("sgd", weight_decay=1e-3), params, grads)
  scaled = _first_update(_optimizer_config("sgd", weight_decay=1e-3, backbone_lr_multiplier=0.1), params, grads)
  for key in ("conv", "bn", "hidden"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, 0.1 * b, rtol=1e-6), scaled[key], base[key])
  jax.tree.map(np.testing.assert_array_equal, scaled["head"], base["head"])
  with pytest.raises(ValueError, match="backbone_lr_multiplier must be a number >= 0"):
    optim.create_optimizer(_optimizer_config("sgd", backbone_lr_multiplier=-0.5), 0.1)
