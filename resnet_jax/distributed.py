"""Where is this process running, and how does it join the others?

Training runs as one JAX process per host (or per node): the same command on every host, joined into one program
by `jax.distributed`. This module decides how that happens, in this order of precedence:

1. explicit flags `--coordinator_address --num_processes --process_id` (any launcher, or several processes on
   one machine);
2. a SLURM job step (`srun`): process count, rank and coordinator from the `SLURM_*` variables;
3. a Cloud TPU VM or pod slice: `jax.distributed.initialize()` with no arguments, so that JAX's own TPU cluster
   detection asks the TPU metadata for the workers;
4. otherwise a single process, and `jax.distributed` is not started.

`detect` is a function of the environment variables, the flags and the host's TPU chip count only, so every case is
testable without the hardware; `initialize` acts on its answer. Typical use in a script, before anything touches a
JAX device:

    launch = distributed.detect(os.environ, coordinator_address=FLAGS.coordinator_address,
                                num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    distributed.initialize(launch)
    distributed.log_topology(launch)
    distributed.validate_topology(config, jax.process_count(), jax.device_count())
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any

KINDS = ("explicit", "slurm", "tpu", "single")

# Variables that only exist on Cloud TPU hosts. GKE sets the worker list and id; Cloud TPU VMs created through
# queued resources or multislice set the MEGASCALE_* ones; CLOUD_TPU_TASK_ID comes from older TPU VM images.
# A plain TPU VM may set none of them, which is why `tpu_chip_count` also looks at the PCI bus.
TPU_ENV_VARS = (
    "TPU_WORKER_HOSTNAMES",
    "TPU_PROCESS_ADDRESSES",
    "TPU_WORKER_ID",
    "TPU_ACCELERATOR_TYPE",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "CLOUD_TPU_TASK_ID",
)

# Google's PCI vendor id. Google also makes the gVNIC network card of every GCE VM (GPU VMs included), so the
# vendor alone is not enough: a device counts as a TPU chip when its PCI class is "processing accelerator" (0x12)
# or its device id is one of the TPU generations' ids (v3, v4, v5p, v5e, v6e, 7x).
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICE_IDS = frozenset({"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"})
_PCI_CLASS_ACCELERATOR = "0x12"

# SLURM coordinator ports are derived from the job id so that every task computes the same one without talking
# to the others. The range sits below Linux's default ephemeral range (32768-60999), where outgoing connections
# take their local ports, so a busy node is unlikely to have it taken. JAX_COORDINATOR_PORT overrides it.
_SLURM_PORT_BASE = 20000


@dataclasses.dataclass(frozen=True)
class Launch:
  """How this process takes part in the run, as decided by `detect`.

  Attributes:
    kind: one of KINDS.
    coordinator_address: 'host:port' of process 0's coordinator service; None for 'single', and for 'tpu' (JAX
      asks the TPU metadata).
    num_processes: total number of processes; None for 'tpu' (known after `initialize`).
    process_id: this process's rank in [0, num_processes); None for 'tpu'.
    local_device_ids: accelerators this process drives (indices among the host's visible devices); None = all.
    source: the evidence, e.g. which variables were read, for the log line.
  """
  kind: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  source: str = ""

  @property
  def uses_jax_distributed(self) -> bool:
    """Whether `initialize` starts `jax.distributed` (everything but a plain single process)."""
    return self.kind != "single"


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------


def detect(env: Mapping[str, str], *, coordinator_address: str | None = None, num_processes: int | None = None,
           process_id: int | None = None, tpu_chips: int | None = None) -> Launch:
  """Decides how this process joins the run.

  Args:
    env: the environment variables (normally `os.environ`).
    coordinator_address, num_processes, process_id: the explicit multi-process flags; all three or none (None).
    tpu_chips: TPU chips attached to this host; any number > 0 means a Cloud TPU VM. None reads the PCI bus
      (`tpu_chip_count()`); pass a number to make `detect` a pure function of its arguments.

  Returns:
    A Launch. Precedence: explicit flags > SLURM job step > Cloud TPU > single process.

  Raises:
    ValueError: the flags are incomplete or inconsistent, or SLURM variables are malformed.
  """
  flags = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  if any(value is not None for value in flags.values()):
    return _from_flags(flags)
  # `srun` sets SLURM_STEP_NODELIST for the processes of a job step. A bare `sbatch` script or an interactive
  # `salloc` shell has SLURM_JOB_ID but no step: starting one process there is a single-process run, not a rank
  # waiting forever for peers that were never launched.
  if "SLURM_STEP_NODELIST" in env:
    launch = _from_slurm(env)
    if launch.num_processes and launch.num_processes > 1:
      return launch
    return Launch("single", source=f"SLURM job {env.get('SLURM_JOB_ID', '?')} step with 1 task")
  tpu_vars = [name for name in TPU_ENV_VARS if name in env]
  if tpu_chips is None:
    tpu_chips = tpu_chip_count()
  if tpu_vars or tpu_chips > 0:
    evidence = [f"{name}={env[name]}" for name in tpu_vars]
    if tpu_chips > 0:
      evidence.insert(0, f"{tpu_chips} TPU chip(s) on the PCI bus")
    return Launch("tpu", source=", ".join(evidence))
  if "SLURM_JOB_ID" in env:
    return Launch("single", source=f"SLURM job {env['SLURM_JOB_ID']} but no srun step: to use several nodes, start "
                  "one process per node with srun")
  return Launch("single", source="no coordinator flags, SLURM step or Cloud TPU found")


def _from_flags(flags: dict[str, Any]) -> Launch:
  given = [name for name, value in flags.items() if value is not None]
  missing = [name for name, value in flags.items() if value is None]
  if missing:
    raise ValueError(
        f"Multi-process flags are all-or-nothing: got --{', --'.join(given)} but not --{', --'.join(missing)}. "
        "Pass --coordinator_address=HOST:PORT --num_processes=N --process_id=I (the same address and N on every "
        "process, I = 0..N-1), or none of them to auto-detect SLURM / Cloud TPU.")
  address, num, pid = flags["coordinator_address"], flags["num_processes"], flags["process_id"]
  if num < 1:
    raise ValueError(f"--num_processes={num}: must be >= 1.")
  if not 0 <= pid < num:
    raise ValueError(f"--process_id={pid}: must be in 0..{num - 1} for --num_processes={num}.")
  _check_address(address)
  return Launch("explicit", address, num, pid, None,
                source="--coordinator_address/--num_processes/--process_id flags")


def _check_address(address: str) -> None:
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f"--coordinator_address={address!r}: expected HOST:PORT, e.g. 10.0.0.2:12345 or node001:12345 "
                     "(process 0's host and a free TCP port, the same on every process).")


def _from_slurm(env: Mapping[str, str]) -> Launch:
  num_processes = _env_int(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS")
  process_id = _env_int(env, "SLURM_PROCID")
  num_nodes = _env_int(env, "SLURM_STEP_NUM_NODES", "SLURM_JOB_NUM_NODES", "SLURM_NNODES", default=1)
  local_id = _env_int(env, "SLURM_LOCALID", default=0)
  if not 0 <= process_id < num_processes:
    raise ValueError(f"SLURM_PROCID={process_id} is outside 0..{num_processes - 1}: the SLURM variables disagree.")
  nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
  host = first_host(nodelist)
  port = env.get("JAX_COORDINATOR_PORT") or slurm_port(env.get("SLURM_JOB_ID", "0"), env.get("SLURM_STEP_ID", "0"))
  tasks_per_node = -(-num_processes // max(num_nodes, 1))
  # One task per node drives all the node's GPUs. With several tasks per node each takes one GPU, unless SLURM
  # has already bound one GPU to each task (then the only visible device is index 0 for every task).
  bound = len([d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]) == 1
  local_device_ids = (local_id,) if tasks_per_node > 1 and not bound else None
  source = (f"SLURM job {env.get('SLURM_JOB_ID', '?')} step {env.get('SLURM_STEP_ID', '?')}: "
            f"{num_processes} task(s) on {num_nodes} node(s), local task {local_id}")
  return Launch("slurm", f"{host}:{port}", num_processes, process_id, local_device_ids, source)


def _env_int(env: Mapping[str, str], *names: str, default: int | None = None) -> int:
  for name in names:
    if name in env:
      try:
        return int(env[name])
      except ValueError:
        raise ValueError(f"{name}={env[name]!r} is not an integer.") from None
  if default is not None:
    return default
  raise ValueError(f"SLURM step without {' or '.join(names)}: launch with srun inside an sbatch/salloc allocation.")


def first_host(nodelist: str) -> str:
  """The first host of a SLURM hostlist expression: 'gpu[003-004,007],cpu1' -> 'gpu003'.

  Each bracket contributes the first entry of its first range, so 'rack[2-3]-n[07-08]' -> 'rack2-n07'. Zero
  padding is kept as written.
  """
  out, i = [], 0
  while i < len(nodelist) and nodelist[i] != ",":
    if nodelist[i] == "[":
      end = nodelist.find("]", i)
      if end < 0:
        raise ValueError(f"Unbalanced '[' in SLURM node list {nodelist!r}.")
      out.append(nodelist[i + 1:end].split(",")[0].split("-")[0])
      i = end + 1
    else:
      out.append(nodelist[i])
      i += 1
  host = "".join(out).strip()
  if not host:
    raise ValueError(f"Empty SLURM node list {nodelist!r}: SLURM_STEP_NODELIST or SLURM_JOB_NODELIST must name "
                     "the nodes.")
  return host


def slurm_port(job_id: str, step_id: str = "0") -> int:
  """Coordinator port for a SLURM job step: 20000 + (last 3 digits of the job id) * 10 + (last digit of the step)."""
  return _SLURM_PORT_BASE + _digits(job_id) % 1000 * 10 + _digits(step_id) % 10


def _digits(text: str) -> int:
  # Some steps have names rather than numbers ('batch', 'extern'); they all map to 0.
  return int(text) if text.isdigit() else 0


# ---------------------------------------------------------------------------------------------------------------
# Looking at this host, and acting on the decision
# ---------------------------------------------------------------------------------------------------------------


def tpu_chip_count(pci_devices: str = "/sys/bus/pci/devices") -> int:
  """Number of TPU chips on this host's PCI bus (0 off Cloud TPU). Reads sysfs only: no network, no JAX."""
  count = 0
  for device in glob.glob(os.path.join(pci_devices, "*")):
    vendor, device_id, pci_class = (_read(os.path.join(device, name)) for name in ("vendor", "device", "class"))
    if vendor == _GOOGLE_PCI_VENDOR and (device_id in _TPU_PCI_DEVICE_IDS
                                         or pci_class.startswith(_PCI_CLASS_ACCELERATOR)):
      count += 1
  return count


def _read(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip().lower()
  except OSError:
    return ""


def initialize(launch: Launch, *, timeout_s: int = 300) -> None:
  """Starts `jax.distributed` as `launch` says; does nothing for a single process.

  Must run before anything initialises a JAX backend (jax.devices(), any computation). CPU processes exchange
  collectives through gloo, which is what makes a multi-process run possible on CPU-only machines.

  Args:
    launch: from `detect`.
    timeout_s: how long to wait for all processes to reach the coordinator.

  Raises:
    RuntimeError: a TPU host without libtpu, or a JAX backend already initialised.
  """
  if not launch.uses_jax_distributed:
    return
  import jax  # Deferred so that `detect` and friends stay importable and testable without starting JAX.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if launch.kind == "tpu":
    if importlib.util.find_spec("libtpu") is None and "TPU_LIBRARY_PATH" not in os.environ:
      raise RuntimeError(
          f"This looks like a Cloud TPU host ({launch.source}) but libtpu is not installed, so JAX would run on "
          "the CPU. Install JAX for TPU next to the requirements: pip install -r requirements.txt "
          f"'jax[tpu]=={jax.__version__}'.")
    # JAX's TPU cluster detection finds the workers, this worker's id and the coordinator from the TPU metadata.
    jax.distributed.initialize(initialization_timeout=timeout_s)
    return
  jax.distributed.initialize(
      coordinator_address=launch.coordinator_address,
      num_processes=launch.num_processes,
      process_id=launch.process_id,
      local_device_ids=list(launch.local_device_ids) if launch.local_device_ids is not None else None,
      # We decided everything above; JAX's own SLURM detection would otherwise pin each process to one GPU even
      # with one process per node.
      cluster_detection_method="deactivate",
      initialization_timeout=timeout_s,
  )


def describe(launch: Launch) -> str:
  """One line saying what was detected, for the log."""
  if launch.kind == "single":
    return f"Single process ({launch.source})."
  if launch.kind == "tpu":
    return (f"Cloud TPU ({launch.source}): workers, process id and coordinator come from JAX's TPU cluster "
            "detection.")
  devices = ("all local devices" if launch.local_device_ids is None
             else f"local devices {list(launch.local_device_ids)}")
  return (f"Multi-process run from {launch.source}: process {launch.process_id} of {launch.num_processes}, "
          f"coordinator {launch.coordinator_address}, {devices}.")


def log_topology(launch: Launch, logger: logging.Logger | None = None) -> None:
  """Logs what was detected and the devices JAX now sees (call after `initialize`)."""
  import jax
  logger = logger or logging.getLogger(__name__)
  logger.info("%s", describe(launch))
  local = jax.local_devices()
  logger.info("JAX process %d of %d: %d local device(s) of %d in total; platform %s, device kind %s.",
              jax.process_index(), jax.process_count(), len(local), jax.device_count(),
              local[0].platform, local[0].device_kind)


# ---------------------------------------------------------------------------------------------------------------
# Topology checks
# ---------------------------------------------------------------------------------------------------------------


def validate_topology(config: Any, process_count: int, device_count: int) -> None:
  """Refuses batch settings that cannot be split evenly over the devices and processes.

  Every device gets the same share of each global batch, and every process feeds its own devices, so the global
  train and eval batches must be multiples of the device count (hence of the process count, since every process
  has the same number of devices). With gradient accumulation, each device's share must split into
  `grad_accum_steps` equal micro-batches.

  Args:
    config: needs `batch_size` and optionally `eval_batch_size` and `grad_accum_steps` (None or absent = not
      checked).
    process_count: `jax.process_count()`.
    device_count: `jax.device_count()`.

  Raises:
    ValueError: naming the setting and what to change it to.
  """
  if process_count < 1 or device_count < 1:
    raise ValueError(f"process_count={process_count} and device_count={device_count} must both be >= 1.")
  if device_count % process_count:
    raise ValueError(
        f"{device_count} devices cannot be split evenly over {process_count} processes: every process must drive "
        "the same number of devices (check the GPUs per node / tasks per node, or CUDA_VISIBLE_DEVICES).")
  per_process = device_count // process_count
  where = f"{device_count} device(s)" + (f" ({process_count} processes x {per_process})" if process_count > 1 else "")
  for field in ("batch_size", "eval_batch_size"):
    batch = config.get(field) if isinstance(config, Mapping) else getattr(config, field, None)
    if batch is None:
      continue
    if batch < 1 or batch % device_count:
      lower = batch // device_count * device_count
      choices = ([lower] if lower > 0 else []) + [lower + device_count]
      raise ValueError(
          f"config.{field}={batch} is not a positive multiple of the {where}: every device needs the same share "
          f"of each global batch. Set --config.{field} to a multiple of {device_count} "
          f"(e.g. {' or '.join(map(str, choices))}), or run on a device count that divides {batch}.")
  accum = (config.get("grad_accum_steps") if isinstance(config, Mapping)
           else getattr(config, "grad_accum_steps", None)) or 1
  batch = config.get("batch_size") if isinstance(config, Mapping) else getattr(config, "batch_size", None)
  if batch and accum > 1 and (batch // device_count) % accum:
    raise ValueError(
        f"config.grad_accum_steps={accum} does not divide the {batch // device_count} images each of the {where} "
        f"gets per update (config.batch_size={batch}): set --config.batch_size to a multiple of "
        f"{device_count * accum}, or choose an accumulation that divides {batch // device_count}.")


def resolve_processes(process_index, process_count) -> tuple[int, int]:
  """(this process, number of processes): the given values, or JAX's where None."""
  import jax  # pylint: disable=g-import-not-at-top
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}.")
  return process_index, process_count


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """Each process's share of a global batch; raises unless the batch is a positive multiple of the processes."""
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f"The global batch size ({global_batch_size}) must be a positive multiple of the number of "
                     f"processes ({process_count}).")
  return global_batch_size // process_count
