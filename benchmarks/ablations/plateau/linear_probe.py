"""Linear-classifier check for a `shapes` builder config: softmax regression on standardised pixels.

    PYTHONPATH=. python benchmarks/ablations/plateau/linear_probe.py depth16 [NUM_TRAIN]   # from the repository root

`linear_probe(train_x, train_y, test_x, test_y)` is self-contained (numpy, jax, optax) and deterministic for a
given seed: features are the raw pixels, standardised per feature with the training set's mean and std; weights and
bias start at zero; minibatch Adam (lr 1e-3, batch 256) for a fixed number of epochs in an order drawn from the
seed; no regularisation; the last batch of an epoch is dropped. It returns train and test accuracy.
`shapes_arrays(config, split, n)` draws the first `n` examples of a split with `shapes.generate` (no TFDS files).
"""
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax


def linear_probe(train_x, train_y, test_x, test_y, *, epochs=30, batch_size=256, learning_rate=1e-3, seed=0,
                 num_classes=10):
  """Trains softmax regression on standardised pixels; returns {'train_acc', 'test_acc', 'train_loss'}.

  Args:
    train_x, test_x: images [N, ...] (any dtype; flattened to [N, D] float32).
    train_y, test_y: integer labels [N].
    epochs, batch_size, learning_rate: minibatch Adam settings (fixed number of epochs, no early stopping).
    seed: seeds the minibatch order (the weights start at zero).
  """
  xtr = np.asarray(train_x, np.float32).reshape(len(train_x), -1)
  xte = np.asarray(test_x, np.float32).reshape(len(test_x), -1)
  mean, std = xtr.mean(0), xtr.std(0) + 1e-6
  xtr, xte = (xtr - mean) / std, (xte - mean) / std
  ytr, yte = np.asarray(train_y, np.int32), np.asarray(test_y, np.int32)
  n, d = xtr.shape
  steps = n // batch_size
  params = {"w": jnp.zeros((d, num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  def loss_fn(p, x, y):
    logits = x @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def epoch(carry, order):
    def step(c, idx):
      p, s = c
      loss, g = jax.value_and_grad(loss_fn)(p, xtr_d[idx], ytr_d[idx])
      updates, s = tx.update(g, s, p)
      return (optax.apply_updates(p, updates), s), loss
    return jax.lax.scan(step, carry, order.reshape(steps, batch_size))

  xtr_d, ytr_d = jnp.asarray(xtr), jnp.asarray(ytr)
  rng = np.random.default_rng(seed)
  carry = (params, opt_state)
  for _ in range(epochs):
    order = rng.permutation(n)[:steps * batch_size]
    carry, losses = epoch(carry, jnp.asarray(order))
  params = carry[0]

  def accuracy(x, y):
    return float(np.mean(np.asarray(jnp.argmax(jnp.asarray(x) @ params["w"] + params["b"], -1)) == y))

  return {"train_acc": accuracy(xtr, ytr), "test_acc": accuracy(xte, yte), "train_loss": float(losses[-1])}


def shapes_arrays(config, split, n):
  """The first `n` examples of a `shapes` split, drawn with `shapes.generate` (chunk by chunk)."""
  from resnet_jax.data import shapes
  xs, ys = [], []
  for start in range(0, n, shapes._CHUNK):
    x, y = shapes.generate(config, split, start // shapes._CHUNK, min(shapes._CHUNK, n - start))
    xs.append(x)
    ys.append(y)
  return np.concatenate(xs), np.concatenate(ys)


if __name__ == "__main__":
  from resnet_jax.data import shapes
  name = sys.argv[1]
  num_train = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
  config = {c.name: c for c in shapes.BUILDER_CONFIGS}[name]
  t0 = time.time()
  xtr, ytr = shapes_arrays(config, "train", num_train)
  xte, yte = shapes_arrays(config, "test", config.num_test)
  t1 = time.time()
  result = linear_probe(xtr, ytr, xte, yte)
  print({"config": name, "num_train": num_train, "num_test": len(yte), **result,
         "draw_s": round(t1 - t0, 1), "fit_s": round(time.time() - t1, 1)})
