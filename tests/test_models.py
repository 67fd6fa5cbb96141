"""Tests for resnet_jax.models: parameter counts, MACs, every name and knob, and the shortcut semantics."""

import dataclasses
import functools
import os

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import batchnorm, blocks, flops, metrics, models

# Exact parameter counts (all parameters, no BatchNorm statistics). ImageNet nets, 1000 classes: torchvision's
# documented counts of the same networks (He et al. 2015, Table 1; torchvision.models weights metadata,
# `num_params`). CIFAR nets, option-A shortcuts, 10 classes: the networks of He et al. 2015, section 4.2, whose
# Table 6 rounds them to 0.27M, 0.46M, 0.66M, 0.85M, 1.7M and 19.4M.
PARAM_COUNTS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "cifar_resnet20": 269_722, "cifar_resnet32": 464_154, "cifar_resnet44": 658_586, "cifar_resnet56": 853_018,
    "cifar_resnet110": 1_727_962, "cifar_resnet1202": 19_421_274,
}
# The 2017-2019 relatives, 1000 classes: timm 1.0's and torchvision 0.29's counts of the same networks (timm:
# `sum(p.numel() for p in timm.create_model(name).parameters())`; torchvision documents the ResNeXt and Wide ResNet
# counts as its weights' `num_params`, equal to timm's).
PARAM_COUNTS |= {
    "resnet26d": 16_014_408, "resnet50c": 25_576_264, "resnet50d": 25_576_264, "resnet101d": 44_568_392,
    "resnet50s": 25_680_808, "resnet50t": 25_573_728, "seresnet50": 28_088_024, "ecaresnet50d": 25_576_350,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336, "resnext101_64x4d": 83_455_272,
    "seresnext50_32x4d": 27_559_896, "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
}
# CIFAR Wide ResNets, 10 classes: the architecture of Zagoruyko & Komodakis (2016), whose Table 1 / README round the
# counts to 36.5M (WRN-28-10) and 11.0M (WRN-16-8); 36,479,194 is also the count their PyTorch code prints.
PARAM_COUNTS |= {"wrn_28_10": 36_479_194, "wrn_16_8": 10_961_370}
# ResNet-200 (He et al. 2016) has no published count to hold it to; this is what the architecture gives.
COUNTED_HERE = {"resnet200": 64_673_832}

SLOW_NAMES = {"cifar_resnet1202"}  # 600 blocks: tracing alone takes several seconds
# Run only in the slow set by the tests that run each network: the relatives whose units a faster member shares
# (resnet50d has the deep stem and ResNet-D shortcut, seresnet50 SE, ecaresnet50d ECA, resnext50_32x4d groups).
SLOW_TO_RUN = {"resnet26d", "resnet50c", "resnet101d", "resnet50s", "resnet50t", "resnext101_32x8d",
               "resnext101_64x4d", "seresnext50_32x4d", "wide_resnet50_2", "wide_resnet101_2", "wrn_28_10"}


def _classes(name):
  return 10 if name.startswith(("cifar", "wrn")) else 1000


def _maybe_slow(names, slow=frozenset(SLOW_NAMES)):
  return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


def _abstract_init(model, size=32):
  """Variables as shapes only: no compilation, no memory."""
  x = jnp.zeros((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x))


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _images(batch=2, size=16, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, size, size, 3)), jnp.float32)


def _key(seed):
  # The 'rbg' generator compiles much faster on the CPU than the default threefry; init speed is what matters here.
  return jax.random.key(seed, impl="rbg")


def _init(model, x):
  return model.init({"params": _key(0), "dropout": _key(1)}, x, train=False)


def _train(model, variables, x, seed=2):
  return model.apply(variables, x, train=True, rngs={"dropout": _key(seed)}, mutable=["batch_stats"])


def _flat(tree):
  return {"/".join(map(str, k)): v for k, v in flax.traverse_util.flatten_dict(tree).items()}


def _micro(**knobs):
  """Two one-block stages: enough to exercise BatchNorm plumbing, cheap enough to compile whole."""
  return models.ResNet(num_classes=10, stage_sizes=(1, 1), widths=(8, 16), stem_width=8, stem_kernel=3,
                       stem_strides=1, stem_pool="none", **knobs)


def _tiny(name, **knobs):
  """A cheap member of the family: CIFAR ResNets as they are, Wide ResNets at 1/8 width, ImageNet nets at 1/16 width
  (grouped ones with 2 groups of 64-wide base: 32 groups of base width 4 have no channels left at 1/16)."""
  if name.startswith("wrn"):
    knobs["width"] = knobs.get("width", 1.0) / 8
  elif not name.startswith("cifar"):
    knobs["width"] = knobs.get("width", 1.0) / 16
    if models.create(name, num_classes=10).cardinality > 1:
      knobs = {"cardinality": 2, "base_width": 64, **knobs}
  return models.create(name, num_classes=10, **knobs)


# --- Registry ---

def test_names():
  # The ImageNet depths of He et al. 2015 (Table 1) and 2016 (200), the 2017-2019 relatives by their timm names, the
  # CIFAR depths 6n + 2 of Table 6, and the CIFAR Wide ResNets.
  assert models.names() == [f"resnet{d}" for d in (18, 34, 50, 101, 152, 200)] + [
      "resnet26d", "resnet50c", "resnet50d", "resnet101d", "resnet50s", "resnet50t", "seresnet50", "ecaresnet50d",
      "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "seresnext50_32x4d", "wide_resnet50_2",
      "wide_resnet101_2"] + [f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110, 1202)] + ["wrn_28_10", "wrn_16_8"]
  assert set(PARAM_COUNTS) | set(COUNTED_HERE) == set(models.names())


@pytest.mark.parametrize("name", _maybe_slow(models.names()))
def test_exact_parameter_count(name):
  variables = _abstract_init(models.create(name, num_classes=_classes(name)))
  assert _count(variables["params"]) == {**PARAM_COUNTS, **COUNTED_HERE}[name]


def test_shortcut_parameter_counts():
  for name in ("resnet18", "resnet50", "cifar_resnet20"):
    count = {s: _count(_abstract_init(models.create(name, num_classes=10, shortcut=s))["params"])
             for s in models.SHORTCUTS}
    assert count["A"] == count["none"], name  # option A and the plain net have no shortcut parameters
    assert count["A"] < count["B"] < count["C"], name


def test_none_overrides_mean_default():
  unset = {knob: None for knob in models.KNOBS}
  for name in ("resnet50", "cifar_resnet20"):
    assert models.create(name, num_classes=7, **unset) == models.create(name, num_classes=7)


def test_defaults():
  imagenet = models.create("resnet50", num_classes=1000)
  assert (imagenet.variant, imagenet.shortcut, imagenet.stem_pool) == ("v1.5", "B", "max")
  cifar = models.create("cifar_resnet20", num_classes=10)
  assert (cifar.variant, cifar.shortcut, cifar.stem_pool) == ("v1.5", "A", "none")
  params = _abstract_init(cifar)["params"]
  assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, 16)
  assert [params[f"stage{i}"]["block0"]["conv1"]["kernel"].shape[-1] for i in (1, 2, 3)] == [16, 32, 64]
  # 32/16/8 feature maps (paper section 4.2).
  x = jnp.zeros((1, 32, 32, 3))
  _, state = jax.eval_shape(lambda: cifar.apply(_init(cifar, x), x, mutable=[models.INTERMEDIATES]))
  sizes = [state[models.INTERMEDIATES][f"stage{i}"]["block0"]["branch"][0].shape[1] for i in (1, 2, 3)]
  assert sizes == [32, 16, 8]


def test_parameter_paths():
  params = _flat(_abstract_init(models.create("resnet50", num_classes=1000))["params"])
  for path in ("stem/conv/kernel", "stem/bn/scale", "stem/bn/bias",
               "stage1/block0/conv1/kernel", "stage1/block0/bn1/scale", "stage1/block0/conv3/kernel",
               "stage1/block0/bn3/bias", "stage1/block0/shortcut/conv/kernel", "stage1/block0/shortcut/bn/scale",
               "stage4/block2/conv2/kernel", "head/dense/kernel", "head/dense/bias"):
    assert path in params, path
  assert not any(p.startswith("stage1/block1/shortcut") for p in params)  # B: projection only where shape changes
  plain = _flat(_abstract_init(models.create("resnet50", num_classes=10, shortcut="none"))["params"])
  assert not any("shortcut" in p for p in plain)
  full = _flat(_abstract_init(models.create("resnet18", num_classes=10, shortcut="C"))["params"])
  assert all(f"stage{i}/block{j}/shortcut/conv/kernel" in full for i in (1, 2, 3, 4) for j in (0, 1))
  preact = _flat(_abstract_init(models.create("resnet18", num_classes=10, variant="preact"))["params"])
  assert "final_bn/scale" in preact and "stage1/block0/bn1/scale" not in preact  # the stem pre-activates it
  assert "stage2/block0/bn1/scale" in preact and "stage2/block0/shortcut/bn/scale" not in preact


# --- MACs ---

def _xla_macs(model, size=224, conventional=True):
  return flops.forward_macs(model, size, conventional=conventional)


@pytest.mark.parametrize("kernel, strides, groups", [(7, 2, 1), (3, 1, 1), (3, 2, 1), (1, 2, 1), (3, 2, 4)])
def test_conventional_conv_interceptor_keeps_the_function(kernel, strides, groups):
  # The interceptor may change how XLA counts, never what a convolution computes (grouped ones included).
  pad = kernel // 2
  conv = nn.Conv(8, (kernel, kernel), strides=strides, padding=((pad, pad), (pad, pad)), use_bias=False,
                 feature_group_count=groups)
  x = jnp.tile(_images(size=15), (1, 1, 1, 4 if groups > 1 else 1))
  variables = conv.init(_key(0), x)
  with nn.intercept_methods(flops.conventional_conv):
    rewritten = conv.apply(variables, x)
  np.testing.assert_allclose(rewritten, conv.apply(variables, x), rtol=1e-5, atol=1e-5)


# Published multiply-accumulates of ResNet-50 at 224 px, BatchNorm excluded and the taps over zero padding counted:
# v1 3.858 G (He et al. 2015, Table 1 rounds it to 3.8e9 FLOPs), v1.5 4.089 G (torchvision documents 4.09 GFLOPS
# for its resnet50). What XLA counts for ours with the same conventions is 3.871 G and 4.102 G, 0.34 % more: the
# activations, residual additions, pooling and classifier bias, which the published figures leave out.
@pytest.mark.parametrize("variant, reference, ours", [("v1", 3.858e9, 3.871e9), ("v1.5", 4.089e9, 4.102e9)])
def test_resnet50_macs(variant, reference, ours):
  macs = _xla_macs(models.create("resnet50", num_classes=1000, variant=variant))
  assert round(macs / 1e6) == ours / 1e6, f"{macs / 1e9:.4f} G MACs"
  assert 0 < macs / reference - 1 < 0.0035, f"{macs / 1e9:.4f} G MACs vs {reference / 1e9:.3f} G"
  # XLA's own count skips the taps over padding (and still counts BatchNorm): below the convention by a few percent.
  raw = _xla_macs(models.create("resnet50", num_classes=1000, variant=variant), conventional=False)
  assert 0.95 * macs < raw < macs


@pytest.mark.parametrize("norm", [batchnorm.BatchNorm, nn.BatchNorm])
def test_mac_count_leaves_batchnorm_out(norm):
  # The models' own BatchNorm (and flax's) cost nothing under the counting convention.
  layer = norm(use_running_average=True)
  x = jnp.ones((1, 8, 8, 16))
  variables = layer.init(_key(0), x)

  def counted(intercept):
    def forward(variables, x):
      if not intercept:
        return layer.apply(variables, x)
      with nn.intercept_methods(flops.conventional_conv):
        return layer.apply(variables, x)
    cost = jax.jit(forward).lower(variables, x).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0)

  assert counted(intercept=False) > 0 and counted(intercept=True) == 0


# --- Every name, every knob ---

@pytest.mark.parametrize("name", _maybe_slow(models.names()))
def test_every_name_output_shape_abstract(name):
  model = models.create(name, num_classes=_classes(name))
  x = jnp.zeros((2, 64, 64, 3), jnp.float32)
  variables = _abstract_init(model)
  logits = jax.eval_shape(lambda v: model.apply(v, x), variables)
  assert logits.shape == (2, _classes(name)) and logits.dtype == jnp.float32


@pytest.mark.parametrize("name", _maybe_slow(models.names(), SLOW_NAMES | SLOW_TO_RUN))
def test_every_name_runs(name):
  # A training-mode forward pass, as at the first step. (At initialisation the running statistics are the identity,
  # so an inference pass through 600 un-normalised residual additions, as in cifar_resnet1202, overflows by design.)
  model = _tiny(name)
  x = _images()
  variables = _init(model, x)
  logits, updates = _train(model, variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.isfinite(logits).all()
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])


# The values each knob is tested with. A knob declared with `choices` is tested with every choice, read from its
# declaration; KNOB_CASES lists the values of the others, and COMPANIONS the settings a value needs to be valid.
# Knobs that only act under a named device axis give the test that covers them instead.
KNOB_CASES = {
    "zero_init_residual": [True, False],
    "head_hidden": [dict(head="mlp", head_hidden=(12, 8))],
    "dropout": [0.5],
    "width": [0.5],
    "dtype": ["bfloat16"],
    "param_dtype": [jnp.bfloat16],
    "bn_momentum": [0.5],
    "bn_epsilon": [1e-3],
    "bn_axis_name": "test_bn_axis_name_matches_full_batch",
    "bn_axis_index_groups": "test_bn_axis_index_groups",
    "lesion_blocks": [(1, 4)],
    "avg_down": [True],
    "cardinality": [2],
    "base_width": [32],
    "drop_path_rate": [0.5],
    "branch_dropout": [0.5],
}
COMPANIONS = {("head", "mlp"): dict(head_hidden=(12, 8)), ("head", "conv"): dict(global_pool="avg")}


def _knob_cases() -> list[dict]:
  cases = []
  for knob, spec in models.knob_specs().items():
    values = spec["choices"] if spec["choices"] is not None else KNOB_CASES.get(knob, [])  # (checked below)
    if isinstance(values, str):
      continue
    for value in values:
      cases.append(value if isinstance(value, dict) else {knob: value, **COMPANIONS.get((knob, value), {})})
  return cases + [dict(head="conv", global_pool="max")]


def test_every_knob_has_test_cases():
  for knob, spec in models.knob_specs().items():
    assert spec["doc"], f"knob {knob!r} has no documentation in its declaration"
    if spec["choices"] is None:
      assert knob in KNOB_CASES, f"add the values knob {knob!r} is tested with to KNOB_CASES"
      if isinstance(KNOB_CASES[knob], str):
        assert KNOB_CASES[knob] in globals(), KNOB_CASES[knob]
  assert set(KNOB_CASES) <= set(models.KNOBS), "KNOB_CASES names a knob the model does not declare"


def test_knobs_are_the_modules_declared_fields():
  structure = {"num_classes", "stage_sizes", "block", "widths", "stem_width", "stem_kernel", "stem_strides",
               "parent", "name"}
  fields = {f.name for f in dataclasses.fields(models.ResNet)}
  assert set(models.KNOBS) == fields - structure
  assert models.config_knobs() == tuple(k for k in models.KNOBS if k not in ("dtype", "bn_axis_name"))


def test_docs_knob_table_is_the_declarations():
  with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "models.md")) as f:
    docs = f.read()
  table = models.knob_table()
  assert table in docs, ("docs/models.md's knob table differs from the declarations in resnet_jax/models.py; "
                         "replace it with the output of: python -c 'from resnet_jax import models; "
                         "print(models.knob_table())'")


def _case_id(knobs):
  if not isinstance(knobs, dict):
    return knobs if isinstance(knobs, str) and knobs in models.names() else "-"
  return ",".join(f"{k}={getattr(v, '__name__', v)}" for k, v in knobs.items())


# The knobs whose code differs between basic and bottleneck blocks are run on both; those that shape only bottleneck
# networks with projection shortcuts (the CIFAR net has option A, whose zero-padding cannot take a deep stem's
# wider output) on resnet50 only; the rest on the CIFAR net.
_BLOCK_KNOBS = ("variant", "shortcut", "zero_init_residual", "lesion_blocks", "attn_layer", "drop_path_rate",
                "branch_dropout")
_BOTTLENECK_KNOBS = ("avg_down", "cardinality", "base_width", "stem_type")


@pytest.mark.parametrize("name, knobs", [("cifar_resnet20", k) for k in _knob_cases()
                                         if not set(k) & set(_BOTTLENECK_KNOBS)] + [
    ("resnet50", k) for k in _knob_cases() if set(k) & set(_BLOCK_KNOBS + _BOTTLENECK_KNOBS)], ids=_case_id)
def test_every_knob(name, knobs):
  model = _tiny(name, **knobs)
  outputs = _outputs(model)
  tree, logits, train_logits, stats = outputs
  for out in (logits, train_logits):
    assert out.shape == (2, 10) and out.dtype == np.float32  # float32 logits whatever the compute dtype
    assert np.isfinite(out).all()
  # BatchNorm parameters and statistics stay float32; conv/dense parameters follow param_dtype.
  param_dtype = jnp.dtype(knobs.get("param_dtype", jnp.float32))
  for path, (_, dtype) in tree.items():
    bn = "/bn" in f"/{path}" or path.startswith("final_bn")
    assert dtype == (jnp.float32 if bn else param_dtype), path
  assert all(leaf.dtype == np.float32 for leaf in stats.values())
  # A knob set away from the network's own value must do something: change the parameter tree (names, shapes,
  # dtypes), the inference or training logits, or the BatchNorm statistics a training step leaves.
  default = _tiny(name)
  if all(_same_value(getattr(default, knob), value) for knob, value in knobs.items()):
    return  # This case is the network's own setting.
  if _case_id(knobs) in NO_EFFECT.get(name, {}):
    return
  base_tree, base_logits, base_train_logits, base_stats = _default_outputs(name)
  assert (tree != base_tree or not np.array_equal(logits, base_logits)
          or not np.array_equal(train_logits, base_train_logits)
          or any(not np.array_equal(stats[k], base_stats[k]) for k in stats)), (
      f"{knobs} changes neither the parameter tree, nor the logits, nor the BatchNorm statistics of {name}")


# Cases that leave a network as it is, and why (each is checked on a network where it does act).
NO_EFFECT = {
    "cifar_resnet20": {
        "variant=v1": "v1 and v1.5 differ only in which convolution of a bottleneck block strides; basic blocks have "
                      "none (resnet50 runs this case too)",
    },
}


def _same_value(a, b):
  try:
    return bool(a == b) and type(a) is type(b) or (a is b)
  except (TypeError, ValueError):
    return False


def _outputs(model):
  """(parameter tree {path: (shape, dtype)}, inference logits, training logits, {path: updated statistics})."""
  x = _images(size=16)
  variables = _init(model, x)
  logits = model.apply(variables, x)
  train_logits, updates = _train(model, variables, x)
  tree = {path: (leaf.shape, leaf.dtype) for path, leaf in _flat(variables["params"]).items()}
  return tree, np.asarray(logits), np.asarray(train_logits), {
      path: np.asarray(leaf) for path, leaf in _flat(updates["batch_stats"]).items()}


@functools.lru_cache(maxsize=None)
def _default_outputs(name):
  return _outputs(_tiny(name))


# --- Every parameter learns ---

def _gradients(model, x, labels):
  variables = _init(model, x)

  def loss(params):
    logits, _ = _train(model, {**variables, "params": params}, x)
    return metrics.cross_entropy(logits, labels).mean()

  return _flat(jax.grad(loss)(variables["params"]))


def _zero_by_design(model, path: str) -> bool:
  """Parameters that get no gradient at initialisation by design: with zero_init_residual the last BatchNorm of each
  residual branch starts at scale 0, so nothing before it in the branch receives gradient yet."""
  if not model.zero_init_residual:
    return False
  block, _, layer = path.rpartition("/")[0].rpartition("/")
  if not block.startswith("stage") or layer.startswith("shortcut") or "/shortcut/" in path:
    return False
  last = 3 if model.block is models.Bottleneck else 2  # The branch's convolutions (and BatchNorms).
  return layer != f"bn{last}"


@pytest.mark.parametrize("block", [models.BasicBlock, models.Bottleneck], ids=lambda b: b.__name__)
@pytest.mark.parametrize("variant", models.VARIANTS)
@pytest.mark.parametrize("shortcut", models.SHORTCUTS)
def test_every_parameter_gets_a_gradient(block, variant, shortcut):
  """Every parameter of every variant and shortcut type gets a finite, non-zero gradient from one batch."""
  model = models.ResNet(num_classes=10, stage_sizes=(2, 1), block=block, widths=(4, 8), stem_width=4, stem_kernel=3,
                        stem_strides=1, stem_pool="max", variant=variant, shortcut=shortcut)
  grads = _gradients(model, _images(batch=4, size=8), jnp.arange(4))
  bad = [p for p, g in grads.items() if not (np.isfinite(g).all() and np.any(g != 0))]
  assert not bad, f"parameters without a finite, non-zero gradient: {bad}"


def test_zero_init_residual_leaves_only_the_branch_start_without_gradient():
  for block in (models.BasicBlock, models.Bottleneck):
    model = models.ResNet(num_classes=10, stage_sizes=(2, 1), block=block, widths=(4, 8), stem_width=4,
                          stem_kernel=3, stem_strides=1, stem_pool="none", zero_init_residual=True)
    grads = _gradients(model, _images(batch=4, size=8), jnp.arange(4))
    for path, g in grads.items():
      assert np.isfinite(g).all(), path
      assert np.any(g != 0) != _zero_by_design(model, path), path
    assert any(_zero_by_design(model, p) for p in grads)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.names())
def test_every_named_model_gets_gradients_everywhere(name):
  model = _tiny(name)
  grads = _gradients(model, _images(batch=4, size=16), jnp.arange(4))
  assert all(np.isfinite(g).all() and np.any(g != 0) for g in grads.values())


def test_global_pool_and_stem_pool_shapes():
  flat = _flat(_abstract_init(_tiny("cifar_resnet20", global_pool="flatten"), size=16)["params"])
  assert flat["head/dense/kernel"].shape == (4 * 4 * 64, 10)
  for pool, size in (("none", 16), ("max", 8), ("avg", 8)):
    model = _tiny("cifar_resnet20", stem_pool=pool)
    x = jnp.zeros((1, 16, 16, 3))
    _, state = jax.eval_shape(lambda: model.apply(_init(model, x), x, mutable=[models.INTERMEDIATES]))
    assert state[models.INTERMEDIATES]["stage1"]["block0"]["branch"][0].shape[1] == size, pool


def test_width_multiplier():
  params = _abstract_init(_tiny("cifar_resnet20", width=0.5))["params"]
  assert params["stem"]["conv"]["kernel"].shape == (3, 3, 3, 8)
  assert params["stage3"]["block2"]["conv2"]["kernel"].shape == (3, 3, 32, 32)
  assert params["head"]["dense"]["kernel"].shape == (32, 10)


def test_mlp_head_paths():
  # Configs may hand over lists.
  params = _abstract_init(_tiny("cifar_resnet20", head="mlp", head_hidden=[12, 8]))["params"]["head"]
  assert params["hidden0"]["kernel"].shape == (64, 12)
  assert params["hidden1"]["kernel"].shape == (12, 8)
  assert params["dense"]["kernel"].shape == (8, 10)


def test_dropout_is_random_in_training_only():
  model = _tiny("cifar_resnet20", dropout=0.5)
  x = _images()
  variables = _init(model, x)
  np.testing.assert_array_equal(model.apply(variables, x), model.apply(variables, x))
  a, _ = _train(model, variables, x, seed=1)
  b, _ = _train(model, variables, x, seed=2)
  assert not np.allclose(a, b)


@pytest.mark.parametrize("knobs", [dict(), dict(variant="preact"), dict(shortcut="none")], ids=_case_id)
def test_running_statistics_are_used_at_inference(knobs):
  # With momentum 0 one training step stores exactly the batch statistics, so inference on the same batch must
  # reproduce the training-mode output: this ties use_running_average to `train` in every BatchNorm.
  model = _tiny("cifar_resnet20", bn_momentum=0.0, **knobs)
  x = _images(batch=4)
  variables = _init(model, x)
  train_logits, updates = _train(model, variables, x)
  eval_logits = model.apply({**variables, **updates}, x)
  np.testing.assert_allclose(eval_logits, train_logits, rtol=1e-4, atol=1e-4)
  assert not np.allclose(model.apply(variables, x), train_logits, atol=1e-3)


def test_zero_init_residual():
  model = _tiny("resnet50", zero_init_residual=True)
  flat = _flat(_init(model, _images())["params"])
  last = [p for p in flat if p.endswith("bn3/scale")]
  assert len(last) == 16 and all(np.all(flat[p] == 0) for p in last)
  assert all(np.all(flat[p] == 1) for p in flat if p.endswith("bn1/scale") or p.endswith("shortcut/bn/scale"))


def test_bfloat16_close_to_float32():
  x = _images()
  variables = _init(_tiny("cifar_resnet20"), x)
  full = _tiny("cifar_resnet20").apply(variables, x)
  half = _tiny("cifar_resnet20", dtype="bfloat16").apply(variables, x)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, full, rtol=0.1, atol=0.1 * float(np.abs(full).max()))


# --- Heads ---

def test_conv_head_equals_dense_head():
  x = _images()  # 4x4 final feature maps: the pooling has something to average
  dense = _tiny("cifar_resnet20")
  conv = _tiny("cifar_resnet20", head="conv")
  variables = _init(dense, x)
  params = dict(variables["params"])
  params["head"] = {"conv": params["head"]["dense"]}  # the very same arrays
  assert jax.tree.map(jnp.shape, _abstract_init(conv)["params"]["head"]) == jax.tree.map(jnp.shape, params["head"])
  np.testing.assert_allclose(conv.apply({**variables, "params": params}, x), dense.apply(variables, x),
                             rtol=1e-5, atol=1e-5)


# --- Shortcuts: a plain net has no skip path, a residual net does ---

def _silence_branch(params, path, variant):
  """Makes block `path`'s residual branch output exactly zero for every input."""
  flat = flax.traverse_util.flatten_dict(params, sep="/")
  block = {k: v for k, v in flat.items() if k.startswith(path + "/") and "/shortcut/" not in k}
  last = max(int(k[len(path) + 5]) for k in block if k.startswith(path + "/conv"))
  if variant == "preact":  # the branch ends with a convolution
    flat[f"{path}/conv{last}/kernel"] = jnp.zeros_like(flat[f"{path}/conv{last}/kernel"])
  else:  # the branch ends with a BatchNorm: zero scale and shift
    for leaf in ("scale", "bias"):
      flat[f"{path}/bn{last}/{leaf}"] = jnp.zeros_like(flat[f"{path}/bn{last}/{leaf}"])
  return flax.traverse_util.unflatten_dict(flat, sep="/")


@pytest.mark.parametrize("name, variant, residual", [
    ("cifar_resnet20", "v1.5", "A"), ("cifar_resnet20", "preact", "A"), ("resnet50", "v1", "B"),
])
def test_plain_net_has_no_skip_path(name, variant, residual):
  # Silencing one block's branch cuts a plain network in two: its output no longer depends on the input. In a
  # residual network the shortcut still carries the input past that block. Checked for every block, so a
  # shortcut leaking into any block of the plain network fails the test.
  x1, x2 = _images(seed=1), _images(seed=2)
  for shortcut in ("none", residual):
    model = _tiny(name, variant=variant, shortcut=shortcut)
    variables = _init(model, x1)
    apply = jax.jit(model.apply)
    for path, _ in model.block_plan():
      silenced = {**variables, "params": _silence_branch(variables["params"], path, variant)}
      spread = float(np.abs(apply(silenced, x1) - apply(silenced, x2)).max())
      if shortcut == "none":
        assert spread < 1e-6, f"{path}: plain net output still depends on its input"
      else:
        assert spread > 1e-3, f"{path}: residual net lost its shortcut"


# --- Lesions: lesion_blocks ---

def test_lesion_blocks_equals_silenced_branch():
  # For a residual net, dropping a block at inference is the same as a branch that outputs zeros.
  x = _images()
  base = _tiny("cifar_resnet20")
  variables = _init(base, x)
  plan = base.block_plan()
  for index in (0, 3, 4, 8):  # identity blocks and a downsampling block (option A carries it)
    lesioned = _tiny("cifar_resnet20", lesion_blocks=(index,))
    silenced = {**variables, "params": _silence_branch(variables["params"], plan[index][0], "v1.5")}
    dropped = lesioned.apply(variables, x)
    np.testing.assert_allclose(dropped, base.apply(silenced, x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(dropped, base.apply(variables, x), atol=1e-4)
    # Training ignores the lesion.
    np.testing.assert_array_equal(_train(lesioned, variables, x)[0], _train(base, variables, x)[0])


def test_lesion_blocks_in_plain_net():
  x = _images()
  base = _tiny("cifar_resnet20", shortcut="none")
  variables = _init(base, x)
  lesioned = _tiny("cifar_resnet20", shortcut="none", lesion_blocks=(1,))
  assert not np.allclose(lesioned.apply(variables, x), base.apply(variables, x), atol=1e-4)
  changes_shape = [i for i, (_, changes) in enumerate(base.block_plan()) if changes]
  assert changes_shape == [3, 6]
  for index in changes_shape:
    with pytest.raises(ValueError, match="changes the feature shape"):
      _tiny("cifar_resnet20", shortcut="none", lesion_blocks=(index,))
  # ImageNet bottleneck nets change shape in the very first block too (64 -> 256 channels).
  with pytest.raises(ValueError, match="stage1/block0"):
    models.create("resnet50", num_classes=10, shortcut="none", lesion_blocks=(0,))


@pytest.mark.parametrize("index", [-1, 9, 100, 2.5])
def test_lesion_blocks_out_of_range(index):
  with pytest.raises(ValueError, match=r"0\.\.8|integers"):
    models.create("cifar_resnet20", num_classes=10, lesion_blocks=(index,))


def test_intermediates_one_branch_per_block():
  model = _tiny("resnet50", lesion_blocks=(2,))
  x = _images()
  _, state = model.apply(_init(model, x), x, mutable=[models.INTERMEDIATES])
  branches = _flat(state[models.INTERMEDIATES])
  assert sorted(branches) == sorted(f"{path}/branch" for path, _ in model.block_plan())
  assert branches["stage4/block2/branch"][0].shape == (2, 1, 1, 2048 // 16)
  assert not np.any(branches["stage1/block2/branch"][0])  # the dropped block contributes nothing
  assert np.any(branches["stage1/block1/branch"][0])


# --- Synchronised BatchNorm ---

def test_bn_axis_name_matches_full_batch():
  x = _images(batch=8)
  local = _micro()
  synced = _micro(bn_axis_name="batch")
  variables = _init(local, x)
  want, want_updates = jax.jit(lambda xs: _train(local, variables, xs))(x)
  shards = x.reshape(2, 4, *x.shape[1:])
  got, got_updates = jax.jit(jax.vmap(lambda xs: _train(synced, variables, xs), axis_name="batch"))(shards)
  np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4)
  for a, b in zip(jax.tree.leaves(got_updates), jax.tree.leaves(want_updates)):
    np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5)


def test_bn_axis_index_groups():
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices (tests/conftest.py simulates them on the CPU)")
  groups = ((0, 1), (2, 3))
  x = _images(batch=8)
  local = _micro()
  synced = _micro(bn_axis_name="batch", bn_axis_index_groups=groups)
  variables = _init(local, x)
  shards = x.reshape(4, 2, *x.shape[1:])
  got, _ = jax.pmap(lambda xs: _train(synced, variables, xs), axis_name="batch", devices=jax.devices()[:4])(shards)
  for group in groups:  # each group normalises over its own 4 images only
    images = jnp.concatenate([shards[i] for i in group])
    want, _ = jax.jit(lambda xs: _train(local, variables, xs))(images)
    np.testing.assert_allclose(np.concatenate([got[i] for i in group]), want, rtol=1e-4, atol=1e-4)


# --- Bad input ---

@pytest.mark.parametrize("knobs, message", [
    (dict(variant="v2"), r"variant.*\['v1', 'v1.5', 'preact'\]"),
    (dict(shortcut="D"), r"shortcut.*\['A', 'B', 'C', 'none'\]"),
    (dict(stem_pool="min"), r"stem_pool.*'max'"),
    (dict(global_pool="sum"), r"global_pool.*'flatten'"),
    (dict(head="linear"), r"head.*'mlp'"),
    (dict(activation="elu"), r"activation.*'silu'"),
    (dict(shortcut="none", zero_init_residual=True), "plain networks"),
    (dict(variant="preact", zero_init_residual=True), "'v1' or 'v1.5'"),
    (dict(head="mlp"), r"head_hidden"),
    (dict(head_hidden=(10,)), r"head='mlp'"),
    (dict(head="conv", global_pool="flatten"), r"'avg' or 'max'"),
    (dict(dropout=1.0), r"\[0, 1\)"),
    (dict(width=0), "positive"),
    (dict(bn_momentum=1.5), r"\[0, 1\)"),
    (dict(bn_epsilon=0.0), "positive"),
    (dict(dtype="int32"), "floating dtype"),
    (dict(param_dtype="float3"), "floating dtype"),
    (dict(bn_axis_index_groups=((0, 1),)), "bn_axis_name"),
    (dict(colour="red"), r"valid knobs are \['variant'"),
    (dict(stem_type="deeper"), r"stem_type.*'deep_tiered'"),
    (dict(attn_layer="cbam"), r"attn_layer.*\['none', 'se', 'eca'\]"),
    (dict(shortcut="none", drop_path_rate=0.1), "would drop the signal"),
    (dict(shortcut="A", avg_down=True), "shortcut 'B' or 'C'"),
    (dict(shortcut="none", avg_down=True), "shortcut 'B' or 'C'"),
    (dict(cardinality=32), "bottleneck blocks"),
    (dict(base_width=4), "bottleneck blocks"),
    (dict(drop_path_rate=1.0), r"\[0, 1\)"),
    (dict(branch_dropout=-0.1), r"\[0, 1\)"),
    (dict(cardinality=0), "positive"),
], ids=_case_id)
def test_bad_knobs_raise(knobs, message):
  with pytest.raises(ValueError, match=message):
    models.create("resnet18", num_classes=10, **knobs)


def test_bottleneck_without_channels_raises():
  # ResNeXt's 32x4d at 1/16 width: floor(4 * 4 / 64) = 0 channels per group.
  with pytest.raises(ValueError, match="no channels"):
    models.create("resnext50_32x4d", num_classes=10, width=1 / 16)


def test_bad_name_and_classes_raise():
  with pytest.raises(ValueError, match=r"resnet51.*'resnet50'.*'cifar_resnet20'"):
    models.create("resnet51", num_classes=10)
  with pytest.raises(ValueError, match="6n\\+4"):
    models.create("wrn_27_10", num_classes=10)
  with pytest.raises(ValueError, match="num_classes"):
    models.create("resnet18", num_classes=0)


def test_any_wide_resnet():
  # wrn_<6n+4>_<k> beside the registered ones: (depth - 4) / 6 blocks per stage, widths 16k, 32k, 64k.
  params = _flat(_abstract_init(models.create("wrn_10_2", num_classes=10))["params"])
  assert params["stage3/block0/conv2/kernel"].shape == (3, 3, 128, 128)
  assert not any(p.startswith("stage1/block1") for p in params)
  assert models.create("wrn_28_10", num_classes=10).branch_dropout == 0.3  # the paper's CIFAR dropout


# --- The 2017-2019 relatives: stems, ResNet-D shortcuts, groups, attention, stochastic depth ---

def test_family_structure():
  def shapes(name):
    return {p: v.shape for p, v in _flat(_abstract_init(models.create(name, num_classes=1000))["params"]).items()}

  d = shapes("resnet50d")
  # Deep stem 32, 32, 64 (ResNet-C); 64 channels into stage 1 as the 7x7 stem gives.
  assert [d[f"stem/conv{i}/kernel"] for i in (1, 2, 3)] == [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64)]
  assert "stem/conv/kernel" not in d and d["stem/bn3/scale"] == (64,)
  assert shapes("resnet50s")["stem/conv3/kernel"] == (3, 3, 64, 128)
  assert [shapes("resnet50t")[f"stem/conv{i}/kernel"][-1] for i in (1, 2, 3)] == [24, 32, 64]
  # ResNeXt 32x4d: 128 inner channels in stage 1, the 3x3 in 32 groups of 4 input channels each.
  x = shapes("resnext50_32x4d")
  assert x["stage1/block0/conv2/kernel"] == (3, 3, 4, 128) and x["stage1/block0/conv3/kernel"] == (1, 1, 128, 256)
  assert shapes("resnext101_32x8d")["stage4/block0/conv2/kernel"] == (3, 3, 64, 2048)  # 2048 in 32 groups
  assert shapes("wide_resnet50_2")["stage1/block0/conv2/kernel"] == (3, 3, 128, 128)
  se = shapes("seresnet50")
  assert se["stage1/block0/attn/fc1/kernel"] == (1, 1, 256, 16) and se["stage4/block2/attn/fc2/bias"] == (2048,)
  eca = shapes("ecaresnet50d")
  assert eca["stage1/block0/attn/conv/kernel"] == (5, 1, 1) and eca["stage4/block0/attn/conv/kernel"] == (7, 1, 1)


def test_attention_widths():
  # timm: SE reduces C / 16 to a multiple of 8 (at least 8); ECA's kernel is the odd size near (log2 C + 1) / 2.
  assert [blocks.se_channels(c) for c in (8, 64, 100, 256, 2048)] == [8, 8, 8, 16, 128]
  assert [blocks.eca_kernel_size(c) for c in (16, 64, 256, 512, 1024, 2048)] == [3, 3, 5, 5, 5, 7]


def _torch_avg_pool_2x2_ceil(x):
  """PyTorch's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False), written from its definition: output size
  ceil((H - 2) / 2) + 1, each window clipped to the map and averaged over what is inside."""
  n, h, w, c = x.shape
  out = np.zeros((n, -(-(h - 2) // 2) + 1, -(-(w - 2) // 2) + 1, c))
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      out[:, i, j] = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean(axis=(1, 2))
  return out


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (5, 6), (1, 3)])
def test_avg_down_pooling_matches_ceil_mode(size):
  x = np.random.default_rng(0).standard_normal((2, *size, 3)).astype(np.float32)
  np.testing.assert_allclose(blocks.avg_pool_2x2_ceil(jnp.asarray(x)), _torch_avg_pool_2x2_ceil(x), rtol=1e-6,
                             atol=1e-6)


def test_drop_path_rates_grow_linearly():
  model = models.create("resnet50", num_classes=10, drop_path_rate=0.2)
  rates = model.drop_path_rates()
  assert len(rates) == 16 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
  np.testing.assert_allclose(np.diff(rates), 0.2 / 15)


def test_drop_path_drops_whole_examples_and_keeps_the_expectation():
  x = jnp.ones((4096, 2, 2, 3))
  y = blocks.drop_path(x, 0.25, jax.random.key(0))
  per_example = np.asarray(y).reshape(4096, -1)
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75], rtol=1e-6)
  assert all(len(set(row)) == 1 for row in per_example[:64])  # an example is dropped whole or kept whole
  assert abs(per_example.mean() - 1.0) < 0.05  # expectation unchanged


def test_stochastic_depth_only_in_training():
  model = _tiny("cifar_resnet20", drop_path_rate=0.5)
  x = _images(batch=8)
  variables = _init(model, x)
  plain = _tiny("cifar_resnet20")
  np.testing.assert_array_equal(model.apply(variables, x), plain.apply(variables, x))  # evaluation: no drops
  a, _ = _train(model, variables, x, seed=1)
  b, _ = _train(model, variables, x, seed=2)
  assert not np.allclose(a, b)  # training: a fresh draw per step
  reference, _ = _train(plain, variables, x)
  assert not np.allclose(a, reference)


_NEW_KNOBS = dict(stem_type="deep_tiered", avg_down=True, attn_layer="se", branch_dropout=0.1, drop_path_rate=0.1)


# Every unit and variant meets both attention layers in the default suite; the full product is marked slow.
_FAMILY_GRADIENT_CASES = {(models.BasicBlock, "v1.5", "se"), (models.BasicBlock, "preact", "eca"),
                          (models.Bottleneck, "v1", "eca"), (models.Bottleneck, "v1.5", "se"),
                          (models.Bottleneck, "preact", "se")}


@pytest.mark.parametrize("block, variant, attn", [
    pytest.param(b, v, a, id=f"{a}-{v}-{b.__name__}",
                 marks=() if (b, v, a) in _FAMILY_GRADIENT_CASES else pytest.mark.slow)
    for b in (models.BasicBlock, models.Bottleneck) for v in models.VARIANTS for a in ("se", "eca")])
def test_family_knobs_get_gradients(block, variant, attn):
  """Every parameter of the deep stem, ResNet-D shortcuts, grouped convolutions, SE/ECA and dropout between the
  convolutions gets a finite, non-zero gradient. Stochastic depth is on at a rate low enough that no block loses its
  branch for all four examples with this seed (checked: a branch dropped for the whole batch gets no gradient by
  design, see the next test)."""
  grouped = dict(cardinality=2, base_width=64) if block is models.Bottleneck else {}
  model = models.ResNet(num_classes=10, stage_sizes=(2, 1), block=block, widths=(8, 8), stem_width=8, stem_kernel=3,
                        stem_strides=1, stem_pool="max", variant=variant, **{**_NEW_KNOBS, "attn_layer": attn},
                        **grouped)
  x = _images(batch=4, size=8)
  dropped = _branches_dropped_for_the_whole_batch(model, x)
  assert not dropped
  grads = _gradients(model, x, jnp.arange(4))
  bad = [p for p, g in grads.items() if not (np.isfinite(g).all() and np.any(g != 0))]
  assert not bad, f"parameters without a finite, non-zero gradient: {bad}"
  assert any("/attn/" in p for p in grads) and any("shortcut" in p for p in grads)


def _branches_dropped_for_the_whole_batch(model, x, seed=2):
  """Blocks whose residual branch stochastic depth zeroed for every example in the training pass `_gradients` runs
  (same dropout key): their sown branch output is all zeros."""
  variables = _init(model, x)
  _, state = model.apply(variables, x, train=True, rngs={"dropout": _key(seed)},
                         mutable=["batch_stats", models.INTERMEDIATES])
  return {"/".join(str(k) for k in path[:-1]) for path, leaf in flax.traverse_util.flatten_dict(
      state[models.INTERMEDIATES]).items() if not np.any(np.asarray(leaf))}


def test_stochastic_depth_dropped_branches_get_no_gradient_by_design():
  """At a high rate some blocks lose their branch for the whole batch: exactly their branch parameters get zero
  gradient (by design: the branch did not take part in the step), every other parameter a non-zero one."""
  model = models.ResNet(num_classes=10, stage_sizes=(3, 3), block=models.BasicBlock, widths=(8, 8), stem_width=8,
                        stem_kernel=3, stem_strides=1, stem_pool="none", drop_path_rate=0.9)
  x = _images(batch=2, size=8)
  dropped = _branches_dropped_for_the_whole_batch(model, x)
  assert dropped, "the seed should drop at least one branch for the whole batch"
  grads = _gradients(model, x, jnp.arange(2))
  for path, g in grads.items():
    in_dropped_branch = any(path.startswith(block + "/") and "/shortcut/" not in path for block in dropped)
    assert np.any(g != 0) != in_dropped_branch, path
