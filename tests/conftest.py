"""Test setup shared by the whole suite.

Four host devices are simulated on the CPU so that data-parallel code paths (meshes, shard_map, pmap, sharded
arrays) are exercised by ordinary tests. This must happen before JAX initialises its backends.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow is only an input-pipeline library here: keep it off any accelerator.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shapes_data_dir(tmp_path_factory):
  """A TFDS data dir holding the built-in `shapes/small` dataset, prepared once per test session."""
  from resnet_jax.data import datasets
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  datasets.prepare("shapes", builder_config="small", data_dir=data_dir)
  return data_dir


@pytest.fixture(scope="session")
def xla_cache_dir(tmp_path_factory):
  """A persistent compilation cache shared by the tests' training runs (in-process and subprocesses)."""
  return str(tmp_path_factory.mktemp("xla_cache"))


@pytest.fixture
def shapes_small(shapes_data_dir):
  """The session's prepared shapes/small, as a trainer flag."""
  return f"--config.data.data_dir={shapes_data_dir}"


def _torch_loaded() -> bool:
  import sys
  return sys.modules.get("torch") is not None  # None: a test's stand-in for "not installed" (monkeypatch).


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
  """The test that first loads torch into the test process fails, by name (under xdist too, where the session check
  below sees only the controller)."""
  loaded = _torch_loaded()
  result = yield
  if not loaded and _torch_loaded():
    raise AssertionError(f"{item.nodeid} imported torch into the test process (its own code or the code it ran); "
                         "run PyTorch in a child process, and keep it out of the project's own imports.")
  return result


def pytest_sessionfinish(session, exitstatus):
  """PyTorch runs only in child processes (peers, reference logits): loaded next to JAX and TensorFlow in the test
  process, its import of triton has crashed the whole suite. A test that imports it here fails the session."""
  if _torch_loaded() and session.exitstatus == 0:
    print("\nA test imported torch into the test process; run PyTorch in a child process instead.")
    session.exitstatus = 1
