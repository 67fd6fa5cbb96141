"""Compiling the trainer's own steps for an accelerator that is not here: TPU slices and NVIDIA GPUs, on a CPU.

JAX compiles ahead of time for a topology it only knows by description ("deviceless" compilation): libtpu describes
any Cloud TPU slice, and the CUDA plugin describes a GPU from a target description (`resnet_jax/gpu_targets/`). The
program compiled is the trainer's: `train.build` of the config, the per-device `train.train_step` and
`train.eval_step` mapped by the config's strategy over a mesh of the target's devices, fed batches of the shapes and
dtypes the input pipeline gives. XLA then says what each device needs (`memory_analysis`), how much work a step is
(`cost_analysis`, or the HLO cost analysis where the GPU path gives none) and which collectives the program holds.

Targets are named as Cloud names accelerator types: `tpu:v4-8` and `tpu:v5p-8` count TensorCores (4 chips of 2
cores; one JAX device per chip), `tpu:v5e-4` and `tpu:v6e-4` count chips; `tpu:2xv5p-8` is two slices joined over
the data-centre network. GPUs: `gpu:h100` (one), `gpu:h100x8` (one host of 8), `gpu:2xh100x8` (two hosts).

Needs the accelerator's JAX package beside the CPU one: `pip install "jax[tpu]==<jax version>"` (libtpu) for TPU
targets, `pip install "jax[cuda13]==<jax version>"` for GPU targets (run with JAX_PLATFORMS=cpu: no GPU is used).
Imports no TensorFlow: the dataset's shapes come from `data.info` where the data is prepared, else from
`NOMINAL_DATASETS`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import parallel, train
from resnet_jax.data.dataset_info import DatasetInfo
from resnet_jax.targets import CHIPS, Chip, GiB, Target, parse_target, target_devices, versions  # noqa: F401

# ----------------------------------------------------------------------------------------------------------------
# The programs
# ----------------------------------------------------------------------------------------------------------------
# Shapes of datasets that need not be prepared here: (classes, training examples, eval examples, image size).
NOMINAL_DATASETS = {"imagenet2012": (1000, 1_281_167, 50_000, 224), "imagenette": (10, 9_469, 3_925, 224),
                    "cifar10": (10, 50_000, 10_000, 32), "cifar100": (100, 50_000, 10_000, 32)}


def dataset_shapes(data_config) -> DatasetInfo:
  """The dataset's `DatasetInfo` without reading it: `NOMINAL_DATASETS` (image size and class count as the config
  sets them), or `data.info` for other datasets (which must then be prepared here).

  Raises:
    ValueError: a dataset outside `NOMINAL_DATASETS` that cannot be read here.
  """
  from resnet_jax import data  # pylint: disable=g-import-not-at-top
  name = data_config.name.split("/")[0].split(":")[0]
  if name in NOMINAL_DATASETS:
    classes, num_train, num_eval, size = NOMINAL_DATASETS[name]
    size = data_config.image_size or size
    return DatasetInfo(num_classes=data_config.num_classes or classes, num_train=num_train, num_eval=num_eval,
                       image_shape=(size, size, 3))
  try:
    return data.info(data_config)
  except Exception as error:  # pylint: disable=broad-except  (TFDS missing, dataset not prepared, ...)
    reason = " ".join(str(error).split())
    raise ValueError(f"The shapes of {data_config.name!r} are not known without its data ({reason}); compile with "
                     "--config.data.name=synthetic --config.data.image_size=... --config.data.num_classes=... "
                     "of the same shapes.") from None


def with_device_batch(config, per_device: int, devices: int):
  """`config` with `per_device` training images per device (and the same evaluation batch), over `devices`."""
  config = config.copy_and_resolve_references()
  config.batch_size = config.eval_batch_size = per_device * devices
  return config


@dataclasses.dataclass
class Programs:
  """The config's train and eval steps over a target's devices, and their abstract arguments."""
  train_fn: Any
  eval_fn: Any
  train_args: tuple
  eval_args: tuple
  per_device_batch: int
  per_device_eval_batch: int


def programs(config, devices, info: DatasetInfo) -> Programs:
  """The trainer's own mapped steps (`train.make_train_fn` / `make_eval_fn` of `train.build`) over `devices`, with
  shapes-only state and batches laid out as the trainer lays them out.

  Raises:
    ValueError: the config's batches do not split evenly over the devices.
  """
  n = len(devices)
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % n:
      raise ValueError(f"config.{field}={config[field]} does not split over {n} devices: set a multiple of {n}.")
  mesh = parallel.data_mesh(np.asarray(devices))
  strategy = parallel.strategy(config.parallelism, mesh)
  parts = train.build(config, info)
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  shapes = jax.eval_shape(
      lambda rng: parts.make_state(train.init_variables(parts.eval_model, rng, info.image_shape)), init_rng)
  if isinstance(strategy, parallel.ShardMap):
    state = train.abstract(shapes, strategy.replicated)
    lay_out = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=strategy.batch_sharding)
  else:  # pmap: a leading axis of devices on the state and on the batch; one host's devices only.
    if len({d.process_index for d in devices}) > 1:
      raise ValueError("config.parallelism='pmap' compiles for one host's devices only (pmap maps over a process's "
                       "local devices); use shard_map, the default, for multi-host targets.")
    strategy = parallel.Pmap(mesh, devices=tuple(devices))
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n, *x.shape), x.dtype), shapes)
    lay_out = lambda shape, dtype: jax.ShapeDtypeStruct((n, shape[0] // n, *shape[1:]), dtype)

  def batch(size, *, mask):
    spec = {"image": ((size, *info.image_shape), jnp.float32), "label": ((size,), jnp.int32)}
    if mask:
      spec["mask"] = ((size,), jnp.float32)
    return {k: lay_out(s, d) for k, (s, d) in spec.items()}

  return Programs(train.make_train_fn(config, parts, strategy, dropout_rng), train.make_eval_fn(parts.eval_model,
                  strategy), (state, batch(config.batch_size, mask=False)),
                  (state, batch(config.eval_batch_size, mask=True)), config.batch_size // n,
                  config.eval_batch_size // n)


# ----------------------------------------------------------------------------------------------------------------
# Compiling and reading the result
# ----------------------------------------------------------------------------------------------------------------
class DoesNotFit(Exception):
  """The compiler refused the program for lack of memory."""


_COLLECTIVE = re.compile(r"\b(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\(")
_MEMORY_FIELDS = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes",
                  "alias": "alias_size_in_bytes", "temp": "temp_size_in_bytes",
                  "code": "generated_code_size_in_bytes"}


def compile_program(fn, args, chip: Chip) -> dict:
  """Lowers and compiles `fn(*args)` for the devices of `args`' shardings; returns what XLA says of it.

  Raises:
    DoesNotFit: the compiler refused the program for lack of memory (TPU).
  """
  start = time.perf_counter()
  lowered = fn.lower(*args)
  lowered_s = time.perf_counter() - start
  try:
    compiled = lowered.compile()
  except Exception as error:  # pylint: disable=broad-except  (XlaRuntimeError; not importable by one stable name)
    if "RESOURCE_EXHAUSTED" in str(error) or "exceeds" in str(error).lower() and "hbm" in str(error).lower():
      raise DoesNotFit(_first_line(str(error))) from None
    raise
  out = {"lower_s": round(lowered_s, 2), "compile_s": round(time.perf_counter() - start - lowered_s, 2)}
  stats = compiled.memory_analysis()
  memory = {k: int(getattr(stats, v, 0) or 0) for k, v in _MEMORY_FIELDS.items()}
  # Donated (aliased) outputs share their arguments' buffers: counted once.
  memory["total"] = memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["code"]
  out["memory"] = memory
  out["fits"] = memory["total"] <= chip.usable_bytes
  out.update(_costs(compiled, lowered))
  hlo = compiled.as_text()
  out["collectives"] = _collectives(hlo)
  out["cudnn_calls"] = hlo.count('custom_call_target="__cudnn$conv')
  return out


def _first_line(text: str) -> str:
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  return next((line for line in lines if "exceed" in line.lower() or "RESOURCE_EXHAUSTED" in line), lines[0])[:400]


def _collectives(hlo: str) -> dict[str, int]:
  counts: dict[str, int] = {}
  for kind in _COLLECTIVE.findall(hlo):
    counts[kind] = counts.get(kind, 0) + 1
  return dict(sorted(counts.items()))


def _costs(compiled, lowered) -> dict:
  """FLOPs and bytes accessed per device and step: the compiled program's cost analysis where the backend gives one
  (TPU). The GPU path gives none, and XLA's cost analysis of the optimised GPU module counts its cuDNN convolution
  calls as zero FLOPs; there the FLOPs are the HLO cost analysis of the program before optimisation (convolutions
  as written), and bytes accessed that of the optimised module (its real fusions)."""
  analysis = _as_dict(_safe(compiled.cost_analysis))
  if analysis.get("flops"):
    return {"flops": float(analysis["flops"]), "bytes_accessed": float(analysis.get("bytes accessed", 0.0)),
            "cost_source": "compiled"}
  before = _hlo_cost(_safe(lambda: lowered.compiler_ir("hlo").get_hlo_module()))
  after = {}
  modules = _safe(lambda: compiled.runtime_executable().hlo_modules())
  if modules:
    after = _hlo_cost(modules[0])
  return {"flops": before.get("flops"), "bytes_accessed": after.get("bytes accessed", before.get("bytes accessed")),
          "flops_optimised_module": after.get("flops"), "cost_source": "hlo"}


def _hlo_cost(module) -> dict:
  if module is None:
    return {}
  from jax._src.lib import xla_client  # pylint: disable=g-import-not-at-top
  cpu = jax.devices("cpu")[0].client
  return _as_dict(_safe(lambda: xla_client._xla.hlo_module_cost_analysis(cpu, module)))  # pylint: disable=protected-access


def _safe(fn):
  try:
    return fn()
  except Exception:  # pylint: disable=broad-except
    return None


def _as_dict(analysis) -> dict:
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return dict(analysis) if analysis else {}


def _count_accumulation(result: dict, accum_steps: int) -> None:
  """Scales a train step's FLOPs and bytes to its `accum_steps` micro-batches. The step runs the first micro-batch,
  then the others in a loop (`train.train_step`), and XLA's cost analysis counts a loop's body once: it saw two
  micro-batches' worth. Scaled by accum_steps / 2 (the optimizer update, outside the loop and small, is then
  overcounted), and marked so."""
  if accum_steps > 1 and result.get("flops"):
    for key in ("flops", "bytes_accessed"):
      result[key] = result[key] * accum_steps / 2
    result["cost_scaled"] = f"x{accum_steps}/2 for {accum_steps} micro-batches (XLA counts the loop body once)"


def roofline(result: dict, chip: Chip, per_device_batch: int) -> dict:
  """A lower bound on the step time from the chip's peak bf16 FLOP/s and memory bandwidth (whichever is slower),
  and the images/s per chip it implies."""
  flops, moved = result.get("flops") or 0.0, result.get("bytes_accessed") or 0.0
  compute_s, memory_s = flops / chip.peak_bf16, moved / chip.bandwidth
  bound_s = max(compute_s, memory_s)
  return {"compute_s": compute_s, "memory_s": memory_s, "bound": "memory" if memory_s > compute_s else "compute",
          "step_s": bound_s, "images_per_s_per_chip": per_device_batch / bound_s if bound_s else None}


def compile_config(config, target: Target, devices, info: DatasetInfo, *, eval_step: bool = True) -> dict:
  """The config's train (and eval) step compiled for `target`: memory, fit, costs, collectives, roofline."""
  progs = programs(config, devices, info)
  out = {"target": target.name, "chip": target.chip.name, "devices": len(devices),
         "hosts": len({d.process_index for d in devices}), "per_device_batch": progs.per_device_batch,
         "usable_bytes": target.chip.usable_bytes, "usable_rule": target.chip.usable_rule}
  try:
    out["train"] = compile_program(progs.train_fn, progs.train_args, target.chip)
    _count_accumulation(out["train"], config.get("grad_accum_steps") or 1)
    out["train"]["roofline"] = roofline(out["train"], target.chip, progs.per_device_batch)
  except DoesNotFit as refusal:
    out["train"] = {"fits": False, "refused": str(refusal)}
  if eval_step:
    try:
      out["eval"] = compile_program(progs.eval_fn, progs.eval_args, target.chip)
    except DoesNotFit as refusal:
      out["eval"] = {"fits": False, "refused": str(refusal)}
  return out


# ----------------------------------------------------------------------------------------------------------------
# The largest batch
# ----------------------------------------------------------------------------------------------------------------
def train_fit(config, target: Target, devices, info: DatasetInfo, per_device: int) -> dict:
  """The train step alone at `per_device` images per device: {'fits', 'total' bytes (when compiled), ...}."""
  progs = programs(with_device_batch(config, per_device, len(devices)), devices, info)
  try:
    result = compile_program(progs.train_fn, progs.train_args, target.chip)
  except DoesNotFit as refusal:
    return {"per_device_batch": per_device, "fits": False, "refused": str(refusal)}
  return {"per_device_batch": per_device, "fits": result["fits"], "total": result["memory"]["total"],
          "temp": result["memory"]["temp"], "flops": result["flops"]}


def find_max_batch(config, target: Target, devices, info: DatasetInfo, *, multiple: int = 8,
                   probes: tuple[int, int] = (64, 128), max_compiles: int = 16, log=print) -> dict:
  """The largest per-device training batch (a multiple of `multiple`) whose train step fits, in few compiles.

  On a GPU memory is close to linear in the batch (parameters, optimizer state and code are fixed; activations grow
  with it), so two compiles give a line, a compile at its prediction checks it, and one a `multiple` above must not
  fit: four or five compiles. XLA's TPU compiler rematerialises activations as a program nears the HBM, which
  flattens the line; there the guesses grow at most 4x at a time until one does not fit (refusals take seconds),
  then bisect. The answer is a verified pair where `verified`: `max_per_device_batch` fits and
  `first_not_fitting` (= it + `multiple`) does not.
  """
  usable = target.chip.usable_bytes
  seen: dict[int, dict] = {}
  low, high = 0, None  # Largest batch known to fit; smallest known not to.

  def probe(batch):
    nonlocal low, high
    start = time.perf_counter()
    seen[batch] = r = train_fit(config, target, devices, info, batch)
    if r["fits"]:
      low = max(low, batch)
    else:
      high = batch if high is None else min(high, batch)
    size = f"{r['total'] / GiB:.2f} GiB, " if "total" in r else "refused by the compiler, "
    verdict = "fits" if r["fits"] else "does not fit"
    log(f"  {target.name}: {batch} images/device: {size}{verdict} ({time.perf_counter() - start:.0f} s)")

  for batch in probes:
    probe(batch)
  predicted, line_guesses_inside = None, 0
  while (high is None or high - low > multiple) and len(seen) < max_compiles:
    points = sorted((b, r["total"]) for b, r in seen.items() if "total" in r)
    if len(points) < 2:
      raise RuntimeError(f"{target.name}: fewer than two of the batches tried compiled ({sorted(seen)}); give "
                         "smaller probes.")
    (b0, m0), (b1, m1) = points[-2:]
    slope = (m1 - m0) / (b1 - b0)
    line = b1 + (usable - m1) / slope if slope > 0 else math.inf
    predicted = predicted or line
    if high is None:  # Not bracketed yet: the line, at most 4x the largest batch that fits (XLA's TPU compiler
      guess = min(line, 4 * max(low, b1))  # rematerialises near the limit, which flattens the line).
    elif line_guesses_inside == 0 and low < line < high:
      guess, line_guesses_inside = line, 1
    else:
      guess = (low + high) / 2  # Bisection once the line has had its chance.
    guess = max(int(guess // multiple * multiple), low + multiple)
    if high is not None:
      guess = min(guess, high - multiple)
    probe(guess)
  fitted = sorted((b, r["total"]) for b, r in seen.items() if "total" in r)
  slope = (fitted[-1][1] - fitted[0][1]) / (fitted[-1][0] - fitted[0][0])
  return {"max_per_device_batch": low or None, "first_not_fitting": high,
          "verified": high is not None and high - low == multiple,
          "predicted": int(predicted // multiple * multiple) if predicted and predicted < math.inf else None,
          "bytes_per_image": slope, "fixed_bytes": fitted[0][1] - slope * fitted[0][0],
          "compiles": {str(k): v for k, v in sorted(seen.items())}}


# ----------------------------------------------------------------------------------------------------------------
# Results: the printed lines, the JSON-lines file
# ----------------------------------------------------------------------------------------------------------------
def program_key(config) -> str:
  """What identifies the compiled programs apart from the batch: the config without its batch sizes (configs that
  differ only in name share a key)."""
  values = config.to_dict()
  for field in ("batch_size", "eval_batch_size"):
    values.pop(field, None)
  return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_result(path, key):
  """The first record of the JSON-lines file `path` that matches `key` on its fields, or None."""
  if not path or not os.path.exists(path):
    return None
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      if all(record.get(k) == v for k, v in key.items()):
        return record
  return None


def append_result(path, record):
  """Appends `record` to the JSON-lines file `path` (flushed and synced: a kill loses no finished result)."""
  if not path:
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "a") as f:
    f.write(json.dumps(record, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def gib(n):
  """'1.23 GiB'."""
  return f"{n / GiB:.2f} GiB"


def describe(result: dict) -> list[str]:
  """The printed lines of one target's result."""
  lines = [f"{result['target']}: {result['devices']} x {result['chip']} on {result['hosts']} host(s), "
           f"{result['per_device_batch']} images per device"]
  for step in ("train", "eval"):
    r = result.get(step)
    if r is None:
      continue
    if "refused" in r:
      lines.append(f"  {step} step: does not fit: the compiler refused it: {r['refused']}")
      continue
    m = r["memory"]
    lines.append(f"  {step} step: compiled in {r['compile_s']:.0f} s")
    lines.append(f"    memory per device: arguments {gib(m['argument'])}, outputs {gib(m['output'])} "
                 f"({gib(m['alias'])} of them donated arguments), temporaries {gib(m['temp'])}, code "
                 f"{gib(m['code'])}: {gib(m['total'])}")
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"    {verdict}: {gib(m['total'])} of {gib(result['usable_bytes'])} usable "
                 f"({result['usable_rule']})")
    if r.get("flops"):
      source = ("XLA's cost analysis of the compiled program" if r["cost_source"] == "compiled" else
                "XLA's HLO cost analysis: FLOPs before optimisation, bytes of the optimised program")
      if r.get("cost_scaled"):
        source += f"; scaled {r['cost_scaled']}"
      lines.append(f"    per device and step: {r['flops'] / 1e12:.3f} TFLOP, {r['bytes_accessed'] / 1e9:.1f} GB "
                   f"accessed ({source})")
    collectives = ", ".join(f"{n} {kind}" for kind, n in r["collectives"].items()) or "none"
    lines.append(f"    collectives: {collectives}" + (f"; {r['cudnn_calls']} cuDNN convolution calls"
                                                       if r.get("cudnn_calls") else ""))
    roof = r.get("roofline")
    if roof and roof.get("images_per_s_per_chip"):
      lines.append(f"    roofline: at least {roof['step_s'] * 1e3:.1f} ms per step (compute "
                   f"{roof['compute_s'] * 1e3:.1f} ms, memory {roof['memory_s'] * 1e3:.1f} ms: {roof['bound']}-bound),"
                   f" at most {roof['images_per_s_per_chip']:,.0f} images/s per chip")
  return lines
