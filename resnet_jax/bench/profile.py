"""Where the CPU train step's time goes: XLA's own profile of the compiled step, broken down by kind of work.

The benchmark's step (`workload.build_step`: the trainer's train_step under shard_map, on a synthetic batch) is
compiled, run a few times, then traced with the JAX profiler. Every op the XLA:CPU runtime executed appears in the
trace under the name of its HLO instruction; the compiled module's text says what each instruction is:

- convolutions, split into the forward pass, the gradient with respect to the input and the gradient with respect
  to the weights (backward convolutions carry `transpose(jvp(...))` in their metadata; a weight gradient's result
  has the kernel's shape), and by stage (the channel count of the activations);
- fusions and other ops, by what they contain: reductions (BatchNorm statistics and its backward, the loss),
  copies and transposes only, elementwise arithmetic (activations, additions, BatchNorm's scale and shift, the
  optimizer), dots (the classifier), collectives;
- the time between ops: the step's wall time not covered by any op.

XLA:CPU's trace records when a convolution is launched, not how long it runs (its work runs in Eigen's thread pool,
which emits no trace events), so the convolutions' time lands in "between ops". `conv_timings` measures it apart:
every distinct convolution of the step's jaxpr (forward, gradient with respect to the input, with respect to the
weights) is compiled and timed alone on random inputs of its shapes, times the number of its occurrences.

`experiments/profile.py` is its command line; `torch_profile` reads the same breakdown from the PyTorch peer
(torch.profiler) where PyTorch is installed.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

from resnet_jax import files
from resnet_jax.bench import workload as workload_lib

# name = shape op(...); a multi-output fusion's shape is a tuple, "(f32[...]{...}, f32[...]{...})".
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\([^)]*\)|\S+?)(?:\{[^}]*\})? ([\w\-]+)\(")
_SHAPE = re.compile(r"[a-z0-9]+\[([0-9,]*)\]")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


def _dims(shape_text: str) -> tuple[int, ...]:
  match = _SHAPE.match(shape_text)
  return tuple(int(d) for d in match.group(1).split(",") if d) if match else ()


def _computations(hlo: str) -> dict[str, list[str]]:
  """{computation name: its instruction lines} of an HLO module's text; the entry computation is 'ENTRY'."""
  out, name, body = {}, None, []
  for line in hlo.splitlines():
    header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if header and not line.startswith(" "):
      name, body = ("ENTRY" if header.group(1) else header.group(2)), []
    elif line.startswith("}") and name is not None:
      out[name] = body
      name = None
    elif name is not None:
      body.append(line)
  return out


def _conv_kind(line: str, shape: tuple[int, ...]) -> str:
  # A weight gradient slides a window as large as the activations over them, so its window is larger than its
  # (kernel-sized) result; a gradient with respect to the input carries transpose(jvp(...)) in its metadata; the
  # rest is the forward pass.
  window = re.search(r"window=\{size=([0-9x]+)", line)
  if window and len(shape) == 4 and [int(d) for d in window.group(1).split("x")] > list(shape[1:3]):
    return "convolution grad weights"
  match = _OP_NAME.search(line)
  if "transpose(" in (match.group(1) if match else ""):
    return "convolution grad input"
  return "convolution forward"


def _conv_channels(shape: tuple[int, ...]) -> int:
  """The output channels: the stage's width for every convolution but the weight gradients' (their last dimension
  is the kernel's output channels, the same thing)."""
  return shape[-1] if shape else 0


def classify(hlo: str, contents_out: dict[str, tuple[str, list[str]]] | None = None) -> dict[str, tuple[str, int]]:
  """{instruction name: (kind of work, channels or 0)} for every instruction of the entry computation.

  With `contents_out`, it also receives {name: (result shape, sorted ops inside)} of every non-convolution.
  """
  computations = _computations(hlo)
  kinds: dict[str, tuple[str, int]] = {}

  def contents(name: str, seen=()) -> set[str]:
    ops = set()
    for line in computations.get(name, []):
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      ops.add(match.group(3))
      for called in _CALLS.findall(line):
        if called not in seen:
          ops |= contents(called, seen + (name,))
    return ops

  def conv_inside(name: str) -> str | None:
    for line in computations.get(name, []):
      match = _INSTRUCTION.match(line)
      if match and match.group(3) == "convolution":
        return line
    return None

  for line in computations.get("ENTRY", []):
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape_text, op = match.groups()
    shape = _dims(shape_text)
    conv_line = line if op == "convolution" else None
    called = _CALLS.findall(line)
    if conv_line is None and called:
      conv_line = conv_inside(called[0])
      if conv_line is not None:
        inner = _INSTRUCTION.match(conv_line)
        shape = _dims(inner.group(2)) if inner else shape
    if conv_line is not None:
      kind = _conv_kind(conv_line, shape)
      kinds[name] = (kind, _conv_channels(shape))
      continue
    ops = {op} | (set().union(*(contents(c) for c in called)) if called else set())
    # A fusion nested in a fusion is a call, not work: what it calls is already in `ops`.
    ops -= {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "fusion"}
    if contents_out is not None:
      contents_out[name] = (shape_text, sorted(ops))
    if not ops:
      kinds[name] = ("bookkeeping", 0)
    elif ops & {"all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all"}:
      kinds[name] = ("collectives", 0)
    elif ops & {"dot", "custom-call"} and "dot" in ops:
      kinds[name] = ("dot (classifier)", 0)
    elif ops & {"reduce", "reduce-window", "select-and-scatter"}:
      kinds[name] = ("reductions (BatchNorm, pooling, loss)", 0)
    elif ops <= {"copy", "transpose", "reshape", "slice", "concatenate", "pad", "broadcast", "dynamic-slice",
                 "dynamic-update-slice", "copy-start", "copy-done"}:
      kinds[name] = ("copies and transposes", 0)
    else:
      kinds[name] = ("elementwise", 0)
  return kinds


def _xplane(path: str):
  from tensorflow.tsl.profiler.protobuf import xplane_pb2  # TensorFlow ships the profile's protocol buffers.
  space = xplane_pb2.XSpace()
  with open(path, "rb") as f:
    space.ParseFromString(f.read())
  return space


def _op_events(trace_dir: str, names: set[str]) -> list[tuple[str, int, int]]:
  """(instruction name, start ps, duration ps) of every executed op of the compiled step in the trace."""
  (path,) = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  events = []
  for plane in _xplane(path).planes:
    metadata = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      for event in line.events:
        name = metadata.get(event.metadata_id, "")
        if name in names:
          events.append((name, line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps))
  return events


def _covered(intervals: list[tuple[int, int]]) -> int:
  total, end = 0, None
  for start, stop in sorted(intervals):
    if end is None or start > end:
      total += stop - start
      end = stop
    elif stop > end:
      total += stop - end
      end = stop
  return total


def profile(workload: workload_lib.Workload, *, steps: int = 5, warmup: int = 2, top_ops: int = 10
            ) -> dict[str, Any]:
  """The breakdown of one train step of `workload`: {'rows': [{kind, channels, ms, share}], 'step_ms', ...}."""
  import jax

  step, state, batch = workload_lib.build_step(workload)
  compiled = step.lower(state, batch).compile()
  contents: dict[str, tuple[str, list[str]]] = {}
  kinds = classify(compiled.as_text(), contents)
  for _ in range(warmup + 1):
    state, _ = compiled(state, batch)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir)
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = compiled(state, batch)
    jax.block_until_ready(state)
    wall = (time.perf_counter() - start) / steps
    jax.profiler.stop_trace()
    events = _op_events(trace_dir, set(kinds))
  totals: dict[tuple[str, int], int] = collections.defaultdict(int)
  per_op: dict[str, int] = collections.defaultdict(int)
  for name, _, duration in events:
    totals[kinds[name]] += duration
    per_op[name] += duration
  # The costliest traced instructions other than convolutions (whose traced time is only their launch).
  top = sorted((n for n in per_op if n in contents), key=per_op.get, reverse=True)[:top_ops]
  top = [{"name": n, "kind": kinds[n][0], "ms": per_op[n] / steps / 1e9, "shape": contents[n][0],
          "ops": contents[n][1]} for n in top]
  busy = _covered([(start, start + duration) for _, start, duration in events]) / steps / 1e9  # ms per step
  op_ms = {key: ps / steps / 1e9 for key, ps in totals.items()}
  rows = [{"kind": kind, "channels": channels, "ms": ms} for (kind, channels), ms in op_ms.items()]
  rows.append({"kind": "between ops (no op running)", "channels": 0, "ms": max(0.0, wall * 1e3 - busy)})
  total = sum(r["ms"] for r in rows)
  for row in rows:
    row["share"] = row["ms"] / total if total else 0.0
  rows.sort(key=lambda r: (_ORDER.get(r["kind"], 99), r["channels"]))
  return {"workload": workload.flags(), "step_ms": wall * 1e3, "op_ms_all_threads": sum(op_ms.values()),
          "busy_ms": busy, "rows": rows, "top_ops": top, "xla_flags": os.environ.get("XLA_FLAGS", ""), "steps": steps}


def _subjaxprs(value):
  """The jaxprs held by an equation's parameter (a jaxpr, a closed jaxpr, or a sequence of them)."""
  if hasattr(value, "eqns"):
    yield value
  elif hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _subjaxprs(item)


def _conv_equations(jaxpr):
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      yield eqn
    for value in eqn.params.values():
      for sub in _subjaxprs(value):
        yield from _conv_equations(sub)


def _equation_kinds(eqns) -> list[str]:
  """Forward, gradient with respect to the input, or to the weights, for each convolution equation of a step.

  Autodiff's transposes (both gradients) carry transpose(...) in their name stack; of those, a weight gradient's
  result has the shape of a forward convolution's kernel (its right operand), an input gradient's that of an
  activation.
  """
  backward = ["transpose(" in str(eqn.source_info.name_stack) for eqn in eqns]
  kernels = {eqn.invars[1].aval.shape for eqn, b in zip(eqns, backward) if not b}
  return ["convolution forward" if not b else
          "convolution grad weights" if eqn.outvars[0].aval.shape in kernels else "convolution grad input"
          for eqn, b in zip(eqns, backward)]


def conv_timings(workload: workload_lib.Workload, *, repeats: int = 10) -> list[dict[str, Any]]:
  """[{kind, channels, count, ms}]: the step's convolutions, each distinct one compiled and timed alone.

  `ms` is per step: the median of `repeats` calls of each distinct convolution (after two untimed ones), times its
  number of occurrences in the step, summed per kind and output channels. Compiled alone, a convolution keeps the
  layout copies XLA:CPU puts around it (a weight gradient's batch-minor copies of its two operands), which the
  step's trace also counts as copies; the fusions feeding it in the step are not included.
  """
  import jax
  import numpy as np

  step, state, batch = workload_lib.build_step(workload, abstract=True)
  closed = jax.make_jaxpr(step)(state, batch)
  groups: dict[tuple, list] = {}
  eqns = list(_conv_equations(closed.jaxpr))
  for eqn, kind in zip(eqns, _equation_kinds(eqns)):
    avals = tuple((v.aval.shape, str(v.aval.dtype)) for v in eqn.invars)
    key = (kind, eqn.outvars[0].aval.shape[-1], avals, repr(sorted(eqn.params.items())))
    groups.setdefault(key, [eqn, 0])[1] += 1
  rng = np.random.default_rng(0)
  totals: dict[tuple[str, int], list[float]] = {}
  for (kind, channels, avals, _), (eqn, count) in groups.items():
    params = dict(eqn.params)
    conv = jax.jit(lambda a, b, params=params: jax.lax.conv_general_dilated_p.bind(a, b, **params))
    args = [jax.device_put(rng.standard_normal(shape).astype(dtype)) for shape, dtype in avals]
    for _ in range(2):
      jax.block_until_ready(conv(*args))
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(conv(*args))
      times.append(time.perf_counter() - start)
    entry = totals.setdefault((kind, int(channels)), [0, 0.0])
    entry[0] += count
    entry[1] += count * float(np.median(times)) * 1e3
  rows = [{"kind": kind, "channels": channels, "count": count, "ms": ms}
          for (kind, channels), (count, ms) in totals.items()]
  rows.sort(key=lambda r: (_ORDER.get(r["kind"], 99), r["channels"]))
  return rows


_ORDER = {k: i for i, k in enumerate((
    "convolution forward", "convolution grad input", "convolution grad weights",
    "reductions (BatchNorm, pooling, loss)", "elementwise", "copies and transposes", "dot (classifier)",
    "collectives", "bookkeeping", "between ops (no op running)"))}


def torch_profile(model: str, *, batch: int, image_size: int, steps: int = 5) -> dict[str, Any]:
  """The same breakdown of the PyTorch peer's step (benchmarks/peers/torch_cifar_resnet.py --profile)."""
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "profile.json")
    depth = model.removeprefix("cifar_resnet")
    command = [sys.executable, "-m", "benchmarks.peers.torch_cifar_resnet", f"--depth={depth}", f"--batch={batch}",
               f"--image_size={image_size}", "--device=cpu", f"--profile_steps={steps}", f"--out={out}"]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=files.REPO_ROOT, timeout=1800)
    if proc.returncode or not os.path.exists(out):
      return {"status": "failed", "reason": (proc.stderr or proc.stdout)[-2000:]}
    with open(out) as f:
      return json.load(f)


def markdown(result: dict[str, Any], peer: dict[str, Any] | None = None) -> str:
  """The breakdown as a markdown table (ms per step and share), with the peer's beside it where given."""
  lines = [f"Step {result['step_ms']:.1f} ms (ours), ops busy {result['busy_ms']:.1f} ms of it.", "",
           "| kind of work | channels | ours ms/step | share |", "|---|---|---|---|"]
  for row in result["rows"]:
    channels = str(row["channels"]) if row["channels"] else ""
    lines.append(f"| {row['kind']} | {channels} | {row['ms']:.2f} | {100 * row['share']:.1f} % |")
  if peer and peer.get("status") == "ok":
    lines += ["", f"PyTorch peer (torch.profiler, {peer['threads']} thread(s)): step {peer['step_ms']:.1f} ms.", "",
              "| kind of work | peer ms/step | share |", "|---|---|---|"]
    for row in peer["rows"]:
      lines.append(f"| {row['kind']} | {row['ms']:.2f} | {100 * row['share']:.1f} % |")
  elif peer:
    lines += ["", f"PyTorch peer: {peer.get('status')}: {peer.get('reason', '')[:200]}"]
  if result.get("top_ops"):
    lines += ["", "Costliest traced instructions other than convolutions (ms per step; what each contains):", "",
              "| instruction | kind | ms/step | result | ops inside |", "|---|---|---|---|---|"]
    for op in result["top_ops"]:
      shape = op["shape"] if len(op["shape"]) <= 60 else op["shape"][:57] + "..."
      lines.append(f"| {op['name']} | {op['kind']} | {op['ms']:.2f} | `{shape}` | {', '.join(op['ops'])} |")
  convs = result.get("conv_alone")
  if convs:
    total = sum(r["ms"] for r in convs)
    between = next((r["ms"] for r in result["rows"] if r["kind"].startswith("between ops")), 0.0)
    lines += ["", "Convolutions timed alone (the trace cannot time them; see resnet_jax/bench/profile.py): each "
              "distinct convolution of the step compiled and run by itself, times its count.", "",
              "| kind of work | channels | count | ms/step | share of our step |", "|---|---|---|---|---|"]
    for row in convs:
      lines.append(f"| {row['kind']} | {row['channels']} | {row['count']} | {row['ms']:.2f} "
                   f"| {100 * row['ms'] / result['step_ms']:.1f} % |")
    lines += ["", f"Convolutions alone: {total:.1f} ms, {100 * total / result['step_ms']:.1f} % of the step; "
              f"between ops less them: {between - total:.1f} ms."]
  return "\n".join(lines) + "\n"
