"""Tests for resnet_jax.flops: XLA's FLOP count of a compiled step, peak rates (datasheets, CPU estimate), MFU."""
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from resnet_jax import flops


@pytest.mark.parametrize("cpuinfo, per_cycle", [
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": "fma avx2 avx512f"}, 32),  # Zen 4: 2 x 256-bit
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": "fma avx2 avx512f"}, 64),  # Zen 5
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "fma avx2 avx512f"}, 64),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "fma avx2"}, 32),
    ({"vendor_id": "GenuineIntel", "cpu family": "6", "flags": "sse4_2"}, 8),
])
def test_cpu_peak_estimate(cpuinfo, per_cycle):
  peak, how = flops.cpu_peak_flops({**cpuinfo, "cpu MHz": "2000.0", "model name": "test"}, cores=2)
  assert peak == 2 * 2000e6 * per_cycle
  assert f"{per_cycle} FLOP/cycle" in how
  assert flops.cpu_peak_flops({"flags": "fma"}, cores=2)[0] is None


def test_peak_flops_table():
  assert flops.peak_flops("NVIDIA H200", "bfloat16") == 989e12
  assert flops.peak_flops("NVIDIA H200", jnp.bfloat16) == 989e12
  assert flops.peak_flops("NVIDIA A100-SXM4-40GB", "float32") == 156e12
  assert flops.peak_flops("TPU v5 lite", "bf16") == 197e12
  assert flops.peak_flops("TPU v6 lite", "bfloat16") == 918e12
  assert flops.peak_flops("TPU v4", "float32") is None
  assert flops.peak_flops("cpu", "float32") is None
  assert flops.peak_flops(jax.devices()[0].device_kind, "float32") is None  # the CPU test machine
  for kind, peaks in flops.PEAK_FLOPS.items():
    assert peaks and all(1e12 <= v <= 2e15 for v in peaks.values()), kind


def test_mfu():
  # 100 TFLOP per step at 4.945 steps/s on an H200 in bfloat16 is half its 989 TFLOP/s.
  assert flops.mfu(100e12, 4.945, "NVIDIA H200", "bfloat16") == pytest.approx(0.5)
  assert flops.mfu(100e12, 4.945, "cpu", "float32") is None
  assert flops.mfu(None, 4.945, "NVIDIA H200", "bfloat16") is None


def test_step_flops_counts_per_device_work():
  a, b = jnp.ones((64, 32)), jnp.ones((32, 16))
  matmul = jax.jit(lambda a, b: a @ b)
  assert flops.step_flops(matmul.lower(a, b).compile()) == 2 * 64 * 32 * 16  # a multiply-add is 2 FLOPs
  # Split over the test session's 4 devices along the rows, each device does a quarter of the work.
  mesh = jax.make_mesh((4,), ("data",))
  sharded = matmul.lower(jax.device_put(a, NamedSharding(mesh, P("data"))),
                         jax.device_put(b, NamedSharding(mesh, P()))).compile()
  assert flops.step_flops(sharded) == 2 * 64 * 32 * 16 / 4
