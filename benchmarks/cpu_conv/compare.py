r"""One 3x3 convolution of the CIFAR nets, forward and both gradients, three ways on the CPU, in one process:

  lax      jax.lax.conv_general_dilated, NHWC/HWIO (what the models run), under the trainer's CPU XLA flags;
  patches  the nine shifted views concatenated on the channel axis, then one matmul with the (9*C_in, C_out) kernel
           (its gradients, from JAX's autodiff, are a matmul plus nine padded adds, and one matmul);
  shifted  nine matmuls of a shifted view with one tap of the kernel, summed (gradients: nine matmuls each);
  hybrid   lax's forward and input gradient, the weight gradient as nine matmuls contracting batch and space
           (no transposed copies of the activations);
  torch    torch.nn.functional.conv2d, channels-last, the thread count the CIFAR peer would pick (if torch is present).

  python -m benchmarks.cpu_conv.compare [--batch=128] [--sizes=32,16] [--repeats=20] [--out=FILE.json]

With --split the three kinds of work are also timed alone, for lax and torch: the forward convolution, the gradient
with respect to the input (lax: the linear transpose of the convolution; torch: aten.convolution_backward with only
the input mask set) and the gradient with respect to the weights (only the weight mask). The train step's trace
cannot give this split on XLA:CPU (it records a convolution's launch, not its execution).

Each timing is the median of --repeats calls of value-and-gradient (the loss is sum(y * g) for a fixed g), after
two warm-up calls. The shapes are the stages of a CIFAR 6n+2 net: (H, C) = (s, 16), (s/2, 32), (s/4, 64).
"""
import argparse
import json
import os
import statistics
import time

from resnet_jax import xla_flags

xla_flags.apply(True)  # The trainer's CPU flags, before JAX starts.

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def conv_lax(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


def conv_patches(x, w):
  n, h, wd, c = x.shape
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  cols = jnp.concatenate([xp[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
  return jnp.dot(cols.reshape(-1, 9 * c), w.reshape(9 * c, -1)).reshape(n, h, wd, -1)


def conv_shifted(x, w):
  h, wd = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(jnp.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd, :], w[i, j]) for i in range(3) for j in range(3))


@jax.custom_vjp
def conv_hybrid(x, w):
  return conv_lax(x, w)


def _hybrid_fwd(x, w):
  return conv_lax(x, w), (x, w)


def _hybrid_bwd(residuals, dy):
  x, w = residuals
  # The convolution is linear in x: its transpose is XLA's gradient with respect to the input, without a second
  # forward pass (which jax.vjp here would run).
  input_vjp = jax.linear_transpose(lambda x: conv_lax(x, w), x)
  h, wd = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dw = jnp.stack([jnp.einsum("nhwc,nhwo->co", xp[:, i:i + h, j:j + wd, :], dy) for i in range(3) for j in range(3)])
  return input_vjp(dy)[0], dw.reshape(w.shape)


conv_hybrid.defvjp(_hybrid_fwd, _hybrid_bwd)


def time_calls(fn, repeats):
  """Median seconds of `repeats` calls of `fn` (which must block until its result is ready), after two untimed."""
  fn(), fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_case(conv, x, w, g, repeats):
  grad = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(conv(x, w) * g), argnums=(0, 1)))
  return time_calls(lambda: jax.block_until_ready(grad(x, w)), repeats)


def jax_split(x, w, g, repeats):
  """Seconds (median) of lax's forward, input gradient and weight gradient, each jitted alone."""
  forward = jax.jit(conv_lax)
  d_input = jax.jit(lambda w, g: jax.linear_transpose(lambda x: conv_lax(x, w), x)(g)[0])
  d_weight = jax.jit(lambda x, g: jax.linear_transpose(lambda w: conv_lax(x, w), w)(g)[0])
  return {"fwd": time_calls(lambda: jax.block_until_ready(forward(x, w)), repeats),
          "dx": time_calls(lambda: jax.block_until_ready(d_input(w, g)), repeats),
          "dw": time_calls(lambda: jax.block_until_ready(d_weight(x, g)), repeats)}


def _torch_tensors(x, w, g):
  import torch
  xt = torch.tensor(np.asarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  wt = torch.tensor(np.asarray(w)).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
  gt = torch.tensor(np.asarray(g)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  return xt, wt, gt


def torch_split(x, w, g, repeats):
  import torch
  xt, wt, gt = _torch_tensors(x, w, g)
  back = torch.ops.aten.convolution_backward

  def run(mask):
    return lambda: back(gt, xt, wt, None, (1, 1), (1, 1), (1, 1), False, (0, 0), 1, mask)

  best = {}
  with torch.no_grad():
    for threads in (1, 2):
      torch.set_num_threads(threads)
      times = {"fwd": time_calls(lambda: torch.nn.functional.conv2d(xt, wt, padding=1), repeats),
               "dx": time_calls(run((True, False, False)), repeats),
               "dw": time_calls(run((False, True, False)), repeats)}
      if not best or sum(times.values()) < sum(best.values()):
        best = times
  return best


def torch_case(x, w, g, repeats):
  import torch
  xt, wt, gt = _torch_tensors(x, w, g)
  xt.requires_grad_(True), wt.requires_grad_(True)

  def step():
    xt.grad = wt.grad = None
    y = torch.nn.functional.conv2d(xt, wt, padding=1)
    (y * gt).sum().backward()

  best = None
  for threads in (1, 2):
    torch.set_num_threads(threads)
    seconds = time_calls(step, repeats)
    best = seconds if best is None else min(best, seconds)
  return best


def write_result(path, batch, repeats, rows):
  """The rows with what they were measured under (batch, repeats, JAX version, XLA flags, load) as JSON."""
  with open(path, "w") as f:
    json.dump({"batch": batch, "repeats": repeats, "jax": jax.__version__,
               "xla_flags": os.environ.get("XLA_FLAGS", ""), "load": os.getloadavg(), "rows": rows}, f, indent=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--sizes", default="32,16")
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="")
  parser.add_argument("--split", action="store_true", help="also time forward, input and weight gradient alone")
  args = parser.parse_args()
  try:
    import torch  # noqa: F401
    have_torch = True
  except ImportError:
    have_torch = False
  rng = np.random.default_rng(0)
  rows = []
  print("| size | H x W x C | lax ms | patches ms | shifted ms | hybrid ms | torch ms | patches / lax "
        "| shifted / lax | hybrid / lax | torch / lax |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for size in (int(s) for s in args.sizes.split(",")):
    for h, c in ((size, 16), (size // 2, 32), (size // 4, 64)):
      x = jnp.asarray(rng.standard_normal((args.batch, h, h, c), np.float32))
      w = jnp.asarray(rng.standard_normal((3, 3, c, c), np.float32) * 0.1)
      g = jnp.asarray(rng.standard_normal((args.batch, h, h, c), np.float32))
      ref = jax.jit(conv_lax)(x, w)
      ref_grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv_lax(x, w) * g), argnums=(0, 1)))(x, w)
      for conv in (conv_patches, conv_shifted, conv_hybrid):
        np.testing.assert_allclose(jax.jit(conv)(x, w), ref, rtol=1e-4, atol=1e-3)
        grads = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) * g), argnums=(0, 1)))(x, w)
        for got, want in zip(grads, ref_grad):
          np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2 * float(jnp.abs(want).max()))
      row = {"size": size, "h": h, "c": c, "lax": jax_case(conv_lax, x, w, g, args.repeats),
             "patches": jax_case(conv_patches, x, w, g, args.repeats),
             "shifted": jax_case(conv_shifted, x, w, g, args.repeats),
             "hybrid": jax_case(conv_hybrid, x, w, g, args.repeats),
             "torch": torch_case(x, w, g, args.repeats) if have_torch else None}
      if args.split:
        row["lax_split"] = jax_split(x, w, g, args.repeats)
        row["torch_split"] = torch_split(x, w, g, args.repeats) if have_torch else None
      rows.append(row)
      torch_ms = f"{row['torch'] * 1e3:.2f}" if row["torch"] else "-"
      torch_ratio = f"{row['torch'] / row['lax']:.2f}" if row["torch"] else "-"
      print(f"| {size} | {h}x{h}x{c} | {row['lax'] * 1e3:.2f} | {row['patches'] * 1e3:.2f} "
            f"| {row['shifted'] * 1e3:.2f} | {row['hybrid'] * 1e3:.2f} | {torch_ms} "
            f"| {row['patches'] / row['lax']:.2f} | {row['shifted'] / row['lax']:.2f} "
            f"| {row['hybrid'] / row['lax']:.2f} | {torch_ratio} |", flush=True)
  if args.split:
    print("\n| size | H x W x C | lax fwd / dx / dw ms | torch fwd / dx / dw ms | lax / torch fwd | dx | dw |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
      ours, theirs = row["lax_split"], row["torch_split"]
      cells = " / ".join(f"{ours[k] * 1e3:.2f}" for k in ("fwd", "dx", "dw"))
      if theirs:
        peer = " / ".join(f"{theirs[k] * 1e3:.2f}" for k in ("fwd", "dx", "dw"))
        ratios = " | ".join(f"{ours[k] / theirs[k]:.2f}" for k in ("fwd", "dx", "dw"))
      else:
        peer, ratios = "-", "- | - | -"
      print(f"| {row['size']} | {row['h']}x{row['h']}x{row['c']} | {cells} | {peer} | {ratios} |")
  if args.out:
    write_result(args.out, args.batch, args.repeats, rows)


if __name__ == "__main__":
  main()
