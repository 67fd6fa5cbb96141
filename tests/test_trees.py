"""Tests for resnet_jax.trees: path names and tree comparison."""
import jax
import numpy as np
from flax import struct

from resnet_jax import trees


@struct.dataclass
class _State:
  step: int
  params: dict


def test_paths_name_dict_keys_attributes_and_indices_alike():
  tree = _State(step=np.int32(3), params={"conv": {"kernel": np.zeros((3, 3))}, "stack": [np.ones(2), np.ones(1)]})
  assert list(trees.flatten(tree)) == [("step",), ("params", "conv", "kernel"), ("params", "stack", "0"),
                                       ("params", "stack", "1")]
  assert trees.shape(jax.ShapeDtypeStruct((4, 2), np.float32)) == (4, 2) and trees.shape(1.0) == ()


def test_differences_in_order():
  want = {("a",): np.zeros(2), ("b",): np.zeros(3), ("c",): np.zeros(1)}
  got = {("b",): np.zeros(4), ("c",): np.zeros(1), ("d",): np.zeros(1), ("e",): np.zeros(1)}
  assert trees.differences(want, got) == [("missing", ("a",)), ("different", ("b",)), ("unexpected", ("d",)),
                                          ("unexpected", ("e",))]
  assert trees.differences(want, dict(want)) == []
  same_size = lambda a, b: np.size(a) == np.size(b)  # noqa: E731
  assert trees.differences({("x",): np.zeros((2, 3))}, {("x",): np.zeros(6)}, same_size) == []
