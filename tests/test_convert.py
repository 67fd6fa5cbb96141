"""experiments/convert_weights.py: Keras and torchvision weights written as checkpoints that init_from loads.

ResNet-50 is never run here (that is tests/test_weights.py's parity check): the tests compare arrays, and merge
the converted weights into the model's variables as the engine does for --config.init_from.
"""
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from resnet_jax import finetune, models, weights
from tests import runs

# torchvision's documented ResNet-50 count; Keras's ResNet50 has 25,636,712: these plus the 79,680 conv biases that
# fold into BatchNorm.
RESNET50_PARAMS = 25_557_032


def _convert(*args, expect_rc=0):
  result = subprocess.run([sys.executable, "-m", "experiments.convert_weights", *args], cwd=runs.ROOT,
                          env=runs.device_env(1), capture_output=True, text=True, timeout=600)
  assert result.returncode == expect_rc, result.stdout[-2000:] + result.stderr[-4000:]
  return result.stdout + result.stderr


def _assert_equal(a, b):
  runs.assert_trees_close(a, b, rtol=0, atol=0)


def _model_variables(name, num_classes, **knobs):
  """Random variables with the names and shapes `model.init` gives (no compilation)."""
  model = models.create(name, num_classes=num_classes, **knobs)
  rng = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(lambda: model.init({"params": rng, "dropout": rng}, np.zeros((1, 64, 64, 3), np.float32),
                                             train=False))
  values = np.random.default_rng(1)
  return {k: jax.tree.map(lambda s: values.standard_normal(s.shape).astype(s.dtype), shapes[k])
          for k in ("params", "batch_stats")}


@pytest.fixture(scope="module")
def keras_model():
  """keras.applications.ResNet50 with random weights, random BatchNorm statistics and non-zero conv biases."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  keras = pytest.importorskip("keras")
  model = keras.applications.ResNet50(weights=None, classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      shape = layer.get_weights()[0].shape
      layer.set_weights([rng.uniform(0.5, 1.5, shape), rng.normal(0, 0.2, shape), rng.normal(0, 0.2, shape),
                         rng.uniform(0.5, 2.0, shape)])
    elif isinstance(layer, keras.layers.Conv2D):
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.normal(0, 0.2, bias.shape)])
  return model


def test_keras_weights_file_converts_and_loads_for_finetuning(tmp_path, keras_model):
  weights_file = str(tmp_path / "resnet50.weights.h5")
  keras_model.save_weights(weights_file)
  out = str(tmp_path / "converted")
  output = _convert("--from=keras", f"--keras_weights={weights_file}", f"--out={out}")
  assert f"resnet50 ({RESNET50_PARAMS:,} parameters, 1000 classes)" in output
  assert (f"--config.model.name=resnet50 --config.model.variant=v1 --config.model.bn_epsilon=1.001e-05 "
          f"--config.init_from={out}") in output

  loaded = finetune.load_params(out)
  _assert_equal(loaded, weights.from_keras_resnet50(keras_model))  # The file's weights, exactly.

  # init_from into the matching network: every variable is the loaded one.
  same = _model_variables("resnet50", 1000, **weights.KERAS_RESNET50_KNOBS)
  _assert_equal(finetune.merge_for_finetune(same, loaded), loaded)
  # Fewer classes: the head is the model's own initialisation, everything else is loaded.
  fewer = _model_variables("resnet50", 10, **weights.KERAS_RESNET50_KNOBS)
  merged = finetune.merge_for_finetune(fewer, loaded)
  _assert_equal(merged["params"]["head"], fewer["params"]["head"])
  _assert_equal(runs.without_head(merged["params"]), runs.without_head(loaded["params"]))
  _assert_equal(merged["batch_stats"], loaded["batch_stats"])
  # Another depth does not fit: the first differing variable is named.
  with pytest.raises(ValueError, match=r"'batch_stats/stage2/block0/shortcut/bn/mean' has shape \(512,\) in the "
                                       r"loaded weights but \(128,\) in the model"):
    finetune.merge_for_finetune(_model_variables("resnet18", 1000), loaded)


def test_random_keras_weights_and_bad_flags(tmp_path):
  out = str(tmp_path / "random")
  output = _convert("--from=keras", "--num_classes=7", f"--out={out}")
  assert "7 classes" in output
  loaded = finetune.load_params(out)
  assert loaded["params"]["head"]["dense"]["kernel"].shape == (2048, 7)
  assert "exists; pass --overwrite" in _convert("--from=keras", f"--out={out}", expect_rc=2)
  assert "no such file" in _convert("--from=keras", "--keras_weights=missing.h5", f"--out={tmp_path / 'x'}",
                                    expect_rc=2)
  assert "--from" in _convert(f"--out={tmp_path / 'y'}", expect_rc=2)  # Required, with its choices.


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torchvision_state_dict_converts(tmp_path):
  from tests.test_weights import torchvision_state_dict
  state = torchvision_state_dict("resnet18", 10, np.random.default_rng(0))
  path, arrays = str(tmp_path / "resnet18.pth"), str(tmp_path / "state.npz")
  np.savez(arrays, **state)
  # torch.save in a child process: torch stays out of the test process, where JAX and TensorFlow live.
  subprocess.run([sys.executable, "-c", "import sys, numpy as np, torch; arrays = np.load(sys.argv[1]); "
                  "torch.save({k: torch.from_numpy(arrays[k]) for k in arrays.files}, sys.argv[2])", arrays, path],
                 check=True, timeout=300)
  out = str(tmp_path / "converted")
  output = _convert("--from=torchvision", "--model=resnet18", f"--state_dict={path}", f"--out={out}")
  assert f"--config.model.name=resnet18 --config.init_from={out}" in output
  _assert_equal(finetune.load_params(out), weights.from_torch_layout(state, "resnet18"))


def test_training_checkpoints_and_data_parallel_keys_are_unwrapped():
  state = {"conv1.weight": 1, "fc.weight": 2}
  assert weights._unwrap(state) == state
  assert weights._unwrap({"state_dict": {"module.conv1.weight": 1, "module.fc.weight": 2}}) == state
  assert weights._unwrap({"model": state, "epoch": 90}) == state
  with pytest.raises(ValueError, match="not a state_dict"):
    weights._unwrap([1, 2])


def test_torchvision_without_torch_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # What `import torch` meets where it is not installed.
  with pytest.raises(ImportError, match="needs PyTorch: pip install torch"):
    weights.torchvision_variables("resnet50", None, None)
  with pytest.raises(ValueError, match="resnet51.*resnet50"):
    weights.torchvision_variables("resnet51", None, None)


_WITHOUT_TORCHVISION = """
import sys
sys.modules["torchvision"] = None  # What `import torchvision` meets where it is not installed.
from resnet_jax import weights
try:
  weights.torchvision_variables("resnet50", None, None)
except ImportError as e:
  print(e)
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torchvision_network_without_torchvision_is_a_clear_error():
  # In a child process: the error comes after `import torch`, which must stay out of the test process.
  result = subprocess.run([sys.executable, "-c", _WITHOUT_TORCHVISION], capture_output=True, text=True, timeout=300,
                          cwd=runs.ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
  assert "pip install torchvision, or pass --state_dict" in result.stdout, result.stdout + result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_random_resnet18_to_safetensors_and_back(tmp_path):
  """--from=random writes our initialisation in the torchvision / timm layout; --from=safetensors reads it back
  exactly, into weights that init_from merges (another class count: a fresh head)."""
  pytest.importorskip("safetensors")
  from safetensors.numpy import load_file
  path = str(tmp_path / "resnet18.safetensors")
  output = _convert("--from=random", "--model=resnet18", "--num_classes=10", f"--out={path}")
  assert "Wrote resnet18 (11,181,642 parameters, 10 classes) from random" in output
  assert f"--from=safetensors --safetensors={path} --model=resnet18" in output
  state = load_file(path)
  assert len(state) == 122 and state["fc.weight"].shape == (10, 512)  # torchvision's resnet18 keys, fc (out, in).
  # Our initialisation (the subprocess's XLA flags may round the initialisers' last bit differently).
  runs.assert_trees_close(weights.from_torch_layout(state, "resnet18"), weights.random_variables("resnet18", 10),
                          rtol=1e-5, atol=1e-7)
  out = str(tmp_path / "converted")
  output = _convert("--from=safetensors", f"--safetensors={path}", "--model=resnet18", f"--out={out}")
  assert f"--config.model.name=resnet18 --config.init_from={out}" in output
  loaded = finetune.load_params(out)
  _assert_equal(loaded, weights.from_torch_layout(state, "resnet18"))
  merged = finetune.merge_for_finetune(_model_variables("resnet18", 3), loaded)
  _assert_equal(runs.without_head(merged["params"]), runs.without_head(loaded["params"]))
  assert merged["params"]["head"]["dense"]["kernel"].shape == (512, 3)
