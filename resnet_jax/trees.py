"""Pytrees of variables as flat {path: leaf} maps: the one place that names a path and compares two trees.

A path is a tuple of names: dict keys, dataclass attribute names and sequence indices all become plain strings,
which is also how Orbax stores them, so a live train state, a checkpoint's metadata tree and weights converted from
another framework compare directly.
"""
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

Path = tuple[str, ...]


def key_str(key: Any) -> str:
  """The name of one pytree path entry (a dict key, attribute name or sequence index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def flatten(tree: Any) -> dict[Path, Any]:
  """{path: leaf} for every leaf of `tree`, in JAX's flattening order."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {tuple(key_str(k) for k in path): leaf for path, leaf in leaves}


def shape(leaf: Any) -> tuple[int, ...]:
  """The shape of an array, a ShapeDtypeStruct, Orbax's array metadata or a Python scalar."""
  return tuple(leaf.shape) if hasattr(leaf, "shape") else tuple(np.shape(leaf))


def same_shape(a: Any, b: Any) -> bool:
  return shape(a) == shape(b)


def differences(want: Mapping[Path, Any], got: Mapping[Path, Any],
                same: Callable[[Any, Any], bool] = same_shape) -> list[tuple[str, Path]]:
  """How `got` differs from `want`, leaf by leaf: ('missing', path) where `got` lacks a path of `want` and
  ('different', path) where `same(want leaf, got leaf)` is false, in `want`'s order; then ('unexpected', path) for
  each path of `got` that `want` lacks, in `got`'s order. Empty when they match."""
  out = [("missing", p) if p not in got else ("different", p)
         for p in want if p not in got or not same(want[p], got[p])]
  return out + [("unexpected", p) for p in got if p not in want]
