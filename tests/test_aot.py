"""Compiling for accelerators that are not here (resnet_jax/aot.py, experiments/compile_for.py).

The compiling itself is checked on the simulated CPU devices (every test environment) and, where libtpu or JAX's
CUDA plugin is installed, for a TPU slice and an H100 (CI installs libtpu in a separate environment for the TPU
test: .ci/run).
"""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from resnet_jax import aot
from resnet_jax import config as config_lib
from tests import runs

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
HAS_CUDA_PLUGIN = any(importlib.util.find_spec(m) is not None for m in ("jax_cuda13_plugin", "jax_cuda12_plugin"))
# A CIFAR ResNet-20 on 16-pixel synthetic images: the trainer's whole program, small enough to compile in seconds.
TINY = ["--config.model.name=cifar_resnet20", "--config.data.name=synthetic", "--config.data.image_size=16",
        "--config.data.num_classes=10", "--config.batch_size=32", "--config.eval_batch_size=32"]


def _config(*overrides):
  return config_lib.resolve("configs/default.py", [*TINY, *overrides])


def _cpu_chip(usable_bytes=64 * aot.GiB):
  return aot.Chip("host CPU", "cpu", 1e12, usable_bytes, 1e11, "a test stand-in")


@pytest.mark.parametrize("name, chips, slices, topology", [
    ("tpu:v4-8", 4, 1, "v4:2x2x1"), ("tpu:v5p-8", 4, 1, "v5p:2x2x1"), ("tpu:v5e-4", 4, 1, "v5e:2x2"),
    ("tpu:v5e-8", 8, 1, "v5e:2x4"), ("tpu:v6e-4", 4, 1, "v6e:2x2"), ("tpu:v5p-128", 64, 1, "v5p:4x4x4"),
    ("tpu:2xv5p-8", 8, 2, "v5p:2x2x1"), ("gpu:h100", 1, 1, "1x1x1"), ("gpu:h200", 1, 1, "1x1x1"),
    ("gpu:h100x8", 8, 1, "1x1x8"), ("gpu:h200x8", 8, 1, "1x1x8"), ("gpu:2xh100x8", 16, 2, "1x2x8"),
])
def test_targets_are_named_as_cloud_names_accelerator_types(name, chips, slices, topology):
  target = aot.parse_target(name)
  assert (target.chips, target.slices, target.topology) == (chips, slices, topology)


@pytest.mark.parametrize("name, message", [
    ("tpu:v3-8", "unknown target 'tpu:v3-8': targets are tpu:<v4|v5p>-<TensorCores>"),
    ("tpu:v5p-6", "Cloud provisions v5p slices of v5p-8, v5p-16,"),
    ("tpu:v5e-3", "Cloud provisions v5e slices of v5e-1, v5e-4, v5e-8,"),
    ("gpu:h100x9", "a host has 1 to 8 GPUs; for more, name hosts: gpu:2xh100x8"),
    ("gpu:a100", "unknown target 'gpu:a100'"),
    ("h100", "unknown target 'h100'"),
])
def test_a_bad_target_is_one_line_naming_what_exists(name, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("|", r"\|")) as error:
    aot.parse_target(name)
  assert "\n" not in str(error.value)


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu is installed: the missing-package message cannot show")
def test_a_missing_accelerator_package_says_what_to_install():
  with pytest.raises(ImportError, match=rf'tpu:v5e-4 needs libtpu: pip install "jax\[tpu\]=={jax.__version__}"'):
    aot.target_devices(aot.parse_target("tpu:v5e-4"))
  if not HAS_CUDA_PLUGIN:
    with pytest.raises(ImportError, match=rf'pip install "jax\[cuda13\]=={jax.__version__}"'):
      aot.target_devices(aot.parse_target("gpu:h100"))


def test_dataset_shapes_need_no_data_for_the_common_datasets(tmp_path):
  imagenet = config_lib.resolve("configs/default.py", [f"--config.data.data_dir={tmp_path}"])
  assert aot.dataset_shapes(imagenet.data) == aot.DatasetInfo(1000, 1_281_167, 50_000, (224, 224, 3))
  shapes = config_lib.resolve("configs/shapes.py", [f"--config.data.data_dir={tmp_path}"])
  with pytest.raises(ValueError, match="The shapes of 'shapes' are not known without its data .*--config.data.name="
                     "synthetic --config.data.image_size=... --config.data.num_classes=... of the same shapes."):
    aot.dataset_shapes(shapes.data)


def test_the_trainers_steps_compile_with_memory_costs_and_collectives():
  """The config's own train and eval steps over 4 (simulated) devices: XLA's per-device memory and costs, the
  gradient all-reduce, and a roofline from the chip's figures."""
  config = _config()
  target = dataclasses.replace(aot.parse_target("gpu:h100"), chip=_cpu_chip(), chips=4)
  result = aot.compile_config(config, target, jax.devices(), aot.dataset_shapes(config.data))
  train, evaluation = result["train"], result["eval"]
  assert result["per_device_batch"] == 8 and result["devices"] == 4
  for step in (train, evaluation):
    memory = step["memory"]
    assert memory["temp"] > 0 and memory["argument"] > 0 and step["fits"]
    assert memory["total"] == (memory["argument"] + memory["output"] - memory["alias"] + memory["temp"]
                               + memory["code"])
    assert step["collectives"].get("all-reduce", 0) >= 1
  # The state is donated to the train step: its outputs alias its arguments.
  assert train["memory"]["alias"] > 0 and evaluation["memory"]["alias"] == 0
  # A train step is about 3 forward passes: forward, and the backward pass's two products per layer.
  assert 2.5 < train["flops"] / evaluation["flops"] < 3.5
  roof = train["roofline"]
  assert roof["step_s"] == max(train["flops"] / 1e12, train["bytes_accessed"] / 1e11)
  assert roof["images_per_s_per_chip"] == pytest.approx(8 / roof["step_s"])


def test_the_pmap_step_compiles_too_and_does_the_same_work():
  """config.parallelism='pmap' compiles for the devices given (its leading device axis on state and batch), with
  the FLOPs and collectives of the shard_map step."""
  target = dataclasses.replace(aot.parse_target("gpu:h100"), chip=_cpu_chip(), chips=4)
  results = {}
  for strategy in ("shard_map", "pmap"):
    config = _config(f"--config.parallelism={strategy}")
    results[strategy] = aot.compile_config(config, target, jax.devices(), aot.dataset_shapes(config.data),
                                           eval_step=False)["train"]
  assert results["pmap"]["flops"] == pytest.approx(results["shard_map"]["flops"], rel=0.02)
  assert results["pmap"]["memory"]["alias"] > 0 and "all-reduce" in results["pmap"]["collectives"]


def test_gradient_accumulation_counts_every_micro_batch_and_holds_one_at_a_time():
  """4 micro-batches per update: FLOPs per step those of the whole batch (the loop's body scaled, see
  aot._count_accumulation) and fewer temporaries than the whole batch at once."""
  target = dataclasses.replace(aot.parse_target("gpu:h100"), chip=_cpu_chip(), chips=4)
  results = {}
  for accum in (1, 4):
    config = _config("--config.batch_size=128", f"--config.grad_accum_steps={accum}")
    results[accum] = aot.compile_config(config, target, jax.devices(), aot.dataset_shapes(config.data),
                                        eval_step=False)["train"]
  assert results[4]["flops"] == pytest.approx(results[1]["flops"], rel=0.05)
  assert "cost_scaled" in results[4] and "cost_scaled" not in results[1]
  assert results[4]["memory"]["temp"] < 0.6 * results[1]["memory"]["temp"]


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_the_largest_batch_is_found_in_few_compiles_and_verified():
  """With a memory budget that fits 24 images per device and not 32, the search returns exactly that pair."""
  config = _config()
  info = aot.dataset_shapes(config.data)
  target = dataclasses.replace(aot.parse_target("gpu:h100"), chip=_cpu_chip(), chips=4)
  at = {b: aot.train_fit(config, target, jax.devices(), info, b)["total"] for b in (24, 32)}
  budget = (at[24] + at[32]) // 2
  target = dataclasses.replace(target, chip=_cpu_chip(budget))
  found = aot.find_max_batch(config, target, jax.devices(), info, multiple=8, probes=(8, 16), log=lambda _: None)
  assert (found["max_per_device_batch"], found["first_not_fitting"], found["verified"]) == (24, 32, True)
  assert len(found["compiles"]) <= 5


def _compile_for(tmp_path, *flags):
  out = tmp_path / "results.jsonl"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-m", "experiments.compile_for", "--config=configs/default.py", *TINY,
                         "--config.data.image_size=32", f"--out={out}", *flags], cwd=runs.ROOT, env=env,
                        capture_output=True, text=True, timeout=1800, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout, [json.loads(line) for line in out.read_text().splitlines()]


NO_LIBTPU = 'libtpu is not installed (pip install "jax[tpu]"); CI runs this test in a separate environment that has it'


@pytest.mark.skipif(not HAS_LIBTPU, reason=NO_LIBTPU)
@pytest.mark.parametrize("name, kind, devices, hosts", [
    ("tpu:v4-8", "TPU v4", 4, 1), ("tpu:v5p-8", "TPU v5", 4, 1), ("tpu:v5e-4", "TPU v5 lite", 4, 1),
    ("tpu:v5e-8", "TPU v5 lite", 8, 1), ("tpu:v6e-4", "TPU v6 lite", 4, 1), ("tpu:v5p-128", "TPU v5", 64, 16),
    ("tpu:2xv5p-8", "TPU v5", 8, 2),
])
def test_tpu_devices_are_those_of_the_cloud_slice(name, kind, devices, hosts):
  """One JAX device per chip (v4 and v5p: megacore), the hosts Cloud gives the slice."""
  found = aot.target_devices(aot.parse_target(name))
  assert (found[0].device_kind, len(found), len({d.process_index for d in found})) == (kind, devices, hosts)


@pytest.mark.skipif(not HAS_LIBTPU, reason=NO_LIBTPU)
def test_the_trainers_program_compiles_for_a_tpu_slice(tmp_path):
  """The command compiles for a 4-chip TPU v5e slice: TPU devices, XLA's TPU costs, the all-reduce, a fit against
  the chip's HBM; a rerun with the same results file compiles nothing."""
  printed, records = _compile_for(tmp_path, "--target=tpu:v5e-4")
  (record,) = records
  train = record["train"]
  assert record["chip"] == "TPU v5e" and record["devices"] == 4 and record["per_device_batch"] == 8
  assert train["cost_source"] == "compiled" and train["flops"] > 0 and train["fits"]
  assert "all-reduce" in train["collectives"] and record["versions"]["libtpu"]
  assert "fits: " in printed and "of 16.00 GiB usable (the chip's 16.0 GiB of HBM" in printed
  again, records = _compile_for(tmp_path, "--target=tpu:v5e-4")
  assert len(records) == 1 and again == printed


@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason='JAX\'s CUDA plugin is not installed (pip install "jax[cuda13]", '
                    "about 5 GB; kept out of CI)")
def test_the_gpu_flops_count_the_cudnn_convolutions(tmp_path):
  """On the GPU path the compiled program calls cuDNN for its convolutions, which XLA's cost analysis of it counts
  as zero FLOPs; the FLOPs reported are those of the program before optimisation, equal to the CPU's count."""
  _, (record,) = _compile_for(tmp_path, "--target=gpu:h100", "--noeval_step")
  train = record["train"]
  assert train["cudnn_calls"] > 0 and train["flops_optimised_module"] < 0.2 * train["flops"]
  config = _config("--config.data.image_size=32")
  target = dataclasses.replace(aot.parse_target("gpu:h100"), chip=_cpu_chip(), chips=1)
  cpu = aot.compile_config(config, target, jax.devices()[:1], aot.dataset_shapes(config.data), eval_step=False)
  assert train["flops"] == pytest.approx(cpu["train"]["flops"], rel=0.05)
