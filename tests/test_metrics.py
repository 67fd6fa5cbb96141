"""Masked (sum, count) metrics (resnet_jax/metrics.py)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from resnet_jax import metrics


def _reference(logits, labels, mask, label_smoothing=0.0):
  """The same metrics in plain NumPy, one example at a time."""
  num_classes = logits.shape[1]
  losses, top1, top5 = [], [], []
  for row, label, weight in zip(logits, labels, mask):
    if not weight:
      continue
    log_probs = row - np.log(np.exp(row - row.max()).sum()) - row.max()
    target = np.full(num_classes, label_smoothing / num_classes)
    target[label] += 1 - label_smoothing
    losses.append(-(target * log_probs).sum())
    ranking = np.argsort(-row, kind="stable")
    top1.append(ranking[0] == label)
    top5.append(label in ranking[:5])
  return {"loss": np.mean(losses), "top1": np.mean(top1), "top5": np.mean(top5)}


def _data(batch=12, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(batch, num_classes)).astype(np.float32)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  mask = (np.arange(batch) < batch - 3).astype(np.float32)  # The last 3 are padding.
  return logits, labels, mask


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_classification_sums_match_a_reference(label_smoothing):
  logits, labels, mask = _data()
  sums = metrics.classification_sums(logits, labels, mask, label_smoothing=label_smoothing)
  assert set(sums) == {"loss", "top1", "top5"}
  assert all(float(count) == 9 for _, count in sums.values())
  result = metrics.finalize(sums)
  expected = _reference(logits, labels, mask, label_smoothing)
  for name in expected:
    assert result[name] == pytest.approx(expected[name], rel=1e-5)


def test_padding_is_ignored_whatever_its_content():
  logits, labels, mask = _data()
  garbage = logits.copy()
  garbage[mask == 0] = 1e4
  np.testing.assert_allclose(
      [float(s) for s, _ in metrics.classification_sums(garbage, labels, mask).values()],
      [float(s) for s, _ in metrics.classification_sums(logits, labels, mask).values()], rtol=1e-6)
  assert float(metrics.classification_sums(logits, labels)["top1"][1]) == 12  # No mask: every example counts.


def test_top5_with_few_classes_and_ties():
  logits = jnp.zeros((2, 3))  # Ties everywhere: top-1 is class 0; 3 classes: top-5 always hits.
  result = metrics.finalize(metrics.classification_sums(logits, jnp.array([0, 2]), jnp.ones(2)))
  assert result["top1"] == 0.5 and result["top5"] == 1.0


def test_psum_over_a_device_axis_equals_the_whole_batch():
  logits, labels, mask = _data(batch=16)
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=P("data"), out_specs=P())
  def sharded(logits, labels, mask):
    return metrics.psum(metrics.classification_sums(logits, labels, mask), "data")

  whole = metrics.finalize(metrics.classification_sums(logits, labels, mask))
  for name, value in metrics.finalize(sharded(logits, labels, mask)).items():
    assert value == pytest.approx(whole[name], rel=1e-6)
  # The same under a named vmap axis (what pmap-style code sees).
  per_device = jax.vmap(lambda *a: metrics.psum(metrics.classification_sums(*a), "devices"), axis_name="devices")(
      logits.reshape(4, 4, -1), labels.reshape(4, 4), mask.reshape(4, 4))
  first_device = {name: (s[0], c[0]) for name, (s, c) in per_device.items()}
  assert metrics.finalize(first_device) == pytest.approx(whole)


def test_merge_accumulates_over_steps_not_a_mean_of_means():
  logits, labels, mask = _data(batch=12)
  total = None
  for start, stop in ((0, 2), (2, 12)):  # Unequal batches: a mean of means would be wrong.
    total = metrics.merge(total, metrics.classification_sums(logits[start:stop], labels[start:stop],
                                                             mask[start:stop]))
  assert metrics.finalize(total) == pytest.approx(metrics.finalize(metrics.classification_sums(logits, labels, mask)))
  with pytest.raises(ValueError, match="Cannot merge"):
    metrics.merge(total, {"loss": (1.0, 1.0)})


def test_finalize_of_nothing_is_nan():
  assert np.isnan(metrics.finalize({"top1": (0.0, 0.0)})["top1"])
