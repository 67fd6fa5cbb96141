"""The ResNet family's published-weight layout: timm parity on committed fixtures (no PyTorch needed), every named
model through safetensors, refusal of another architecture's file, and, where torch and timm / torchvision are
installed, parity of the full named models with their own forward passes (run in child processes)."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models, pretrained, weights

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "family")
with open(os.path.join(FIXTURES, "cases.json")) as _f:
  CASES = json.load(_f)["cases"]


def _fixture_model(fields) -> models.ResNet:
  fields = dict(fields)
  block = models.Bottleneck if fields.pop("block") == "bottleneck" else models.BasicBlock
  return models.ResNet(num_classes=10, block=block, **{k: tuple(v) if isinstance(v, list) else v
                                                         for k, v in fields.items()})


# --- Committed fixtures: reduced-width timm networks, one per knob combination ---

@pytest.mark.parametrize("case", sorted(CASES))
def test_timm_fixture_logits(case):
  """timm's forward pass (logits stored by tests/fixtures/family/make.py) equals ours on the converted weights, and
  the conversion inverts exactly."""
  model = _fixture_model(CASES[case]["resnet_jax"])
  state = weights.read_safetensors(os.path.join(FIXTURES, f"{case}.safetensors"))
  variables = weights.from_torch_layout(state, model)
  images = np.load(os.path.join(FIXTURES, "images.npy"))
  want = np.load(os.path.join(FIXTURES, f"{case}.logits.npy"))
  got = np.asarray(jax.jit(model.apply)(variables, images))
  assert np.std(want) > 0.05  # not a comparison of near-constant outputs
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
  back = weights.to_torch_layout(variables, model)
  assert set(back) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_fixtures_cover_every_family_knob():
  used = {(k, json.dumps(v)) for case in CASES.values() for k, v in case["resnet_jax"].items()}
  for knob, values in {"stem_type": models.STEM_TYPES, "attn_layer": models.ATTENTION_LAYERS,
                       "avg_down": (True, False), "block": ("basic", "bottleneck")}.items():
    assert {(knob, json.dumps(v)) for v in values} <= used, knob
  assert any(c["resnet_jax"]["cardinality"] > 1 for c in CASES.values())
  assert any(c["resnet_jax"]["base_width"] > 64 for c in CASES.values())


def test_fixture_parity_can_fail():
  # The same weights in a network that differs only in the ResNet-D pooling give other logits: the tolerance is
  # tight enough to see a wrong shortcut.
  fields = dict(CASES["resnet_d"]["resnet_jax"])
  state = weights.read_safetensors(os.path.join(FIXTURES, "resnet_d.safetensors"))
  images = np.load(os.path.join(FIXTURES, "images.npy"))
  want = np.load(os.path.join(FIXTURES, "resnet_d.logits.npy"))
  model = _fixture_model(fields)
  variables = weights.from_torch_layout(state, model)
  plain_shortcut = _fixture_model({**fields, "avg_down": False})
  # (The parameters are the same arrays; only the torch key names of the shortcut differ.)
  other = np.asarray(plain_shortcut.apply(variables, images))
  assert np.abs(other - want).max() > 1e-2


# --- Every named model in the layout ---

def _zeros_state(name, classes=10, seed=None):
  """A state_dict of `name` in the torch layout (zeros, or random normals with `seed`), from shapes alone."""
  rng = np.random.default_rng(seed) if seed is not None else None
  state = {}
  for key, (_, _, shape) in weights.torch_layout(models.create(name, num_classes=classes)).items():
    torch_shape = weights._to_torch_array(np.empty(shape, np.float32), key).shape
    state[key] = rng.standard_normal(torch_shape).astype(np.float32) if rng else np.zeros(torch_shape, np.float32)
  return state


_DEEP = ("resnet101", "resnet152", "resnet200", "resnext101", "wide_resnet101")  # slow to trace: the slow set


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.startswith(_DEEP) else n
                                  for n in weights.TORCH_LAYOUT_NAMES])
def test_every_named_model_has_a_layout(name):
  layout = weights.torch_layout(models.create(name, num_classes=1000))
  learned = sum(int(np.prod(shape)) for key, (collection, _, shape) in layout.items() if collection == "params")
  variables = jax.eval_shape(lambda: models.create(name, num_classes=1000).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  assert learned == sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  assert "fc.weight" in layout and "conv1.weight" in layout or "conv1.0.weight" in layout


@pytest.mark.parametrize("name", ["resnet50d", "seresnet50", "ecaresnet50d", "resnext50_32x4d"] + [
    pytest.param(n, marks=pytest.mark.slow) for n in ("resnet50t", "wide_resnet50_2")])
def test_named_model_round_trips_through_safetensors(name, tmp_path):
  """The converter's own path both ways: a .safetensors file in the layout -> our variables -> a .safetensors file,
  equal array for array (random values, so a transposition or a swapped pair of keys would show)."""
  state = _zeros_state(name, seed=0)
  source, out = str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors")
  weights.write_safetensors(source, state)
  message = weights.convert("safetensors", out, model=name, safetensors=source)
  assert f"Wrote {name} (" in message and "torchvision / timm key layout" in message
  back = weights.read_safetensors(out)
  assert set(back) - set(state) == {k for k in back if k.endswith("num_batches_tracked")}
  for key, value in state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


_TIMM_KEYS_OF = {"resnet50d": "resnet_d", "resnet50t": "resnet_t", "seresnet50": "se_resnet",
                 "ecaresnet50d": "eca_resnet_d", "resnext50_32x4d": "resnext", "resnet50s": "resnet_s"}


@pytest.mark.parametrize("name, case", sorted(_TIMM_KEYS_OF.items()))
def test_named_models_use_timms_key_names(name, case):
  """A named model's key names are those of timm's network with the same knobs (from the fixtures), block for
  block: the stem, layer2.0 (the first block whose shape changes in both) and the head."""
  fixture = weights.read_safetensors(os.path.join(FIXTURES, f"{case}.safetensors"))
  ours = weights.torch_layout_keys(name, 10)

  def first_blocks(keys):
    return {k for k in keys if not k.startswith("layer") or k.startswith("layer2.0.")}

  assert first_blocks(ours) == first_blocks(k for k in fixture if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("given, actual", [("resnet50", "resnet50d"), ("resnet50d", "resnet50c"),
                                           ("resnet50", "resnext50_32x4d"), ("resnet18", "resnet26d")] + [
    pytest.param(g, a, marks=pytest.mark.slow) for g, a in (("seresnet50", "resnet50"), ("resnet50d", "ecaresnet50d"),
                                                            ("resnet50d", "resnet50t"))])
def test_another_architectures_file_is_refused_in_one_line(given, actual, tmp_path):
  path = str(tmp_path / f"{actual}.safetensors")
  weights.write_safetensors(path, _zeros_state(actual))
  with pytest.raises(ValueError) as error:
    weights.safetensors_variables(path, given)
  message = str(error.value)
  assert "\n" not in message and f"holds {actual} weights, not {given}" in message and f"--model={actual}" in message


def test_unknown_architecture_lists_keys(tmp_path):
  state = _zeros_state("resnet18")
  del state["layer2.0.conv1.weight"]
  with pytest.raises(ValueError, match=r"missing keys \['layer2.0.conv1.weight'\] \(1\)"):
    weights.from_torch_layout(state, "resnet18")


# --- Published evaluation settings ---

def test_published_settings_name_registered_models():
  for key, s in pretrained.PUBLISHED.items():
    name, _, tag = key.partition(".")
    assert name in weights.TORCH_LAYOUT_NAMES and tag, key
    assert s.interpolation in ("bilinear", "bicubic") and 0.5 < s.crop_pct <= 1.0, key
  assert set(pretrained.DEFAULT_TAGS) <= set(weights.TORCH_LAYOUT_NAMES)
  assert pretrained.settings("resnet50", "a1_in1k").crop_pct == 0.95
  assert pretrained.settings("resnet50", "tv_in1k").crop_pct == 0.875
  assert pretrained.settings("resnet50", "IMAGENET1K_V2").resize_size == 232


def test_converter_prints_the_published_evaluation_flags(tmp_path):
  source, out = str(tmp_path / "in.safetensors"), str(tmp_path / "w")
  weights.write_safetensors(source, _zeros_state("resnet50"))
  message = weights.convert("safetensors", out, model="resnet50", safetensors=source, tag="a1_in1k")
  assert "--config.model.name=resnet50 --config.data.image_size=224 --config.data.crop_fraction=0.95" in message
  assert "bicubic" in message and "235" in message  # floor(224 / 0.95)
  assert "--config.data.crop_fraction=0.875" in pretrained.evaluation_flags("resnet50d", "ra2_in1k")
  with pytest.raises(ValueError, match=r"unknown weights tag 'a9_in1k' for resnet50; choose one of \['a1_in1k'"):
    pretrained.evaluation_flags("resnet50", "a9_in1k")
  with pytest.raises(ValueError, match="no published ImageNet weights"):
    pretrained.evaluation_flags("resnet200")


# --- Full named models against timm and torchvision themselves (child processes; torch never in this one) ---

_PEER = """
import sys
import numpy as np
import torch

library, name, out = sys.argv[1:4]
torch.manual_seed(0)
if library == "timm":
  import timm
  net = timm.create_model(name, pretrained=False, num_classes=10)
else:
  import torchvision
  net = torchvision.models.get_model(name, weights=None, num_classes=10)
net.eval()
with torch.no_grad():
  for module in net.modules():  # non-trivial statistics and affine parameters (and no zero-init)
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.2, 0.2)
      module.running_var.uniform_(0.5, 1.5)
      module.weight.uniform_(0.5, 1.5)
      module.bias.uniform_(-0.2, 0.2)
  images = np.random.default_rng(0).normal(size=(2, 61, 61, 3)).astype(np.float32)
  logits = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
import safetensors.numpy
safetensors.numpy.save_file({k: v.numpy() for k, v in net.state_dict().items()}, out + ".safetensors")
np.savez(out, images=images, logits=logits)
"""

# In the default suite (where torch is installed); the other peers are marked slow.
_FAST = {"timm": ("resnet50d", "seresnet50", "ecaresnet50d", "resnext50_32x4d"),
         "torchvision": ("resnet18", "resnet50", "resnext50_32x4d")}


def _peer_case(library, name):
  installed = importlib.util.find_spec(library) is not None and importlib.util.find_spec("torch") is not None
  marks = [pytest.mark.skipif(not installed, reason=f"{library} (with torch) is not installed")]
  if name not in _FAST[library]:
    marks.append(pytest.mark.slow)
  return pytest.param(library, name, marks=marks, id=f"{library}-{name}")


@pytest.mark.parametrize("library, name", [_peer_case("timm", n) for n in weights.TORCH_LAYOUT_NAMES] + [
    _peer_case("torchvision", n) for n in weights.TORCHVISION_NAMES])
def test_full_model_logits_equal_the_peers(library, name, tmp_path):
  """The named model built by timm or torchvision (random weights, randomised BatchNorm), saved as .safetensors,
  converted by the converter's own path, gives the peer's logits (61 x 61 images: odd sizes all the way down)."""
  out = str(tmp_path / name)
  subprocess.run([sys.executable, "-c", _PEER, library, name, out], check=True, timeout=900,
                 env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  with np.load(out + ".npz") as saved:
    images, want = saved["images"], saved["logits"]
  variables = weights.safetensors_variables(out + ".safetensors", name)
  got = np.asarray(jax.jit(models.create(name, num_classes=10).apply)(variables, images))
  assert np.std(want) > 0.05
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


_TIMM_CFGS = """
import json, sys
import timm
out = {}
for key in json.loads(sys.argv[1]):
  cfg = timm.models.get_pretrained_cfg(key).to_dict()
  out[key] = {k: cfg.get(k) for k in ("input_size", "test_input_size", "crop_pct", "test_crop_pct", "interpolation",
                                       "mean", "std")}
print(json.dumps(out))
"""

_TORCHVISION_CFGS = """
import json, sys
import torchvision
out = {}
for key in json.loads(sys.argv[1]):
  name, _, enum = key.partition(".")
  w = torchvision.models.get_model_weights(name)[enum]
  t = w.transforms()
  out[key] = {"crop": t.crop_size[0], "resize": t.resize_size[0], "interpolation": t.interpolation.value,
              "top1": w.meta["_metrics"]["ImageNet-1K"]["acc@1"]}
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
def test_published_settings_equal_timms_registry():
  keys = [k for k, s in pretrained.PUBLISHED.items() if s.source == "timm"]
  result = subprocess.run([sys.executable, "-c", _TIMM_CFGS, json.dumps(keys)], check=True, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  cfgs = json.loads(result.stdout.strip().splitlines()[-1])
  for key in keys:
    s, c = pretrained.PUBLISHED[key], cfgs[key]
    assert (s.input_size, s.crop_pct, s.interpolation) == (c["input_size"][1], c["crop_pct"], c["interpolation"]), key
    assert (list(s.mean), list(s.std)) == (list(c["mean"]), list(c["std"])), key
    want_test = (c["test_input_size"][1], c["test_crop_pct"] or c["crop_pct"]) if c["test_input_size"] else None
    assert s.test == want_test, key


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="torchvision is not installed")
def test_published_settings_equal_torchvisions_weights():
  keys = [k for k, s in pretrained.PUBLISHED.items() if s.source == "torchvision"]
  result = subprocess.run([sys.executable, "-c", _TORCHVISION_CFGS, json.dumps(keys)], check=True,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  cfgs = json.loads(result.stdout.strip().splitlines()[-1])
  for key in keys:
    s, c = pretrained.PUBLISHED[key], cfgs[key]
    assert (s.input_size, s.resize_size, s.interpolation, s.top1) == (
        c["crop"], c["resize"], c["interpolation"], c["top1"]), key
