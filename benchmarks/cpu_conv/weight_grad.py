r"""The weight gradient of a CIFAR 3x3 convolution alone, three ways on the CPU, at batch 128:

  lax     XLA's own (the transpose of the convolution), which on XLA:CPU runs Eigen's convolution after copying the
          activations and the output gradient into batch-minor layouts;
  flat9   no transposes: the padded activations flattened to rows, and nine matmuls of a row-offset slice with the
          output gradient (placed on the same padded grid), one per tap;
  flat1   the same nine slices side by side, one matmul.

  python -m benchmarks.cpu_conv.weight_grad [--repeats=20] [--out=FILE.json]

Each is checked against lax's result; times are medians of --repeats calls after two warm-up calls, in ms.
"""
import argparse

# isort: off
from benchmarks.cpu_conv import compare  # Applies the trainer's CPU flags before JAX starts.
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
# isort: on


def dw_lax(x, g, w):
  return jax.linear_transpose(lambda w: compare.conv_lax(x, w), w)(g)[0]


def dw_flat(x, g, w):
  n, h, wd, c = x.shape
  o = g.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))  # (n, h+2, w+2, c)
  gp = jnp.pad(g, ((0, 0), (0, 2), (0, 2), (0, 0)))  # dy at (h, w) of the padded grid, zeros elsewhere
  rows = n * (h + 2) * (wd + 2)
  xf = jnp.pad(xp.reshape(rows, c), ((0, 2 * (wd + 2) + 2), (0, 0)))
  gf = gp.reshape(rows, o)
  taps = [lax.dot_general(lax.dynamic_slice_in_dim(xf, i * (wd + 2) + j, rows, 0), gf, (((0,), (0,)), ((), ())))
          for i in range(3) for j in range(3)]
  return jnp.stack(taps).reshape(3, 3, c, o)


def dw_flat_one(x, g, w):
  n, h, wd, c = x.shape
  o = g.shape[-1]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  gp = jnp.pad(g, ((0, 0), (0, 2), (0, 2), (0, 0)))
  rows = n * (h + 2) * (wd + 2)
  xf = jnp.pad(xp.reshape(rows, c), ((0, 2 * (wd + 2) + 2), (0, 0)))
  gf = gp.reshape(rows, o)
  cols = jnp.concatenate([xf[i * (wd + 2) + j: i * (wd + 2) + j + rows] for i in range(3) for j in range(3)], axis=1)
  return lax.dot_general(cols, gf, (((0,), (0,)), ((), ()))).reshape(3, 3, c, o)


def _ms(fn, *args, repeats):
  f = jax.jit(fn)
  return compare.time_calls(lambda: jax.block_until_ready(f(*args)), repeats) * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  rows = []
  print("| H x W x C | lax ms | flat9 ms | flat1 ms |\n|---|---|---|---|")
  for h, c in ((32, 16), (16, 32), (8, 64), (16, 16), (8, 32), (4, 64)):
    x = jnp.asarray(rng.standard_normal((args.batch, h, h, c), np.float32))
    g = jnp.asarray(rng.standard_normal((args.batch, h, h, c), np.float32))
    w = jnp.zeros((3, 3, c, c))
    ref = jax.jit(dw_lax)(x, g, w)
    for fn in (dw_flat, dw_flat_one):
      np.testing.assert_allclose(jax.jit(fn)(x, g, w), ref, rtol=1e-3, atol=1e-2 * float(jnp.abs(ref).max()))
    row = {"h": h, "c": c, **{name: _ms(fn, x, g, w, repeats=args.repeats)
                              for name, fn in (("lax", dw_lax), ("flat9", dw_flat), ("flat1", dw_flat_one))}}
    rows.append(row)
    print(f"| {h}x{h}x{c} | {row['lax']:.2f} | {row['flat9']:.2f} | {row['flat1']:.2f} |", flush=True)
  if args.out:
    compare.write_result(args.out, args.batch, args.repeats, rows)


if __name__ == "__main__":
  main()
