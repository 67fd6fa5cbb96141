"""The benchmark (resnet_jax.bench, experiments/benchmark.py) and its peers: the JSON a run writes, the peer plan,
the timing protocol."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from resnet_jax import xla_flags
from resnet_jax.bench import peers, run, workload

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, timeout=120):
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_tiny_run_writes_a_complete_result(tmp_path):
  """A CIFAR ResNet-20 on 4 host devices: every field, a cache hit on the relaunch, peers recorded as skipped."""
  out = tmp_path / "result.json"
  _run([sys.executable, "-m", "experiments.benchmark", "--model=cifar_resnet20", "--batch=8", "--image_size=16",
        "--dtype=float32", "--steps=2", "--windows=2", "--warmup=0", "--peers=keras,torch_eager",
        # The CPU flags pay off on the real workloads, not on this toy (its compile would take twice as long).
        "--platform_xla_flags=false", "--extra_xla_flags=--xla_cpu_enable_fast_min_max=false",
        f"--compilation_cache_dir={tmp_path / 'cache'}", f"--out={out}"])
  result = json.loads(out.read_text())

  assert result["workload"]["model"] == "cifar_resnet20" and result["workload"]["batch"] == 8
  assert result["workload"]["image_size"] == 16 and result["workload"]["num_classes"] == 10
  assert result["device"]["platform"] == "cpu" and result["device"]["count"] == 4  # tests/conftest.py
  assert result["images_per_sec"] > 0
  assert len(result["window_images_per_sec"]) == 2
  assert result["images_per_sec"] == pytest.approx(sorted(result["window_images_per_sec"])[0] / 2 +
                                                   sorted(result["window_images_per_sec"])[1] / 2)
  assert result["step_time_s"] == pytest.approx(8 / result["images_per_sec"])
  # XLA's count for one device's quarter of the batch, scaled back to one image.
  assert result["flops_per_image"] == pytest.approx(result["flops_per_step_per_device"] * 4 / 8)
  assert result["flops_per_image"] > 0
  assert 0 < result["mfu"] < 1
  assert result["peak_flops_source"]
  assert result["versions"]["jax"] and result["versions"]["flax"]
  assert result["command"].startswith("python -m experiments.benchmark --model=cifar_resnet20")
  assert {"start", "end", "after_peers"} <= set(result["loadavg"])
  assert [r["images_per_sec"] for r in result["rounds"]] == [result["images_per_sec"]]
  assert "compiled_temp_size_in_bytes" in result["memory"]
  # The user's XLA flags reach the measured process (after the suite's own, from tests/conftest.py).
  assert result["xla_flags"] == "--xla_force_host_platform_device_count=4 --xla_cpu_enable_fast_min_max=false"

  cold, warm = result["compile"]["cold"], result["compile"]["warm"]
  for times in (cold, warm):
    assert times["total_s"] == pytest.approx(times["lower_s"] + times["compile_s"])
  # The relaunch finds the executable in the persistent cache instead of compiling it again.
  assert warm["compile_s"] < cold["compile_s"] / 2
  assert len(list((tmp_path / "cache").glob("jit_train_step-*"))) == 1

  peers = result["peers"]
  assert peers["keras"] == {"peer": "keras", "status": "skipped",
                            "reason": "peer 'keras' reproduces resnet50, not cifar_resnet20"}
  assert peers["torch_eager"]["status"] == "skipped"


# A sitecustomize.py that makes packages look uninstalled: the path finder no longer finds them, so an import raises
# ModuleNotFoundError and importlib.util.find_spec gives None, as on a machine without them.
_BLOCKER = """
import sys
from importlib.machinery import PathFinder

class _WithoutSome(PathFinder):
  @classmethod
  def find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in {blocked!r}:
      return None
    return PathFinder.find_spec(name, path, target)

sys.meta_path[:] = [_WithoutSome if finder is PathFinder else finder for finder in sys.meta_path]
"""


def test_runs_where_tensorflow_and_tfds_are_missing(tmp_path):
  """The GPU images have JAX, Flax, Optax, Orbax and PyTorch but not TensorFlow or TFDS: the benchmark must not
  need them. (Its workload is a config, so it needs ml_collections: a small pure-Python wheel to bring along.)"""
  blocked = ("tensorflow", "tensorflow_datasets", "clu", "keras")
  (tmp_path / "sitecustomize.py").write_text(_BLOCKER.format(blocked=blocked))
  check = subprocess.run([sys.executable, "-c", "import tensorflow"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
  assert check.returncode != 0 and "No module named 'tensorflow'" in check.stderr  # the blocker works
  out = tmp_path / "result.json"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--model=cifar_resnet20", "--batch=8", "--image_size=16",
       "--dtype=float32", "--steps=2", "--windows=2", "--warmup=0", "--warm_compile=false",
       "--platform_xla_flags=false", f"--compilation_cache_dir={tmp_path / 'cache'}", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(out.read_text())["images_per_sec"] > 0


def test_trainer_on_synthetic_data_needs_no_tensorflow(tmp_path):
  """configs/benchmark.py trains (and writes its TensorBoard events) where TensorFlow and TFDS are missing."""
  (tmp_path / "sitecustomize.py").write_text(_BLOCKER.format(blocked=("tensorflow", "tensorflow_datasets")))
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config=configs/benchmark.py", f"--workdir={workdir}",
       "--config.model.name=cifar_resnet20", "--config.data.image_size=8", "--config.data.num_classes=10",
       "--config.batch_size=8", "--config.num_steps=2", "--config.log_every_steps=1", "--config.dtype=float32",
       "--config.compilation_cache_dir="],
      cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(tmp_path)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (workdir / "done.json").exists() and list(workdir.glob("events.out.tfevents.*"))


def _workload(model="resnet50", **kw):
  return workload.resolve_workload(model, platform_name="cpu", device_count=1, **kw)


def test_peer_plan_skips_with_the_reason():
  r50, r56 = _workload("resnet50", dtype="float32"), _workload("cifar_resnet56", dtype="float32")
  assert peers.peer_skip_reason("torch_cifar", r50, "cpu") == \
      "peer 'torch_cifar' reproduces cifar_resnet20, cifar_resnet32, cifar_resnet44..., not resnet50"
  assert peers.peer_skip_reason("torch_compile", r50, "tpu") == \
      "peer 'torch_compile' runs on cpu/gpu, and this run is on tpu"
  assert peers.peer_skip_reason("keras", r50, "gpu") == "peer 'keras' runs on cpu, and this run is on gpu"
  absent = peers.Peer("x.py", ("resnet50",), ("json", "no_such_module_for_this_test"), ("cpu",))
  assert peers.peer_skip_reason("x", r50, "cpu", absent) == \
      "missing Python module(s) ['no_such_module_for_this_test']"
  torch_here = importlib.util.find_spec("torch") is not None
  assert (peers.peer_skip_reason("torch_cifar", r56, "cpu") is None) == torch_here


def test_peer_command_carries_the_workload_and_protocol():
  cmd = peers.peer_command("torch_cifar", _workload("cifar_resnet56", dtype="float32"), platform_name="cpu",
                               warmup=3, windows=5, window=4, out="r.json")
  assert cmd[1:3] == ["-m", "benchmarks.peers.torch_cifar_resnet"]
  assert cmd[3:] == ["--batch=128", "--image_size=32", "--dtype=float32", "--device=cpu", "--warmup=3",
                     "--windows=5", "--window=4", "--out=r.json", "--depth=56"]
  cmd = peers.peer_command("torch_compile", _workload(batch=256), platform_name="gpu", warmup=3, windows=5,
                               window=4, out="t.json")
  assert "--device=cuda" in cmd and "--compile_mode=default" in cmd and "--dtype=bfloat16" in cmd


def test_unknown_peer_names_the_choices():
  peers.check_peer_names(["keras", "torch_cifar"])
  with pytest.raises(ValueError, match=r"unknown peer\(s\) \['tf'\]; choose from \['keras', 'torch_cifar'"):
    peers.check_peer_names(["keras", "tf"])


def test_resnet50_peer_skips_itself_without_cuda(tmp_path):
  """Run directly, the peer script checks its own requirements and writes a skip instead of failing."""
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed")
  cuda = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                        capture_output=True, text=True, check=True, timeout=300).stdout.strip() == "True"
  if cuda:
    pytest.skip("this machine can run the peer")
  out = tmp_path / "peer.json"
  _run([sys.executable, "-m", "benchmarks.peers.torch_resnet50", "--device=cuda", "--batch=2",
        "--image_size=32", f"--out={out}"])
  result = json.loads(out.read_text())
  assert result["status"] == "skipped" and result["peer"] == "torch_eager"
  assert "CUDA" in result["reason"]


def test_plain_torch_resnet50_peer_has_the_published_layers():
  """Where torchvision is missing the ResNet-50 peers run benchmarks/peers/torch_bottleneck_resnet.py: the same
  parameter count as torchvision's resnet50 and ours, and v1.5's stride on the 3x3 convolution (in a child process:
  see tests/conftest.py)."""
  if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed")
  code = """
import torch
from benchmarks.peers import torch_bottleneck_resnet
model = torch_bottleneck_resnet.build(torch, 50)
branch = model.blocks[3].branch  # Stage 2, block 1: 1x1 (stride 1), 3x3 (stride 2), 1x1.
print(sum(p.numel() for p in model.parameters()),
      [m[0].stride[0] for m in branch if isinstance(m, torch.nn.Sequential)],
      tuple(model(torch.zeros(1, 3, 64, 64)).shape))
"""
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                       timeout=300).stdout.split("\n")[-2]
  assert out == "25557032 [1, 2, 1] (1, 1000)"


def test_defaults_follow_family_and_platform():
  cifar = _workload("cifar_resnet56")
  assert (cifar.batch, cifar.image_size, cifar.num_classes) == (128, 32, 10)
  r50 = workload.resolve_workload("resnet50", platform_name="gpu", device_count=8)
  assert (r50.batch, r50.image_size, r50.num_classes) == (256 * 8, 224, 1000)
  with pytest.raises(ValueError, match="--batch must be positive"):
    _workload(batch=0)


def _round(ours, peer, cpu_ours=1.0, cpu_peer=1.0, status="ok"):
  peer_result = {"peer": "p", "status": status}
  if status == "ok":
    peer_result.update(images_per_sec=peer, cpu_seconds_per_step=cpu_peer)
  return {"ours": {"images_per_sec": ours, "cpu_seconds_per_step": cpu_ours, "mfu": 0.1 * ours,
                   "workload": {"batch": 8}, "loadavg": {"start": [1.0, 1.0, 1.0]}},
          "peers": {"p": peer_result}}


def test_rounds_pair_each_ratio_with_its_own_round():
  # Round 2 ran while the machine was busy for both sides: the paired ratios stay 2.0, 2.0 and 1.0.
  result = run.combine_rounds([_round(4.0, 2.0, 2.0, 6.0), _round(1.0, 0.5, 3.0, 3.0),
                                     _round(4.0, 4.0, 2.0, 2.0)])
  assert result["images_per_sec"] == 4.0 and result["step_time_s"] == 2.0
  assert result["mfu"] == pytest.approx(0.4)
  assert result["cpu_seconds_per_step"] == 2.0
  peer = result["peers"]["p"]
  assert peer["images_per_sec"] == 2.0 and peer["ratio"] == 2.0 and peer["rounds_ok"] == 3
  assert peer["cpu_time_ratio"] == 1.0  # median of 3.0, 1.0 and 1.0
  assert [r["images_per_sec"] for r in result["rounds"]] == [4.0, 1.0, 4.0]
  # A peer that never ran keeps its skip record and gets no ratio.
  skipped = run.combine_rounds([_round(4.0, None, status="skipped")])
  assert skipped["peers"]["p"] == {"peer": "p", "status": "skipped"}
  with pytest.raises(ValueError, match="no rounds"):
    run.combine_rounds([])


def test_xla_flags_per_platform():
  cpu = " ".join(xla_flags.PLATFORM_XLA_FLAGS["cpu"])
  assert run.xla_flags_for("cpu", True) == cpu
  assert run.xla_flags_for("cpu", True, "--xla_dump_to=d") == cpu + " --xla_dump_to=d"
  assert run.xla_flags_for("cpu", False, "--xla_dump_to=d") == "--xla_dump_to=d"
  # Disabling an HLO pass is a CPU measurement; it must never leak onto an accelerator's compiler.
  assert run.xla_flags_for("gpu", True) == ""
  assert run.xla_flags_for("tpu", True) == ""


def test_timing_plan():
  assert workload.timing_plan(20, 5) == (5, 4)
  assert workload.timing_plan(2, 5) == (2, 1)
  assert workload.timing_plan(7, 2) == (2, 3)
  with pytest.raises(ValueError, match="at least 1"):
    workload.timing_plan(0, 5)


def test_peer_harness_runs_every_step_once():
  from benchmarks.peers import harness
  calls = {"step": 0, "sync": 0}
  timing = harness.time_steps(lambda: calls.__setitem__("step", calls["step"] + 1),
                              lambda: calls.__setitem__("sync", calls["sync"] + 1), warmup=2, windows=3, window=4)
  assert calls == {"step": 1 + 2 + 3 * 4, "sync": 1 + 1 + 3}
  assert len(timing["window_seconds"]) == 3 and timing["window_steps"] == 4
  summary = harness.summarize({"first_step_s": 1.0, "window_seconds": [1.0, 2.0, 4.0], "window_steps": 4}, 8)
  assert summary["images_per_sec"] == 16.0 and summary["step_time_s"] == 0.5


def test_the_profile_tells_every_convolution_apart():
  """In a CIFAR ResNet-20's compiled train step, XLA's instructions classify into 19 forward convolutions, 18
  gradients with respect to the input (none for the image) and 19 with respect to the weights, by stage width."""
  import collections

  from resnet_jax.bench import profile

  spec = workload.resolve_workload("cifar_resnet20", platform_name="cpu", device_count=1, batch=8, dtype="float32",
                                   image_size=16)
  step, state, batch = workload.build_step(spec, abstract=True)
  kinds = profile.classify(step.lower(state, batch).compile().as_text())
  convs = collections.Counter(kind for kind in kinds.values() if kind[0].startswith("convolution"))
  by_kind = collections.Counter()
  for (kind, _), count in convs.items():
    by_kind[kind] += count
  assert by_kind == {"convolution forward": 19, "convolution grad input": 18, "convolution grad weights": 19}
  assert convs[("convolution forward", 16)] == 7 and convs[("convolution grad weights", 64)] == 6
  assert {kind for kind, _ in kinds.values()} >= {"elementwise", "reductions (BatchNorm, pooling, loss)"}


def test_the_profile_sees_transposes_inside_nested_fusions():
  """XLA:CPU nests fusions (a transpose fusion calling a copy fusion): the nesting is not work, so a pure layout
  change still counts as a copy or transpose, not as elementwise arithmetic."""
  from resnet_jax.bench import profile

  hlo = """%inner (p0: f32[2,4]) -> f32[4,2] {
  %p0 = f32[2,4]{1,0} parameter(0)
  ROOT %transpose.1 = f32[4,2]{1,0} transpose(%p0), dimensions={1,0}
}

%outer (q0: f32[2,4]) -> f32[4,2] {
  %q0 = f32[2,4]{1,0} parameter(0)
  %fusion.9 = f32[4,2]{1,0} fusion(%q0), kind=kLoop, calls=%inner
  ROOT %copy.1 = f32[4,2]{0,1} copy(%fusion.9)
}

ENTRY %main (x: f32[2,4]) -> f32[4,2] {
  %x = f32[2,4]{1,0} parameter(0)
  ROOT %transpose_copy_fusion.2 = f32[4,2]{0,1} fusion(%x), kind=kLoop, calls=%outer
}
"""
  assert profile.classify(hlo)["transpose_copy_fusion.2"] == ("copies and transposes", 0)


def test_convolutions_timed_alone_are_the_steps_own():
  """The step's jaxpr yields the same 19 / 18 / 19 convolutions by kind and width as the compiled step, each timed
  (a positive time per row), and the markdown reports them beside the trace's table."""
  from resnet_jax.bench import profile

  spec = workload.resolve_workload("cifar_resnet20", platform_name="cpu", device_count=1, batch=4, dtype="float32",
                                   image_size=8)
  rows = profile.conv_timings(spec, repeats=1)
  counts = {(r["kind"], r["channels"]): r["count"] for r in rows}
  assert counts == {("convolution forward", 16): 7, ("convolution forward", 32): 6, ("convolution forward", 64): 6,
                    ("convolution grad input", 16): 7, ("convolution grad input", 32): 6,
                    ("convolution grad input", 64): 5, ("convolution grad weights", 16): 7,
                    ("convolution grad weights", 32): 6, ("convolution grad weights", 64): 6}
  assert all(r["ms"] > 0 for r in rows)
  result = {"step_ms": 100.0, "busy_ms": 50.0, "conv_alone": rows,
            "rows": [{"kind": "between ops (no op running)", "channels": 0, "ms": 50.0, "share": 0.5}]}
  text = profile.markdown(result)
  assert "Convolutions timed alone" in text and "| convolution grad weights | 64 | 6 |" in text


def test_the_profile_reads_multi_output_fusions():
  """With the CPU default flags XLA forms multi-output fusions, whose shape is a tuple: they are classified by what
  they contain like any other instruction (missing them moved their time to 'between ops')."""
  from resnet_jax.bench import profile

  hlo = """%fused_computation.1 (p0: f32[2,4], p1: f32[2,4]) -> (f32[2,4], f32[2,4]) {
  %p0 = f32[2,4]{1,0} parameter(0)
  %p1 = f32[2,4]{1,0} parameter(1)
  %multiply.1 = f32[2,4]{1,0} multiply(%p0, %p1)
  %add.1 = f32[2,4]{1,0} add(%p0, %p1)
  ROOT %tuple.1 = (f32[2,4]{1,0}, f32[2,4]{1,0}) tuple(%multiply.1, %add.1)
}

ENTRY %main (x: f32[2,4], y: f32[2,4]) -> (f32[2,4], f32[2,4]) {
  %x = f32[2,4]{1,0} parameter(0)
  %y = f32[2,4]{1,0} parameter(1)
  ROOT %broadcast_multiply_fusion.3 = (f32[2,4]{1,0}, f32[2,4]{1,0}) fusion(%x, %y), kind=kLoop, calls=%fc.1
}
""".replace("%fused_computation.1 (", "%fc.1 (")
  kinds = profile.classify(hlo)
  assert kinds["broadcast_multiply_fusion.3"] == ("elementwise", 0)
  assert kinds["x"] == ("bookkeeping", 0)
