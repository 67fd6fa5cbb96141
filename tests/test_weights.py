"""Tests for resnet_jax.weights: Keras ResNet50 parity, torchvision state_dict import and export, safetensors."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import models, weights

# --- Keras ---


def _keras():
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  keras = pytest.importorskip("keras")
  if keras.backend.backend() != "tensorflow":
    pytest.skip(f"Keras already runs on {keras.backend.backend()!r}; this peer check uses its TensorFlow backend")
  return keras


def _randomise_keras(model, rng):
  """Random BatchNorm statistics and affine parameters, and random conv biases (Keras initialises them to zero,
  which would leave the bias folding untested)."""
  keras = _keras()
  for layer in model.layers:
    values = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = values[0].shape
      layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0.0, 0.2, shape), rng.normal(0.0, 0.2, shape),
                         rng.uniform(0.5, 2.0, shape)])
    elif isinstance(layer, keras.layers.Conv2D):
      layer.set_weights([values[0], rng.normal(0.0, 0.2, values[1].shape)])


def test_keras_resnet50_parity():
  """Our v1 ResNet-50 with imported Keras weights gives Keras's inference logits (float32, max abs diff 1e-4)."""
  keras = _keras()
  rng = np.random.default_rng(0)
  keras_model = keras.applications.ResNet50(weights=None, classifier_activation=None)
  _randomise_keras(keras_model, rng)
  images = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
  want = keras_model(images, training=False).numpy()

  variables = weights.from_keras_resnet50(keras_model)
  model = models.create("resnet50", num_classes=1000, **weights.KERAS_RESNET50_KNOBS)
  got = np.asarray(jax.jit(model.apply)(variables, images))
  assert got.dtype == np.float32
  assert np.std(want) > 0.1  # the comparison is not between two near-zero outputs
  diff = float(np.abs(got - want).max())
  assert diff <= 1e-4, f"max abs logit difference {diff:.3g}"
  # The same weights in the v1.5 layout are a different function: the check can tell the layouts apart.
  other = models.create("resnet50", num_classes=1000, variant="v1.5", bn_epsilon=1.001e-5)
  assert float(np.abs(np.asarray(jax.jit(other.apply)(variables, images)) - want).max()) > 1e-2


def test_keras_without_classifier_is_rejected():
  keras = _keras()
  backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
  with pytest.raises(ValueError, match="include_top=True"):
    weights.from_keras_resnet50(backbone)


# --- torchvision ---

_TORCHVISION = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}
# torchvision's documented parameter counts (torchvision.models weights metadata, `num_params`).
_TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet50": 25_557_032}


# Small scales at the end of each residual branch keep activations O(1) although the statistics are random.
_LAST_BN_SCALE = (0.1, 0.3)


def torchvision_state_dict(name, num_classes, rng):
  """A state_dict with torchvision's key names and shapes (OIHW kernels, (out, in) classifier), random values.

  Written from torchvision's ResNet definition (conv1/bn1, layer{1-4}.{i}.conv{k}/bn{k}, downsample.0/.1 where the
  shape changes, fc), so the importer can be tested where torch is not installed.
  """
  kind, sizes = _TORCHVISION[name]
  state = {}

  def conv(key, out, inp, k):
    state[f"{key}.weight"] = rng.normal(0.0, np.sqrt(2.0 / (inp * k * k)), (out, inp, k, k)).astype(np.float32)

  def bn(key, c, low=0.5, high=1.5):
    state[f"{key}.weight"] = rng.uniform(low, high, c).astype(np.float32)
    state[f"{key}.bias"] = rng.normal(0.0, 0.1, c).astype(np.float32)
    state[f"{key}.running_mean"] = rng.normal(0.0, 0.1, c).astype(np.float32)
    state[f"{key}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state[f"{key}.num_batches_tracked"] = np.array(0, np.int64)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  inplanes = 64
  for stage, (blocks, width) in enumerate(zip(sizes, (64, 128, 256, 512)), start=1):
    for b in range(blocks):
      key = f"layer{stage}.{b}"
      stride = 2 if stage > 1 and b == 0 else 1
      if kind == "basic":
        conv(f"{key}.conv1", width, inplanes, 3), bn(f"{key}.bn1", width)
        conv(f"{key}.conv2", width, width, 3), bn(f"{key}.bn2", width, *_LAST_BN_SCALE)
        out = width
      else:
        conv(f"{key}.conv1", width, inplanes, 1), bn(f"{key}.bn1", width)
        conv(f"{key}.conv2", width, width, 3), bn(f"{key}.bn2", width)
        conv(f"{key}.conv3", 4 * width, width, 1), bn(f"{key}.bn3", 4 * width, *_LAST_BN_SCALE)
        out = 4 * width
      if stride != 1 or inplanes != out:
        conv(f"{key}.downsample.0", out, inplanes, 1), bn(f"{key}.downsample.1", out)
      inplanes = out
  state["fc.weight"] = rng.normal(0.0, 0.01, (num_classes, inplanes)).astype(np.float32)
  state["fc.bias"] = rng.normal(0.0, 0.01, num_classes).astype(np.float32)
  return state


def torchvision_forward(state, name, images_nchw):
  """torchvision's ResNet forward pass (v1.5, eval mode) written directly on the state_dict, NCHW."""
  kind, sizes = _TORCHVISION[name]

  def conv(x, key, stride):
    w = jnp.asarray(state[f"{key}.weight"])
    pad = w.shape[-1] // 2
    return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                        dimension_numbers=("NCHW", "OIHW", "NCHW"))

  def bn(x, key):
    p = {k: jnp.asarray(state[f"{key}.{k}"])[None, :, None, None]
         for k in ("weight", "bias", "running_mean", "running_var")}
    return (x - p["running_mean"]) / jnp.sqrt(p["running_var"] + 1e-5) * p["weight"] + p["bias"]

  relu = jax.nn.relu
  x = relu(bn(conv(images_nchw, "conv1", 2), "bn1"))
  x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3, 3), (1, 1, 2, 2), ((0, 0), (0, 0), (1, 1), (1, 1)))
  for stage, blocks in enumerate(sizes, start=1):
    for b in range(blocks):
      key = f"layer{stage}.{b}"
      stride = 2 if stage > 1 and b == 0 else 1
      if kind == "basic":
        y = relu(bn(conv(x, f"{key}.conv1", stride), f"{key}.bn1"))
        y = bn(conv(y, f"{key}.conv2", 1), f"{key}.bn2")
      else:  # torchvision puts the stride on the 3x3 convolution (v1.5)
        y = relu(bn(conv(x, f"{key}.conv1", 1), f"{key}.bn1"))
        y = relu(bn(conv(y, f"{key}.conv2", stride), f"{key}.bn2"))
        y = bn(conv(y, f"{key}.conv3", 1), f"{key}.bn3")
      if f"{key}.downsample.0.weight" in state:
        x = bn(conv(x, f"{key}.downsample.0", stride), f"{key}.downsample.1")
      x = relu(x + y)
  x = jnp.mean(x, axis=(2, 3))
  return x @ jnp.asarray(state["fc.weight"]).T + jnp.asarray(state["fc.bias"])


@pytest.mark.parametrize("name", sorted(_TORCHVISION))
def test_torchvision_layout_matches_reference_count(name):
  # Validates the hand-built state_dict against torchvision itself (its published parameter count).
  state = torchvision_state_dict(name, 1000, np.random.default_rng(0))
  learned = sum(v.size for k, v in state.items() if not k.endswith(("running_mean", "running_var", "tracked")))
  assert learned == _TORCHVISION_COUNTS[name]


@pytest.mark.parametrize("name", sorted(_TORCHVISION))
def test_from_torchvision_matches_torchvision_forward(name):
  rng = np.random.default_rng(1)
  state = torchvision_state_dict(name, 10, rng)
  variables = weights.from_torch_layout(state, name)
  params = variables["params"]
  np.testing.assert_array_equal(params["stem"]["conv"]["kernel"], state["conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["head"]["dense"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(variables["batch_stats"]["stage2"]["block0"]["shortcut"]["bn"]["var"],
                                state["layer2.0.downsample.1.running_var"])
  images = rng.normal(size=(2, 33, 33, 3)).astype(np.float32)  # odd size: padding must match on both sides
  want = jax.jit(lambda x: torchvision_forward(state, name, x))(images.transpose(0, 3, 1, 2))
  assert 0.1 < np.std(want) < 100
  got = jax.jit(models.create(name, num_classes=10).apply)(variables, images)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_from_torchvision_rejects_mismatches():
  state = torchvision_state_dict("resnet18", 10, np.random.default_rng(0))
  with pytest.raises(ValueError, match=r"holds resnet18 weights, not resnet200: convert it with --model=resnet18"):
    weights.from_torch_layout(state, "resnet200")
  with pytest.raises(ValueError, match=r"no torchvision / timm counterpart for 'cifar_resnet20'"):
    weights.from_torch_layout(state, "cifar_resnet20")
  with pytest.raises(ValueError, match=r"missing keys \['layer1.0.conv1.weight'\] \(1\)"):
    weights.from_torch_layout({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, "resnet18")
  with pytest.raises(ValueError, match="holds resnet18 weights, not resnet34"):
    weights.from_torch_layout(state, "resnet34")  # resnet34 has three blocks in stage 1
  with pytest.raises(ValueError, match=r"wrong shapes.*stage1/block0/conv1/kernel: \(1, 1, 64, 64\)"):
    weights.from_torch_layout({**state, "layer1.0.conv1.weight": np.zeros((64, 64, 1, 1))}, "resnet18")
  with pytest.raises(ValueError, match=r"unknown keys \['layer1.0.se.weight'\]"):
    weights.from_torch_layout({**state, "layer1.0.se.weight": np.zeros(3)}, "resnet18")


# torchvision's own networks, built and run in child processes: tests/test_family_weights.py.


# --- The torchvision layout from our variables; safetensors files ---


@pytest.mark.parametrize("name", sorted(_TORCHVISION))
def test_to_torchvision_inverts_from_torchvision(name):
  state = torchvision_state_dict(name, 10, np.random.default_rng(2))
  back = weights.to_torch_layout(weights.from_torch_layout(state, name), name)
  assert set(back) == set(state)
  for key, value in state.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)
    assert back[key].dtype == value.dtype, key
  assert weights.torch_layout_keys(name, 10) == {k for k in state if not k.endswith("num_batches_tracked")}


def test_safetensors_file_converts_with_torchvision_logits(tmp_path):
  """A file in the torchvision layout (written from a hand-built state_dict, as timm and torchvision save theirs)
  converts to our ResNet-18, whose logits equal torchvision's forward pass written on the same arrays."""
  pytest.importorskip("safetensors")
  rng = np.random.default_rng(3)
  state = torchvision_state_dict("resnet18", 10, rng)
  path = str(tmp_path / "model.safetensors")
  weights.write_safetensors(path, {f"module.{k}": v for k, v in state.items()})  # DataParallel-style keys too.
  variables = weights.safetensors_variables(path, "resnet18")
  images = rng.normal(size=(2, 33, 33, 3)).astype(np.float32)
  want = jax.jit(lambda x: torchvision_forward(state, "resnet18", x))(images.transpose(0, 3, 1, 2))
  got = jax.jit(models.create("resnet18", num_classes=10).apply)(variables, images)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_safetensors_with_other_keys_names_them(tmp_path):
  pytest.importorskip("safetensors")
  state = torchvision_state_dict("resnet18", 10, np.random.default_rng(0))
  path = str(tmp_path / "x.safetensors")
  extra = {**{k: v for k, v in state.items() if k != "layer2.0.conv1.weight"}, "layer1.0.se.fc.weight": np.zeros(3)}
  weights.write_safetensors(path, extra)
  with pytest.raises(ValueError, match=r"unknown keys \['layer1.0.se.fc.weight'\] \(1\), missing keys "
                                       r"\['layer2.0.conv1.weight'\] \(1\)"):
    weights.safetensors_variables(path, "resnet18")
  with pytest.raises(ValueError, match=r"holds resnet18 weights, not resnet34"):  # a whole other named model
    weights.safetensors_variables(_written(tmp_path, state), "resnet34")
  headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
  with pytest.raises(ValueError, match=r"has no 'fc.weight': a backbone saved without its classifier"):
    weights.safetensors_variables(_written(tmp_path, headless, "headless"), "resnet18")
  (tmp_path / "text.safetensors").write_text("not a safetensors file")
  with pytest.raises(ValueError, match="is not a readable .safetensors file"):
    weights.safetensors_variables(str(tmp_path / "text.safetensors"), "resnet18")
  with pytest.raises(ValueError, match="no such file"):
    weights.safetensors_variables(str(tmp_path / "none.safetensors"), "resnet18")
  with pytest.raises(ValueError, match="choose one of"):
    weights.safetensors_variables(path, "cifar_resnet20")


def _written(tmp_path, state, name="full"):
  path = str(tmp_path / f"{name}.safetensors")
  weights.write_safetensors(path, state)
  return path
