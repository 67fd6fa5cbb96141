"""Weights for fine-tuning: model variables saved and loaded without optimizer state, and merged into a new model.

`save_params` writes {'params', 'batch_stats'} in the layout of one checkpoint step (what `experiments.convert_weights`
produces); `load_params` reads such a directory, or a run's latest committed checkpoint; `merge_for_finetune` puts
the loaded values into a freshly initialised model, re-initialising the classifier where it does not fit.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from resnet_jax import trees
from resnet_jax.checkpoint import (
  COMMIT_MARKER,
  META,
  STATE,
  STEP_METADATA,
  SUBDIR,
  as_path,
  complete_steps,
  is_complete,
  state_metadata,
)


def _plain(tree: Any) -> Any:
  """Nested plain dicts (FrozenDict and other mappings would be stored as opaque nodes)."""
  if isinstance(tree, Mapping):
    return {str(k): _plain(v) for k, v in tree.items()}
  return tree


def save_params(path: os.PathLike | str, variables: Mapping[str, Any], *, overwrite: bool = False) -> None:
  """Writes model variables {'params', 'batch_stats'} as a checkpoint that `load_params` reads.

  The layout is that of one checkpoint step (a `state` item and a `meta` item), written atomically.

  Raises:
    ValueError: `variables` has no 'params', or `path` exists and overwrite is False.
  """
  if "params" not in variables:
    raise ValueError(f"variables must hold 'params' (and usually 'batch_stats'), got keys {sorted(variables)}.")
  path = as_path(path)
  if path.exists() and not overwrite:
    raise ValueError(f"{path} already exists; pass overwrite=True or choose another path.")
  tree = {"params": _plain(variables["params"]), "batch_stats": _plain(variables.get("batch_stats", {}))}
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(
      path,
      args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(tree), META: ocp.args.JsonSave({"kind": "weights"})}),
      force=overwrite)
  checkpointer.close()


def _weights_dir(path: os.PathLike | str) -> epath.Path:
  """The step directory `load_params` reads for `path` (see there)."""
  where = as_path(path)
  expected = ("expected a run's workdir, its checkpoint directory, one committed step directory of it, or a "
              "directory written by finetune.save_params")
  if not where.exists():
    raise ValueError(f"init_from path {where} does not exist; {expected}.")
  if (where / STATE).is_dir():
    if not is_complete(where):
      raise ValueError(f"{where} is an incomplete checkpoint (no {COMMIT_MARKER} or {STEP_METADATA}): it was "
                       "never committed. Use a committed step or the run directory (latest committed step).")
    return where
  for directory in (where, where / SUBDIR):
    steps = complete_steps(directory)
    if steps:
      return directory / str(steps[-1])
  raise ValueError(f"No committed checkpoint at {where}; {expected}.")


def load_params(path: os.PathLike | str) -> dict[str, Any]:
  """Loads {'params', 'batch_stats'} (no optimizer state) as host numpy arrays, for fine-tuning.

  Args:
    path: a run's workdir (its `checkpoints/` subdirectory is used), a run's checkpoint directory (its latest
      committed step), one step directory of it, or a directory written by `save_params`.

  Returns:
    {'params': ..., 'batch_stats': ...} nested dicts of numpy arrays ('batch_stats' empty if none was saved).

  Raises:
    ValueError: the path does not exist or holds no committed checkpoint with 'params'.
  """
  step_dir = _weights_dir(path)
  saved = state_metadata(step_dir)
  if not isinstance(saved, Mapping) or "params" not in saved:
    found = sorted(saved) if isinstance(saved, Mapping) else type(saved).__name__
    raise ValueError(f"{step_dir} holds no 'params' (its state has {found}); it is not a model checkpoint.")
  wanted = {k: saved[k] for k in ("params", "batch_stats") if k in saved}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  checkpointer = ocp.PyTreeCheckpointer()
  loaded = checkpointer.restore(
      step_dir / STATE,
      args=ocp.args.PyTreeRestore(item=wanted, restore_args=restore_args, partial_restore=True))
  checkpointer.close()
  logging.info("Loaded params%s from %s.", " and batch_stats" if "batch_stats" in loaded else "", step_dir)
  return {"params": _plain(loaded["params"]), "batch_stats": _plain(loaded.get("batch_stats") or {})}


def _flat(variables: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
  return trees.flatten(_plain(variables))


def _like(loaded: Any, init: Any) -> np.ndarray:
  """`loaded` as a numpy array of `init`'s dtype, so the train state keeps the dtypes the model declares."""
  return np.asarray(loaded, dtype=getattr(init, "dtype", None))


def merge_for_finetune(init_variables: Mapping[str, Any],
                       loaded_variables: Mapping[str, Any],
                       *,
                       reinit_head_if_mismatch: bool = True,
                       reinit_head: bool = False,
                       head: str = "head") -> dict[str, Any]:
  """The model's freshly initialised variables with every loaded value put in, for fine-tuning.

  The classifier (the top-level submodule `head` of each collection) is taken from `init_variables` when
  any of its variables differs in shape or presence from the loaded ones (another class count or head
  design) and reinit_head_if_mismatch is True. Everything else must match exactly.

  Args:
    init_variables: {'params', 'batch_stats'} of the model to fine-tune (from model.init).
    loaded_variables: the output of `load_params`.
    reinit_head_if_mismatch: keep the initialised head where the loaded one does not fit; if False, raise.
    reinit_head: keep the initialised head even where the loaded one fits (new classes, as many as before).
    head: name of the classifier submodule.

  Returns:
    Nested dicts with init_variables' structure: loaded values (numpy, cast to the initialised dtypes)
    except for a re-initialised head (the initialised values).

  Raises:
    ValueError: naming the first variable that is missing, extra or of another shape (with both shapes).
  """
  init, loaded = _flat(init_variables), _flat(loaded_variables)

  def in_head(path: tuple[str, ...]) -> bool:
    return len(path) > 1 and path[1] == head

  def name(path: tuple[str, ...]) -> str:
    return "/".join(path)

  body = trees.differences({p: v for p, v in init.items() if not in_head(p)},
                            {p: v for p, v in loaded.items() if not in_head(p)})
  if body:
    kind, path = body[0]
    if kind == "missing":
      raise ValueError(f"'{name(path)}' (shape {np.shape(init[path])}) of the model is not in the loaded weights. "
                       "They come from another architecture; check the model name and knobs.")
    if kind == "different":
      raise ValueError(f"'{name(path)}' has shape {np.shape(loaded[path])} in the loaded weights but "
                       f"{np.shape(init[path])} in the model; check the model name and knobs (width, variant...).")
    raise ValueError(f"'{name(path)}' (shape {np.shape(loaded[path])}) of the loaded weights is not in the model. "
                     "They come from another architecture; check the model name and knobs.")
  merged = {path: _like(loaded[path], value) for path, value in init.items() if not in_head(path)}

  init_head = {p: v for p, v in init.items() if in_head(p)}
  loaded_head = {p: v for p, v in loaded.items() if in_head(p)}
  mismatch = None
  for path in sorted(set(init_head) | set(loaded_head)):
    init_shape = np.shape(init_head[path]) if path in init_head else "absent"
    loaded_shape = np.shape(loaded_head[path]) if path in loaded_head else "absent"
    if init_shape != loaded_shape:
      mismatch = (path, loaded_shape, init_shape)
      break
  if reinit_head:
    logging.info("Re-initialising '%s' (reinit_head).", head)
    merged.update(init_head)
  elif mismatch is None:
    merged.update({p: _like(loaded_head[p], v) for p, v in init_head.items()})
  elif reinit_head_if_mismatch:
    path, loaded_shape, init_shape = mismatch
    logging.warning("Re-initialising '%s': '%s' has shape %s in the loaded weights but %s in the model.", head,
                    name(path), loaded_shape, init_shape)
    merged.update(init_head)
  else:
    path, loaded_shape, init_shape = mismatch
    raise ValueError(f"'{name(path)}' has shape {loaded_shape} in the loaded weights but {init_shape} in the "
                     "model (another class count?); pass reinit_head_if_mismatch=True to re-initialise the head.")

  out: dict[str, Any] = {collection: {} for collection in init_variables}
  for path in init:  # rebuild nested dicts in the model's order
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = merged[path]
  return out
