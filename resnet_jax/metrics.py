"""Classification metrics as (sum, count) pairs: masked for padding, summed across devices, divided once at the end.

A metric is never averaged per batch or per device (a mean of means is wrong as soon as batches differ in size or
padding): each step returns sums and counts, `psum` adds them over a named device axis inside shard_map / pmap,
`merge` adds them over steps, and `finalize` divides.
"""
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

Sums = dict[str, tuple[jax.Array, jax.Array]]


LOSSES = ("softmax_xent", "sigmoid_xent")


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy against one-hot targets mixed with `label_smoothing` of the uniform
  distribution (the training loss, and the loss metric)."""
  logits = logits.astype(jnp.float32)
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes) * (1.0 - label_smoothing) + label_smoothing / num_classes
  return softmax_cross_entropy(logits, targets)


def softmax_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example softmax cross-entropy against soft targets [B, C] (rows summing to 1)."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array, target_threshold: float | None = None) -> jax.Array:
  """Per-example binary cross-entropy of every class's sigmoid against its target, averaged over the classes.

  The mean over classes (not the sum) is what PyTorch's `binary_cross_entropy_with_logits` with its default 'mean'
  reduction gives per example, as timm's `BinaryCrossEntropy` uses it (ResNet strikes back). With
  `target_threshold`, targets above it become 1 and the others 0 (timm's `target_threshold`), after label
  smoothing and mixing.
  """
  logits = logits.astype(jnp.float32)
  if target_threshold is not None:
    targets = (targets > target_threshold).astype(jnp.float32)
  # log(1 + exp(x)) - t x; softplus is stable and has the right gradient at 0 (sigmoid(0) - t).
  losses = jax.nn.softplus(logits) - logits * targets
  return jnp.mean(losses, axis=-1)


def training_loss(name: str, logits: jax.Array, targets: jax.Array,
                  target_threshold: float | None = None) -> jax.Array:
  """Per-example loss `name` (one of LOSSES: 'softmax_xent', 'sigmoid_xent') against soft targets [B, C].

  Raises:
    ValueError: an unknown name, or a target threshold with the softmax loss.
  """
  if name == "softmax_xent":
    if target_threshold is not None:
      raise ValueError("config.bce_target_threshold applies to config.loss='sigmoid_xent' only; unset it "
                       "(--config.bce_target_threshold=None) or choose that loss.")
    return softmax_cross_entropy(logits, targets)
  if name == "sigmoid_xent":
    return sigmoid_cross_entropy(logits, targets, target_threshold)
  raise ValueError(f"Unknown loss {name!r} (config.loss); choose one of {list(LOSSES)}.")


def classification_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
                        label_smoothing: float = 0.0, loss: jax.Array | None = None) -> Sums:
  """Sums and counts of cross-entropy loss, top-1 and top-5 accuracy over the unmasked examples.

  Args:
    logits: [B, num_classes].
    labels: int [B].
    mask: [B], 1 (or True) for real examples, 0 for padding; None counts every example.
    label_smoothing: weight of the uniform distribution mixed into the one-hot targets of the loss.
    loss: per-example loss [B] to sum instead of the cross-entropy against `labels` (training with mixed targets
      or another loss; `labels` then are the dominant labels that top-1 and top-5 count).

  Returns:
    {'loss': (sum, count), 'top1': (sum, count), 'top5': (sum, count)}, float32 scalars. Top-k counts the label
    among the k largest logits (ties broken towards lower class indices, as `jax.lax.top_k` does); with fewer
    than 5 classes top-5 is top-num_classes.
  """
  logits = logits.astype(jnp.float32)
  mask = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
  if loss is None:
    loss = cross_entropy(logits, labels, label_smoothing)
  _, top = jax.lax.top_k(logits, min(5, logits.shape[-1]))
  hits = top == labels[:, None]
  count = jnp.sum(mask)
  return {
      "loss": (jnp.sum(loss * mask), count),
      "top1": (jnp.sum(hits[:, 0] * mask), count),
      "top5": (jnp.sum(jnp.any(hits, axis=-1) * mask), count),
  }


def psum(sums: Sums, axis_name) -> Sums:
  """Adds sums and counts over a named device axis (inside shard_map, pmap or a named vmap)."""
  return jax.lax.psum(sums, axis_name)


def merge(total: Sums | None, sums: Sums) -> Sums:
  """Adds two collections of (sum, count) pairs; `total=None` starts a new one (for accumulating over steps)."""
  if total is None:
    return dict(sums)
  if set(total) != set(sums):
    raise ValueError(f"Cannot merge metrics {sorted(total)} with {sorted(sums)}.")
  return {name: (total[name][0] + sums[name][0], total[name][1] + sums[name][1]) for name in total}


def finalize(sums: Mapping[str, tuple]) -> dict[str, float]:
  """{name: sum / count} as Python floats (NaN for a metric that counted nothing)."""
  result = {}
  for name, (total, count) in sums.items():
    total, count = float(np.asarray(total)), float(np.asarray(count))
    result[name] = total / count if count else float("nan")
  return result
