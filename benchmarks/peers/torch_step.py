"""The PyTorch training step both PyTorch peers time: SGD with momentum on a fixed synthetic batch.

Written the way a careful PyTorch user would for speed: channels-last tensors (the layout cuDNN and oneDNN
convolutions prefer), bf16 autocast when asked (parameters and optimizer state stay float32, like the JAX side),
gradients set to None instead of zeroed, a fused (CUDA) or multi-tensor (CPU) optimizer, and no host
synchronisation inside the step.
"""
from __future__ import annotations

from benchmarks.peers import harness


def check_device(torch, device: str) -> str | None:
  """Why `device` cannot run here, or None when it can."""
  if device == "cuda" and not torch.cuda.is_available():
    return "CUDA is not available to this PyTorch build or machine"
  return None


def versions(torch) -> dict:
  out = {"torch": torch.__version__}
  if torch.cuda.is_available():
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version()
  return out


def device_name(torch, device: str) -> str:
  import platform
  if device == "cuda":
    return torch.cuda.get_device_name(0)
  return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def make_sgd(torch, model, device: str):
  """SGD with momentum 0.9: fused into one kernel on CUDA where this PyTorch has it, multi-tensor otherwise."""
  params = list(model.parameters())
  if device == "cuda":
    try:
      return torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)
    except (TypeError, RuntimeError):  # PyTorch versions without a fused SGD
      pass
  return torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=True)


def pick_threads(torch, step, candidates, trial_steps: int = 2) -> dict:
  """Sets the fastest intra-op thread count among `candidates` for `step` (timed over `trial_steps` after one
  untimed step each) and returns the trial times. On a small shared CPU machine PyTorch's default (one thread
  per core) can be several times slower than fewer threads, since a thread waiting at a barrier spins while its
  partner is descheduled."""
  import time
  seconds = {}
  for threads in candidates:
    torch.set_num_threads(threads)
    step()
    start = time.perf_counter()
    for _ in range(trial_steps):
      step()
    seconds[threads] = (time.perf_counter() - start) / trial_steps
  best = min(seconds, key=seconds.get)
  torch.set_num_threads(best)
  return {"threads": best, "thread_trial_step_s": {str(k): v for k, v in seconds.items()}}


def train_step_timing(torch, model, *, args, num_classes: int, channels_last: bool, compile_mode: str | None,
                      thread_candidates=()):
  """Times SGD steps of `model` on one synthetic batch; returns the harness summary.

  With several `thread_candidates` (CPU only) the fastest thread count is chosen first (see `pick_threads`); the
  first step is then timed after those trial steps, so it no longer includes the first-call overheads.
  """
  import torch.nn.functional as F

  device = torch.device(args.device)
  torch.manual_seed(args.seed)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=memory_format).train()
  optimizer = make_sgd(torch, model, args.device)
  images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
  images = images.contiguous(memory_format=memory_format)
  labels = torch.randint(0, num_classes, (args.batch,), device=device)
  autocast_dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
  forward = torch.compile(model, mode=compile_mode) if compile_mode else model

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
      loss = F.cross_entropy(forward(images), labels)
    loss.backward()
    optimizer.step()

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  tuned = pick_threads(torch, step, thread_candidates) if len(thread_candidates) > 1 else {}
  timing = harness.time_steps(step, sync, warmup=args.warmup, windows=args.windows, window=args.window)
  result = harness.summarize(timing, args.batch)
  result.update(tuned)
  if device.type == "cpu":
    result["threads"] = torch.get_num_threads()
  if device.type == "cuda":
    result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
  result["num_params"] = sum(p.numel() for p in model.parameters())
  result["optimizer"] = "SGD momentum 0.9, " + ("fused" if optimizer.defaults.get("fused") else "foreach")
  return result


# torch.profiler op names by kind of work, for the breakdown beside XLA's (resnet_jax/bench/profile.py).
_KINDS = (
    ("convolution forward", ("mkldnn_convolution", "_convolution", "convolution", "conv2d", "_slow_conv2d_forward")),
    ("convolution backward (input and weights)", ("convolution_backward", "mkldnn_convolution_backward")),
    ("reductions (BatchNorm, pooling, loss)", ("batch_norm", "native_batch_norm", "native_batch_norm_backward",
                                               "batch_norm_backward", "_batch_norm_impl_index", "mean", "sum",
                                               "log_softmax", "_log_softmax", "nll_loss", "_log_softmax_backward_data",
                                               "nll_loss_backward", "nll_loss_forward", "cross_entropy_loss")),
    ("optimizer", ("_foreach_",)),
    ("copies and transposes", ("copy_", "contiguous", "clone", "to", "_to_copy", "cat", "constant_pad_nd", "pad",
                               "slice", "select", "view", "as_strided", "empty_like", "zero_", "fill_",
                               "slice_backward", "expand")),
    ("elementwise", ("relu", "relu_", "threshold_backward", "add", "add_", "mul", "mul_", "div", "sub", "neg",
                     "addcmul_", "threshold")),
)


def _kind(name: str) -> str:
  op = name.removeprefix("aten::")
  for kind, ops in _KINDS:
    if any(op == o or (o.endswith("_") and op.startswith(o)) for o in ops):
      return kind
  return "other (autograd, dispatch, allocation)"


def profile_breakdown(torch, model, *, args, num_classes: int, channels_last: bool, thread_candidates=()):
  """Self CPU time per step of each kind of work in `args.profile_steps` steps, from torch.profiler."""
  import time

  import torch.nn.functional as F

  torch.manual_seed(args.seed)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format).train()
  optimizer = make_sgd(torch, model, "cpu")
  images = torch.randn(args.batch, 3, args.image_size, args.image_size).contiguous(memory_format=memory_format)
  labels = torch.randint(0, num_classes, (args.batch,))

  def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()

  tuned = pick_threads(torch, step, thread_candidates) if len(thread_candidates) > 1 else {}
  for _ in range(2):
    step()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    start = time.perf_counter()
    for _ in range(args.profile_steps):
      step()
    wall = (time.perf_counter() - start) / args.profile_steps
  totals = {}
  for event in prof.key_averages():
    kind = _kind(event.key)
    totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total / 1e3 / args.profile_steps  # ms per step
  total = sum(totals.values())
  rows = [{"kind": k, "ms": v, "share": v / total if total else 0.0}
          for k, v in sorted(totals.items(), key=lambda kv: -kv[1])]
  return {"step_ms": wall * 1e3, "rows": rows, "threads": torch.get_num_threads(), **tuned,
          "note": "self CPU time of the ops, summed over threads; with profiling on (slower than timed steps)"}
