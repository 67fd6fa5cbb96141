"""One trainer per workdir (resnet_jax.workdir_lock): a second one is refused with the holder's name; a lock left
by a killed trainer never blocks the resume."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from resnet_jax import workdir_lock
from tests import runs


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(workdir_lock.WorkdirInUseError, match=rf"process {os.getpid()} on host "
                                                            rf"{socket.gethostname()}, running since"):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()  # Released.
  workdir_lock.WorkdirLock(str(tmp_path)).acquire()  # Free again.


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()
  return proc.pid


def _plant(tmp_path, **fields):
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  record = {**lock._record(), **fields}
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(record))
  return record


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
  _plant(tmp_path, pid=_dead_pid())
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["pid"] == os.getpid()


def test_a_reused_pid_does_not_hold_the_lock(tmp_path):
  _plant(tmp_path, process_start="1")  # This process's pid, but another process's start time.
  with workdir_lock.WorkdirLock(str(tmp_path)):
    pass


def test_locks_from_other_hosts_are_stale_only_without_a_heartbeat(tmp_path):
  _plant(tmp_path, host="elsewhere", heartbeat=time.time())
  with pytest.raises(workdir_lock.WorkdirInUseError, match="on host elsewhere"):
    workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=60).acquire()
  _plant(tmp_path, host="elsewhere", heartbeat=time.time() - 61)
  with workdir_lock.WorkdirLock(str(tmp_path), stale_after_s=60):
    pass


def test_an_unreadable_lock_is_stale(tmp_path):
  (tmp_path / workdir_lock.LOCK_FILE).write_text('{"host": "x", "p')  # A holder killed while writing it.
  with workdir_lock.WorkdirLock(str(tmp_path)):
    pass


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path), heartbeat_s=0.05):
    first = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["heartbeat"]
    time.sleep(0.5)
    assert json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())["heartbeat"] > first


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_a_second_trainer_on_a_running_workdir_refuses_and_a_killed_one_resumes(tmp_path, shapes_data_dir,
                                                                             xla_cache_dir):
  workdir = str(tmp_path / "run")
  args = [f"--workdir={workdir}", *runs.tiny_flags(shapes_data_dir, xla_cache_dir, num_steps=400,
                                                   log_every_steps=1, checkpoint_every_steps=2)]
  with runs.running(runs.run_subprocess(args, devices=1)) as first:
    runs.wait_for(lambda: runs.last_logged_step(workdir) >= 2, first, what="step 2")
    second = subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=runs.ROOT,
                            env=runs.device_env(1), capture_output=True, text=True, timeout=300)
    assert second.returncode != 0
    assert f"is in use by another trainer: process {first.pid} on host {socket.gethostname()}" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.poll() is None  # The first one trains on.
    first.kill()
    first.wait()
  # The killed trainer's lock does not block its rerun, which resumes.
  resumed = runs.start("experiments.train", args, devices=1)
  with runs.running(resumed):
    runs.wait_for(lambda: "Resumed from the checkpoint" in runs.output(resumed), resumed, what="the resume")
    assert "Taking over the lock" in runs.output(resumed)
