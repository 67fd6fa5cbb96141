"""The launch scripts in experiments/launch: what their --dry-run says they would run, and shellcheck.

Each dry-run line is one shell command; `shlex.split` turns it back into the exact argv (so the quoting of
training flags that travel through `gcloud ... ssh --command=...` is checked too, by splitting twice).
"""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, "experiments", "launch")
TPU_VM = os.path.join(LAUNCH, "tpu_vm.sh")
SLURM = os.path.join(LAUNCH, "slurm.sbatch")
MULTI_GPU = os.path.join(LAUNCH, "multi_gpu.sh")
SCRIPTS = sorted(glob.glob(os.path.join(LAUNCH, "*.sh")) + glob.glob(os.path.join(LAUNCH, "*.sbatch")))

# A flag whose value needs quoting twice over (spaces, a quote): it must reach experiments.train intact.
AWKWARD = "--config.data.data_dir=gs://b/it's a dir"


def _run(script, *args, env=None, expect_rc=0):
  clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TPU_"))}
  result = subprocess.run(["bash", script, *args], capture_output=True, text=True, cwd="/",
                          env={**clean, **(env or {})}, timeout=30)
  assert result.returncode == expect_rc, result.stderr
  return result


def _dry_run(script, *args, env=None):
  return [shlex.split(line) for line in _run(script, "--dry-run", *args, env=env).stdout.splitlines()]


def _jax_pin():
  with open(os.path.join(REPO, "requirements.txt")) as f:
    return re.search(r"^jax==(\S+)", f.read(), re.M).group(1)


def _remote(argv):
  """The command a `gcloud ... ssh --command=...` line runs on the workers, split into words."""
  (command,) = [a[len("--command="):] for a in argv if a.startswith("--command=")]
  return command


def test_scripts_pass_shellcheck():
  if shutil.which("shellcheck") is None:
    pytest.skip("shellcheck is not installed (apt-get install shellcheck); CI installs it")
  assert len(SCRIPTS) == 3
  result = subprocess.run(["shellcheck", "--severity=style", *SCRIPTS], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_are_executable_bash(script):
  assert os.access(script, os.X_OK)
  with open(script) as f:
    assert f.readline().strip() == "#!/usr/bin/env bash"


# ---------------------------------------------------------------------------------------------------------------
# tpu_vm.sh
# ---------------------------------------------------------------------------------------------------------------


def test_tpu_vm_up_creates_installs_and_trains_on_every_worker():
  lines = _dry_run(TPU_VM, "--name=r50", "--zone=us-central2-b", "--spot", "up", "--",
                   "--config=configs/tpu.py", "--workdir=gs://b/runs/r50", AWKWARD)
  create, archive, scp, unpack, install, train = lines
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  assert create == tpu + ["create", "r50", "--zone=us-central2-b", "--accelerator-type=v4-8",
                          "--version=tpu-ubuntu2204-base", "--spot"]
  # The committed code is packed here once and copied to every worker.
  assert archive == ["git", "-C", REPO, "archive", "--format=tar.gz", "-o", archive[-2], "HEAD"]
  assert scp == tpu + ["scp", archive[-2], "r50:resnet_jax.tar.gz", "--zone=us-central2-b", "--worker=all"]
  for ssh in (unpack, install, train):
    assert ssh[:8] == tpu + ["ssh", "r50", "--zone=us-central2-b", "--worker=all"]
  assert "tar -xzf resnet_jax.tar.gz -C resnet_jax" in _remote(unpack)
  # The pinned requirements plus JAX's TPU extra at the pinned version, in one pip call.
  pip = _remote(install).split("; ")[-1]
  assert shlex.split(pip) == ["resnet_jax_venv/bin/pip", "install", "-q", "-r", "resnet_jax/requirements.txt",
                              f"jax[tpu]=={_jax_pin()}"]
  # The same detached training command on all workers; the training flags arrive exactly as given.
  remote = shlex.split(_remote(train))
  start = remote.index("setsid")
  assert remote[start:start + 5] == ["setsid", "nohup", "../resnet_jax_venv/bin/python", "-m", "experiments.train"]
  assert remote[start + 5:start + 8] == ["--config=configs/tpu.py", "--workdir=gs://b/runs/r50", AWKWARD]
  assert remote[start + 8:start + 10] == [">>", "../resnet_jax_run/train.log"]


@pytest.mark.parametrize("accelerator, version", [
    ("v4-8", "tpu-ubuntu2204-base"), ("v4-32", "tpu-ubuntu2204-base"), ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ("v5p-8", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e"),
])
def test_tpu_vm_software_version_follows_the_accelerator(accelerator, version):
  (create,) = _dry_run(TPU_VM, "--name=t", "--zone=z", "--project=p", f"--accelerator-type={accelerator}", "create")
  assert create[5:] == ["t", "--zone=z", "--project=p", f"--accelerator-type={accelerator}", f"--version={version}"]


def test_tpu_vm_install_by_cloning_a_repository():
  clone, install = _dry_run(TPU_VM, "--name=t", "--zone=z", "--repo=https://example.com/r.git", "--ref=v1",
                            "install")
  assert _remote(clone) == ("rm -rf resnet_jax && git clone https://example.com/r.git resnet_jax && "
                            "git -C resnet_jax checkout v1")
  assert "--worker=all" in clone and "--worker=all" in install


def test_tpu_vm_day_two_commands():
  (logs,) = _dry_run(TPU_VM, "--name=t", "--zone=z", "--worker=3", "logs")
  assert "--worker=3" in logs and _remote(logs) == "tail -n 200 -F resnet_jax_run/train.log"
  (stop,) = _dry_run(TPU_VM, "--name=t", "--zone=z", "stop")
  assert "--worker=all" in stop and _remote(stop).startswith('kill -TERM -- -"$(cat resnet_jax_run/train.pid)"')
  (status,) = _dry_run(TPU_VM, "--name=t", "--zone=z", "status")
  assert status[4:7] == ["describe", "t", "--zone=z"]
  (delete,) = _dry_run(TPU_VM, "--name=t", "--zone=z", "delete")
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t", "--zone=z", "--quiet"]


@pytest.mark.parametrize("args, message", [
    (["--zone=z", "create"], "--name=NAME is required"),
    (["--name=t", "create"], "--zone=ZONE is required"),
    (["--name=t", "--zone=z"], "missing COMMAND"),
    (["--name=t", "--zone=z", "--accelerator-type=v9-8", "create"], "no default --version"),
    (["--name=t", "--zone=z", "train"], "needs the training flags"),
    (["--name=t", "--zone=z", "up", "--", "--config=configs/tpu.py"], "pass --workdir=gs://"),
    (["--name=t", "--zone=z", "--bogus", "create"], "unknown argument '--bogus'"),
])
def test_tpu_vm_refuses_bad_arguments_before_doing_anything(args, message):
  result = _run(TPU_VM, "--dry-run", *args, expect_rc=2)
  assert message in result.stderr and result.stdout == ""


def test_tpu_vm_warns_about_a_workdir_off_the_bucket():
  result = _run(TPU_VM, "--dry-run", "--name=t", "--zone=z", "train", "--", "--workdir=runs/x")
  assert "not a gs:// bucket" in result.stderr and "experiments.train --workdir=runs/x" in result.stdout


# ---------------------------------------------------------------------------------------------------------------
# slurm.sbatch
# ---------------------------------------------------------------------------------------------------------------


def test_slurm_runs_one_task_per_node_from_the_submit_directory():
  cd, srun = _dry_run(SLURM, "--config=configs/gpu.py", "--workdir=/shared/runs/r50", AWKWARD,
                      env={"SLURM_SUBMIT_DIR": "/shared/resnet_jax", "SLURM_CPUS_PER_TASK": "32",
                           "PYTHON": "/shared/venv/bin/python"})
  assert cd == ["cd", "/shared/resnet_jax"]
  assert srun == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=32",
                  "/shared/venv/bin/python", "-m", "experiments.train", "--config=configs/gpu.py",
                  "--workdir=/shared/runs/r50", AWKWARD]


def test_slurm_defaults_outside_a_job():
  cd, srun = _dry_run(SLURM, "--workdir=w")
  assert cd == ["cd", "/"]  # The current directory stands in for the submit directory.
  assert srun == ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "python3", "-m", "experiments.train",
                  "--workdir=w"]
  assert "pass the training flags" in _run(SLURM, "--dry-run", expect_rc=2).stderr


def test_slurm_directives_ask_for_preemption_warning_and_requeue():
  with open(SLURM) as f:
    directives = [line.split(None, 1)[1].strip() for line in f if line.startswith("#SBATCH")]
  assert "--ntasks-per-node=1" in directives and "--requeue" in directives
  assert any(re.fullmatch(r"--signal=TERM@\d+", d) for d in directives)
  # sbatch reads directives only up to the first command.
  with open(SLURM) as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  first_command = next(i for i, line in enumerate(lines) if not line.startswith("#"))
  assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))


# ---------------------------------------------------------------------------------------------------------------
# multi_gpu.sh
# ---------------------------------------------------------------------------------------------------------------


def test_multi_gpu_one_process_drives_all_gpus():
  assert _dry_run(MULTI_GPU, "--", "--config=configs/gpu.py", AWKWARD) == [
      ["cd", REPO], ["python3", "-m", "experiments.train", "--config=configs/gpu.py", AWKWARD]]
  assert _dry_run(MULTI_GPU, "--gpus=0,1", "--", "--workdir=w")[1] == [
      "env", "CUDA_VISIBLE_DEVICES=0,1", "python3", "-m", "experiments.train", "--workdir=w"]


def test_multi_gpu_several_processes_split_the_gpus():
  _, first, second = _dry_run(MULTI_GPU, "--processes=2", "--gpus=0,1,2,3", "--port=4000", "--log-dir=/logs",
                              "--", "--workdir=w")
  common = ["python3", "-m", "experiments.train", "--workdir=w", "--coordinator_address=127.0.0.1:4000",
            "--num_processes=2"]
  assert first == ["env", "CUDA_VISIBLE_DEVICES=0,1", *common, "--process_id=0", "&"]
  assert second == ["env", "CUDA_VISIBLE_DEVICES=2,3", *common, "--process_id=1", ">", "/logs/process_1.log",
                    "2>&1", "&"]


def test_multi_gpu_cpu_rehearsal():
  lines = _dry_run(MULTI_GPU, "--processes=2", "--cpu-devices=2", "--", "--workdir=w")
  for index, line in enumerate(lines[1:]):
    assert line[:3] == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2"]
    assert f"--process_id={index}" in line and "--num_processes=2" in line


@pytest.mark.parametrize("args, message", [
    (["--processes=3", "--gpus=0,1,2,3", "--", "--workdir=w"], "cannot be split evenly over 3 processes"),
    (["--processes=0", "--", "--workdir=w"], "expected a positive integer"),
    ([], "pass the training flags after --"),
    (["--gpus", "0", "--", "--workdir=w"], "unknown argument '--gpus'"),
])
def test_multi_gpu_refuses_bad_arguments(args, message):
  assert message in _run(MULTI_GPU, "--dry-run", *args, expect_rc=2).stderr


# A stand-in for the Python interpreter (--python=...), so that multi_gpu.sh's own process handling runs for real
# in a second: it records how it was started, then waits; SIGTERM makes it "save a checkpoint" and exit cleanly.
_STAND_IN = """#!{python}
import json, os, signal, sys, time
args = sys.argv[1:]
index = next(a.split("=")[1] for a in args if a.startswith("--process_id="))
out = os.environ["STAND_IN_DIR"]

def on_sigterm(*_):
  time.sleep(0.3)  # Writing the checkpoint.
  open(os.path.join(out, "terminated_" + index), "w").close()
  sys.exit(0)

signal.signal(signal.SIGTERM, on_sigterm)
with open(os.path.join(out, "tmp_" + index), "w") as f:
  json.dump({{"args": args, "XLA_FLAGS": os.environ.get("XLA_FLAGS"), "cwd": os.getcwd()}}, f)
os.rename(os.path.join(out, "tmp_" + index), os.path.join(out, "started_" + index))
if os.environ.get("STAND_IN_FAIL") == index:
  sys.exit(3)
time.sleep(60)
"""


def _start_stand_ins(tmp_path, extra_env=None):
  stand_in = tmp_path / "python"
  stand_in.write_text(_STAND_IN.format(python=sys.executable))
  stand_in.chmod(0o755)
  env = {**os.environ, "STAND_IN_DIR": str(tmp_path), **(extra_env or {})}
  return subprocess.Popen(
      ["bash", MULTI_GPU, f"--python={stand_in}", "--processes=2", "--cpu-devices=2", f"--log-dir={tmp_path}/logs",
       "--", "--workdir=w"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True)


def _wait_for(paths, timeout=20.0):
  deadline = time.monotonic() + timeout
  while not all(p.exists() for p in paths):
    assert time.monotonic() < deadline, f"never appeared: {[str(p) for p in paths if not p.exists()]}"
    time.sleep(0.05)


def test_multi_gpu_passes_sigterm_to_every_process_and_waits(tmp_path):
  script = _start_stand_ins(tmp_path)
  try:
    _wait_for([tmp_path / "started_0", tmp_path / "started_1"])
    script.send_signal(signal.SIGTERM)
    _, err = script.communicate(timeout=20)
  finally:
    script.kill()
  assert script.returncode == 0, err
  assert (tmp_path / "terminated_0").exists() and (tmp_path / "terminated_1").exists()
  for index in range(2):
    started = json.loads((tmp_path / f"started_{index}").read_text())
    assert started["args"] == ["-m", "experiments.train", "--workdir=w", "--coordinator_address=127.0.0.1:23456",
                               "--num_processes=2", f"--process_id={index}"]
    assert started["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2" and started["cwd"] == REPO
  assert (tmp_path / "logs" / "process_1.log").exists()


def test_multi_gpu_stops_the_others_when_one_process_fails(tmp_path):
  script = _start_stand_ins(tmp_path, {"STAND_IN_FAIL": "1"})
  try:
    _, err = script.communicate(timeout=30)
  finally:
    script.kill()
  assert script.returncode == 3 and "exited with status 3: stopping the others" in err
  assert (tmp_path / "terminated_0").exists()
