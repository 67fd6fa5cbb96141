"""Environment detection, jax.distributed start-up and topology checks (resnet_jax/distributed.py).

`detect` is exercised with the variables SLURM and Cloud TPU set, and with explicit flags; `initialize` is
exercised for real: two JAX processes on localhost (CPU collectives through gloo, 2 simulated devices each) join,
from explicit flags and from SLURM-like variables, and all-reduce over the 4 global devices.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import ml_collections
import pytest

from configs import gpu as gpu_config
from configs import tpu as tpu_config
from resnet_jax import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What `srun --nodes=2 --ntasks-per-node=1` gives task 1 of job 4242 (the variables detect reads).
SLURM_STEP = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_NODELIST": "gpu[003-004]",
    "SLURM_STEP_NODELIST": "gpu[003-004]",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_NTASKS": "2",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
}


# ---------------------------------------------------------------------------------------------------------------
# detect: precedence and each environment
# ---------------------------------------------------------------------------------------------------------------


def test_nothing_detected_is_a_single_process():
  launch = distributed.detect({}, tpu_chips=0)
  assert launch.kind == "single" and not launch.uses_jax_distributed
  assert (launch.coordinator_address, launch.num_processes, launch.process_id) == (None, None, None)


def test_explicit_flags():
  launch = distributed.detect({}, coordinator_address="10.0.0.2:1234", num_processes=4, process_id=3, tpu_chips=0)
  assert launch == distributed.Launch("explicit", "10.0.0.2:1234", 4, 3, None, launch.source)
  assert launch.uses_jax_distributed


def test_explicit_flags_win_over_slurm_and_tpu():
  env = {**SLURM_STEP, "TPU_WORKER_HOSTNAMES": "t0,t1"}
  launch = distributed.detect(env, coordinator_address="h:1", num_processes=2, process_id=0, tpu_chips=4)
  assert (launch.kind, launch.coordinator_address, launch.process_id) == ("explicit", "h:1", 0)


@pytest.mark.parametrize("flags, message", [
    (dict(coordinator_address="h:1"), "not --num_processes, --process_id"),
    (dict(num_processes=2, process_id=0), "not --coordinator_address"),
    (dict(coordinator_address="h:1", num_processes=2, process_id=2), "must be in 0..1"),
    (dict(coordinator_address="h:1", num_processes=0, process_id=0), "must be >= 1"),
    (dict(coordinator_address="h", num_processes=2, process_id=0), "expected HOST:PORT"),
    (dict(coordinator_address="h:port", num_processes=2, process_id=0), "expected HOST:PORT"),
])
def test_bad_flags_are_refused_with_what_to_pass(flags, message):
  with pytest.raises(ValueError, match=message):
    distributed.detect({}, tpu_chips=0, **flags)


def test_slurm_one_task_per_node_drives_all_local_gpus():
  launch = distributed.detect(SLURM_STEP, tpu_chips=0)
  assert launch.kind == "slurm"
  assert launch.coordinator_address == f"gpu003:{distributed.slurm_port('4242', '0')}"
  assert (launch.num_processes, launch.process_id, launch.local_device_ids) == (2, 1, None)
  assert "SLURM job 4242" in launch.source


def test_slurm_several_tasks_per_node_take_one_gpu_each():
  env = {**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "16", "SLURM_NTASKS": "16", "SLURM_PROCID": "13",
         "SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
  launch = distributed.detect(env, tpu_chips=0)
  assert (launch.num_processes, launch.process_id, launch.local_device_ids) == (16, 13, (5,))
  # When SLURM has already bound one GPU to each task (--gpus-per-task=1), that GPU is the task's only device.
  bound = distributed.detect({**env, "CUDA_VISIBLE_DEVICES": "5"}, tpu_chips=0)
  assert bound.local_device_ids is None


def test_slurm_port_override_and_step_count_precedence():
  env = {**SLURM_STEP, "JAX_COORDINATOR_PORT": "31337", "SLURM_NTASKS": "8"}
  launch = distributed.detect(env, tpu_chips=0)
  assert launch.coordinator_address == "gpu003:31337"
  assert launch.num_processes == 2  # The step's task count, not the allocation's.


def test_slurm_allocation_without_srun_step_is_a_single_process():
  # Inside `sbatch` or `salloc` before srun: starting rank 0 of 2 would wait forever for a rank 1 never launched.
  env = {k: v for k, v in SLURM_STEP.items() if not k.startswith("SLURM_STEP")}
  launch = distributed.detect(env, tpu_chips=0)
  assert launch.kind == "single" and "srun" in launch.source


def test_slurm_step_with_one_task_is_a_single_process():
  env = {**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}
  assert distributed.detect(env, tpu_chips=0).kind == "single"


@pytest.mark.parametrize("override, message", [
    ({"SLURM_PROCID": "two"}, "SLURM_PROCID='two' is not an integer"),
    ({"SLURM_PROCID": "2"}, "outside 0..1"),
    ({"SLURM_STEP_NODELIST": "", "SLURM_JOB_NODELIST": ""}, "Empty SLURM node list"),
])
def test_malformed_slurm_variables_are_refused(override, message):
  with pytest.raises(ValueError, match=message):
    distributed.detect({**SLURM_STEP, **override}, tpu_chips=0)


@pytest.mark.parametrize("nodelist, first", [
    ("node001", "node001"),
    ("node001,node002", "node001"),
    ("gpu[003-004,007],cpu1", "gpu003"),
    ("gpu[07,003-004]", "gpu07"),
    ("rack[2-3]-n[07-08]", "rack2-n07"),
    ("a-b.example.com", "a-b.example.com"),
])
def test_first_host_of_slurm_node_lists(nodelist, first):
  assert distributed.first_host(nodelist) == first


def test_slurm_port_is_deterministic_and_below_the_ephemeral_range():
  ports = {distributed.slurm_port(str(job), str(step)) for job in range(1000) for step in range(10)}
  assert len(ports) == 10_000 and min(ports) == 20000 and max(ports) == 29999
  assert distributed.slurm_port("123456", "batch") == distributed.slurm_port("123456", "0") == 20000 + 456 * 10


@pytest.mark.parametrize("env", [
    {"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1", "TPU_WORKER_ID": "1"},  # GKE
    {"TPU_ACCELERATOR_TYPE": "v4-32"},
    {"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.2"},
    {"CLOUD_TPU_TASK_ID": "0"},
])
def test_cloud_tpu_from_its_variables(env):
  launch = distributed.detect(env, tpu_chips=0)
  assert launch.kind == "tpu" and launch.uses_jax_distributed
  # JAX's own TPU cluster detection decides these at initialize().
  assert (launch.coordinator_address, launch.num_processes, launch.process_id) == (None, None, None)
  assert next(iter(env)) in launch.source


def test_cloud_tpu_from_chips_alone_and_slurm_first():
  launch = distributed.detect({}, tpu_chips=4)
  assert launch.kind == "tpu" and "4 TPU chip(s)" in launch.source
  assert distributed.detect(SLURM_STEP, tpu_chips=4).kind == "slurm"


def _pci_device(root, name, vendor, device, pci_class):
  path = root / name
  path.mkdir()
  for field, value in (("vendor", vendor), ("device", device), ("class", pci_class)):
    (path / field).write_text(value + "\n")


def test_tpu_chip_count_reads_the_pci_bus(tmp_path):
  _pci_device(tmp_path, "0000:00:04.0", "0x1ae0", "0x0042", "0x020000")  # Google gVNIC: a network card.
  _pci_device(tmp_path, "0000:00:05.0", "0x10de", "0x2330", "0x030200")  # An NVIDIA GPU.
  assert distributed.tpu_chip_count(str(tmp_path)) == 0
  for i in range(4):
    _pci_device(tmp_path, f"0000:00:0{6 + i}.0", "0x1ae0", "0x005e", "0x120000")  # TPU v4 chips.
  _pci_device(tmp_path, "0000:00:0a.0", "0x1ae0", "0x9999", "0x120000")  # A newer accelerator, by class.
  assert distributed.tpu_chip_count(str(tmp_path)) == 5
  assert distributed.tpu_chip_count(str(tmp_path / "absent")) == 0


def test_describe_says_what_was_detected():
  slurm = distributed.describe(distributed.detect(SLURM_STEP, tpu_chips=0))
  assert "process 1 of 2" in slurm and "gpu003:" in slurm and "all local devices" in slurm
  assert "Cloud TPU" in distributed.describe(distributed.detect({}, tpu_chips=8))
  assert distributed.describe(distributed.detect({}, tpu_chips=0)).startswith("Single process")


def test_tensorflow_cpu_is_neither_imported_nor_touched():
  # With tensorflow-cpu (requirements.txt) there is nothing to hide, and importing TF would cost seconds.
  code = ("import sys; from resnet_jax import startup; startup.hide_accelerators_from_tensorflow(); "
          "print('tensorflow' in sys.modules, 'jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
  assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------------------------
# validate_topology
# ---------------------------------------------------------------------------------------------------------------


def _config(batch_size, eval_batch_size=None):
  return ml_collections.ConfigDict({"batch_size": batch_size, "eval_batch_size": eval_batch_size})


@pytest.mark.parametrize("devices", [1, 4, 8])
def test_batch_must_be_a_multiple_of_the_device_count(devices):
  distributed.validate_topology(_config(devices, 2 * devices), 1, devices)
  for bad in (devices - 1, devices + 1):
    if bad > 0 and bad % devices:
      with pytest.raises(ValueError, match=rf"config.batch_size={bad} .* multiple of {devices}"):
        distributed.validate_topology(_config(bad), 1, devices)


def test_error_names_the_processes_and_nearby_valid_batches():
  with pytest.raises(ValueError) as error:
    distributed.validate_topology(_config(1000), 4, 16)
  message = str(error.value)
  assert "16 device(s) (4 processes x 4)" in message and "--config.batch_size" in message
  assert "992 or 1008" in message
  with pytest.raises(ValueError, match=r"e\.g\. 8\)"):
    distributed.validate_topology(_config(3), 2, 8)


def test_eval_batch_is_checked_too_and_none_is_skipped():
  distributed.validate_topology(_config(16, None), 2, 8)
  with pytest.raises(ValueError, match=r"config.eval_batch_size=100 .* 96 or 104"):
    distributed.validate_topology(_config(16, 100), 2, 8)
  distributed.validate_topology({"batch_size": 16}, 1, 8)  # A plain mapping without eval_batch_size.


def test_devices_must_split_evenly_over_processes():
  with pytest.raises(ValueError, match="cannot be split evenly over 4 processes"):
    distributed.validate_topology(_config(96), 4, 6)
  with pytest.raises(ValueError, match="must both be >= 1"):
    distributed.validate_topology(_config(8), 0, 8)


@pytest.mark.parametrize("get_config", [gpu_config.get_config, tpu_config.get_config])
@pytest.mark.parametrize("processes, devices", [(1, 1), (1, 4), (1, 8), (2, 16), (4, 32), (32, 128)])
def test_hardware_configs_fit_common_topologies(get_config, processes, devices):
  config = get_config()
  assert config.dtype == "bfloat16"
  distributed.validate_topology(config, processes, devices)


# ---------------------------------------------------------------------------------------------------------------
# A real 2-process run on localhost
# ---------------------------------------------------------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import json, logging, os, sys
    from resnet_jax import distributed

    flags = json.loads(sys.argv[1])
    launch = distributed.detect(os.environ, tpu_chips=0, **flags)
    distributed.initialize(launch, timeout_s=60)

    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    distributed.log_topology(launch)
    distributed.validate_topology({"batch_size": 8, "eval_batch_size": 4}, jax.process_count(), jax.device_count())

    # Device i of the global mesh holds i + 1; both all-reduces must see all four devices, across the processes.
    mesh = jax.make_mesh((jax.device_count(),), ("devices",))
    values = np.arange(1, jax.device_count() + 1, dtype=np.float32)
    x = jax.make_array_from_callback(values.shape, NamedSharding(mesh, P("devices")), lambda index: values[index])
    psum = jax.jit(jax.shard_map(lambda a: jax.lax.psum(a, "devices"), mesh=mesh, in_specs=P("devices"),
                                 out_specs=P()))(x)
    total = jax.jit(lambda a: a.sum())(x)
    print(json.dumps({
        "kind": launch.kind, "process_index": jax.process_index(), "process_count": jax.process_count(),
        "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
        "psum": np.asarray(psum.addressable_data(0)).tolist(), "sum": float(total.addressable_data(0)),
    }))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_two_processes(per_process_env, per_process_flags):
  procs = []
  for index in range(2):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           **per_process_env[index]}
    procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, json.dumps(per_process_flags[index])],
                                  cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  results = []
  try:
    for proc in procs:
      out, err = proc.communicate(timeout=120)
      assert proc.returncode == 0, err[-3000:]
      # gloo prints its own lines on stdout; ours is the JSON one.
      results.append((json.loads([line for line in out.splitlines() if line.startswith("{")][-1]), err))
  finally:
    for proc in procs:
      proc.kill()
  return results


def _check_joined(results, kind):
  for index, (result, log) in enumerate(results):
    assert result == {"kind": kind, "process_index": index, "process_count": 2, "device_count": 4,
                      "local_device_count": 2, "psum": [10.0], "sum": 10.0}
    assert f"JAX process {index} of 2: 2 local device(s) of 4 in total; platform cpu" in log
    assert f"process {index} of 2" in log  # describe(): what was detected.


def test_two_processes_join_from_explicit_flags():
  address = f"127.0.0.1:{_free_port()}"
  flags = [dict(coordinator_address=address, num_processes=2, process_id=i) for i in range(2)]
  _check_joined(_run_two_processes([{}, {}], flags), "explicit")


def test_two_processes_join_from_slurm_variables():
  # Two one-task "nodes" that are both this machine: the same variables srun sets, with the port pinned free.
  step = {**SLURM_STEP, "SLURM_STEP_NODELIST": "localhost", "SLURM_JOB_NODELIST": "localhost",
          "JAX_COORDINATOR_PORT": str(_free_port())}
  envs = [{**step, "SLURM_PROCID": str(i)} for i in range(2)]
  _check_joined(_run_two_processes(envs, [{}, {}]), "slurm")
