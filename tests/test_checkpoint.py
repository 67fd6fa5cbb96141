"""Tests of resnet_jax.checkpoint: exact round trips, retention, atomicity, topology changes, preemption, init_from.

They run on the 4 simulated CPU devices set up by conftest.py; the SIGTERM behaviour is tested in a subprocess so
that the test runner's own signal handling is never touched.
"""
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint
from tests.states import State, _abstract, _assert_equal_trees, _host_state, _mesh, _on_mesh

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _checkpointer(directory, **kwargs):
  kwargs = {"save_every_steps": 10, "keep": 3, **kwargs}
  return checkpoint.Checkpointer(directory, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Save, restore, retention
# ----------------------------------------------------------------------------------------------------------------
def test_roundtrip_is_exact(tmp_path):
  mesh = _mesh(4)
  host = _host_state(seed=7)
  with _checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(10, _on_mesh(host, mesh), {"step": 10, "data_position": 1280})
    ckpt.wait()
    assert ckpt.latest_step() == 10 and ckpt.steps() == [10]
    state, meta = ckpt.restore(None, _abstract(host, mesh))
  assert isinstance(state, State)
  assert meta == {"step": 10, "data_position": 1280}
  _assert_equal_trees(state, host)
  for leaf, target in zip(jax.tree.leaves(state), jax.tree.leaves(_abstract(host, mesh))):
    assert leaf.sharding == target.sharding


def test_async_save_copies_before_returning(tmp_path):
  """`save` returns once the arrays are on the host: the engine may donate (delete) them while the write goes on."""
  mesh = _mesh(4)
  host = _host_state(seed=3)
  with _checkpointer(tmp_path, async_save=True) as ckpt:
    state = _on_mesh(host, mesh)
    assert ckpt.save(10, state)
    for leaf in jax.tree.leaves(state):
      leaf.delete()  # What donate_argnums does to the state buffers at the next step.
    ckpt.wait()
    assert ckpt.latest_step() == 10
    assert not list(ckpt.directory.glob("*.orbax-checkpoint-tmp"))
    restored, meta = ckpt.restore(10, _abstract(host, mesh))
  assert meta == {"step": 10}
  _assert_equal_trees(restored, host)


def test_should_save_and_force(tmp_path):
  host = _host_state()
  with _checkpointer(tmp_path, save_every_steps=5) as ckpt:
    assert [s for s in range(0, 16) if ckpt.should_save(s)] == [5, 10, 15]
    assert not ckpt.save(7, host)  # Not a multiple of 5: only a forced save (preemption, last step) writes it.
    assert ckpt.save(7, host, force=True)
    assert ckpt.save(10, host)
    assert not ckpt.should_save(10)  # Already saved (still in flight): never written twice.
    assert not ckpt.save(10, host, force=True)
    ckpt.wait()
    assert ckpt.steps() == [7, 10]


@pytest.mark.parametrize("keep, keep_every, expected", [(2, None, [50, 60]), (2, 30, [30, 50, 60]),
                                                        (None, None, [10, 20, 30, 40, 50, 60])])
def test_retention(tmp_path, keep, keep_every, expected):
  host = {"w": np.arange(4, dtype=np.float32)}
  with _checkpointer(tmp_path, keep=keep, keep_every_steps=keep_every) as ckpt:
    for step in range(10, 61, 10):
      assert ckpt.save(step, host)
    ckpt.wait()
    assert ckpt.steps() == expected
  assert sorted(os.listdir(tmp_path)) == [str(s) for s in expected]


@pytest.mark.parametrize("kwargs", [{"save_every_steps": 0}, {"keep": 0}, {"keep_every_steps": 25}])
def test_bad_options_are_rejected(tmp_path, kwargs):
  with pytest.raises(ValueError, match=next(iter(kwargs))):
    _checkpointer(tmp_path, **kwargs)


def test_meta_must_be_json(tmp_path):
  with _checkpointer(tmp_path) as ckpt:
    with pytest.raises(ValueError, match="JSON"):
      ckpt.save(10, {"w": np.zeros(2)}, {"position": np.zeros(2)})


# ----------------------------------------------------------------------------------------------------------------
# Atomicity: what a kill during a save leaves behind is never restored
# ----------------------------------------------------------------------------------------------------------------
def test_planted_temporary_and_uncommitted_dirs_are_ignored(tmp_path):
  mesh = _mesh(2)
  directory = tmp_path / "ckpt"
  with _checkpointer(directory) as ckpt:
    for step in (10, 20):
      ckpt.save(step, _on_mesh(_host_state(seed=step), mesh), {"step": step})
  # A save killed mid-write: Orbax's temporary directory, holding what looks like a whole checkpoint.
  shutil.copytree(directory / "20", directory / "30.orbax-checkpoint-tmp")
  # A step directory that was never committed (e.g. copied by hand, or a file system without atomic rename).
  shutil.copytree(directory / "20", directory / "40")
  os.remove(directory / "40" / checkpoint.COMMIT_MARKER)
  os.remove(directory / "40" / checkpoint.STEP_METADATA)

  assert checkpoint.complete_steps(directory) == [10, 20]
  with _checkpointer(directory) as ckpt:
    assert ckpt.latest_step() == 20
    with pytest.raises(FileNotFoundError, match="committed steps: \\[10, 20\\]"):
      ckpt.restore(40, _abstract(_host_state(), mesh))
    state, meta = ckpt.restore(None, _abstract(_host_state(), mesh))
    assert meta == {"step": 20}
    _assert_equal_trees(state, _host_state(seed=20))
    # The uncommitted directory was set aside, so a resumed run can write steps 30 and 40 again.
    assert (directory / "40.incomplete").is_dir() and not (directory / "40").exists()
    assert ckpt.save(30, _on_mesh(_host_state(seed=30), mesh), force=True)
    assert ckpt.save(40, _on_mesh(_host_state(seed=40), mesh), force=True)
    ckpt.wait()
    assert ckpt.steps() == [20, 30, 40]  # keep=3
    state, _ = ckpt.restore(None, _abstract(_host_state(), mesh))
  _assert_equal_trees(state, _host_state(seed=40))
  assert not list(directory.glob("*.orbax-checkpoint-tmp"))


@pytest.mark.parametrize("missing", [checkpoint.COMMIT_MARKER, checkpoint.STEP_METADATA, checkpoint.STATE])
def test_step_without_any_commit_file_is_incomplete(tmp_path, missing):
  with _checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(10, {"w": np.zeros(3, np.float32)})
  assert checkpoint.is_complete(tmp_path / "10")
  path = tmp_path / "10" / missing
  shutil.rmtree(path) if path.is_dir() else os.remove(path)
  assert not checkpoint.is_complete(tmp_path / "10")
  assert checkpoint.complete_steps(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------
# Topology changes
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("saved_on, restored_on", [(4, 2), (4, 1), (1, 4), (2, 4)])
def test_restore_onto_another_device_count(tmp_path, saved_on, restored_on):
  host = _host_state(seed=5)
  with _checkpointer(tmp_path) as ckpt:
    ckpt.save(10, _on_mesh(host, _mesh(saved_on)))
    ckpt.wait()
    target = _abstract(host, _mesh(restored_on))
    state, _ = ckpt.restore(10, target)
  _assert_equal_trees(state, host)
  for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(target)):
    assert leaf.sharding == want.sharding
  kernel = state.params["stem"]["kernel"]  # 3 rows: replicated on every device of the new mesh.
  assert len(kernel.sharding.device_set) == restored_on
  trace = state.opt_state[0].trace["head"]["kernel"]  # 8 rows: split over every device of the new mesh.
  assert {s.data.shape for s in trace.addressable_shards} == {(8 // restored_on, 10)}


# ----------------------------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------------------------
def test_restore_mismatch_names_first_leaf(tmp_path):
  mesh = _mesh(1)
  host = _host_state(num_classes=10)
  with _checkpointer(tmp_path) as ckpt:
    with pytest.raises(FileNotFoundError, match="No committed checkpoint"):
      ckpt.restore(None, _abstract(host, mesh))
    ckpt.save(10, _on_mesh(host, mesh))
    ckpt.wait()

    other_head = _abstract(_host_state(num_classes=5), mesh)
    with pytest.raises(ValueError, match=r"'params/head/bias' has shape \(10,\).*target has shape \(5,\)"):
      ckpt.restore(10, other_head)

    extra = _abstract(host.replace(params={**host.params, "extra": {"w": np.zeros(2, np.float32)}}), mesh)
    with pytest.raises(ValueError, match="'params/extra/w' \\(shape \\(2,\\)\\) is not in the checkpoint"):
      ckpt.restore(10, extra)

    fewer = _abstract(host.replace(batch_stats={}), mesh)
    with pytest.raises(ValueError, match="has 'batch_stats/stem_bn/mean'.*which the target train state lacks"):
      ckpt.restore(10, fewer)

    other_dtype = _abstract(host.replace(step=np.float32(0)), mesh)
    with pytest.raises(ValueError, match="'step' has shape \\(\\) and dtype int32"):
      ckpt.restore(10, other_dtype)

    unsharded = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), host)
    with pytest.raises(ValueError, match="has no sharding"):
      ckpt.restore(10, unsharded)


# ----------------------------------------------------------------------------------------------------------------
# Preemption
# ----------------------------------------------------------------------------------------------------------------
_SIGTERM_SCRIPT = textwrap.dedent("""
    import os, signal, time
    from resnet_jax import checkpoint
    print("installed", checkpoint.install_sigterm_handler(), flush=True)
    print("before", checkpoint.preemption_requested(1), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # Still alive: the handler only records the request.
    print("after", checkpoint.preemption_requested(2), checkpoint.preemption_requested(3), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # A second SIGTERM terminates as usual.
    time.sleep(10)
    print("still running", flush=True)
""")


def test_sigterm_requests_preemption_then_second_sigterm_kills():
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", _SIGTERM_SCRIPT], capture_output=True, text=True, env=env,
                        cwd=REPO, timeout=120)
  assert proc.stdout.splitlines() == ["installed True", "before False", "after True True"], proc.stderr
  assert proc.returncode == -signal.SIGTERM


_TWO_PROCESS_SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import jax
    process_id, port, service = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "service"
    if not service:
      jax.config.update("jax_enable_preemption_service", False)
      jax.config.update("jax_cpu_collectives_implementation", "gloo")  # For the all-gather of the flags.
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id)
    from resnet_jax import checkpoint
    print("installed", checkpoint.install_sigterm_handler(), flush=True)
    for step in range(1, 500):
      time.sleep(0.02)  # A training step.
      if process_id == 1 and step == 5:
        os.kill(os.getpid(), signal.SIGTERM)  # Only one process is told.
      if checkpoint.preemption_requested(step, agree_every_steps=4):
        print("stop", step, flush=True)
        break
    jax.distributed.shutdown()
""")


def _free_port():
  import socket
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["service", "flag"])
def test_two_processes_stop_at_the_same_step(mode):
  """A SIGTERM to one process stops both at one step: JAX's sync point, or the all-gathered flag (every 4 steps)."""
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_SCRIPT, str(i), port, mode], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=180) for p in procs]
  lines = [[text for text in out.splitlines() if text.startswith(("installed", "stop"))] for out, _ in outputs]
  assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
  installed = "installed False" if mode == "service" else "installed True"  # JAX owns SIGTERM with the service.
  assert lines[0][0] == lines[1][0] == installed
  stops = [int(line[1].split()[1]) for line in lines]
  assert stops[0] == stops[1] >= 5, lines
  if mode == "flag":
    assert stops[0] == 8  # The first multiple of agree_every_steps after the signal.
