"""Checkpoints: Orbax saves and restores of a run's train state, retention, and preemption.

A run's checkpoint directory (by convention `<workdir>/checkpoints`, see `SUBDIR`) holds one directory per
committed step::

  <directory>/<step>/state/                  the train state (an Orbax PyTree checkpoint)
  <directory>/<step>/meta/                   small JSON host metadata (step, data position, ...)
  <directory>/<step>/commit_success.txt      written by Orbax just before the step is committed
  <directory>/<step>/_CHECKPOINT_METADATA    Orbax's step metadata (commit timestamp)
  <directory>/<step>.orbax-checkpoint-tmp/   a save in progress, or one killed mid-write: never read

Guarantees:
- Atomic commits. Orbax writes every step into `<step>.orbax-checkpoint-tmp` and renames it to `<step>` only
  once everything, including `commit_success.txt`, is on disk. `complete_steps` accepts a step directory only
  if it also holds the commit marker and the step metadata, so a half-written or hand-copied directory is
  never taken as the latest checkpoint nor restored. Incomplete step directories found when a `Checkpointer`
  starts are renamed to `<step>.incomplete` (kept for inspection), so that Orbax's retention and save logic
  never count them; Orbax deletes its own stale temporary directories at the same moment.
- Old checkpoints are deleted only after a newer one has been committed, so a kill during a deletion can at
  worst leave an older, partly deleted step behind (set aside as above if its commit files went first), never
  a broken latest one.
- Topology independence. `restore` takes the target shardings from its `abstract_state` argument, so a
  checkpoint written on 4 devices restores onto 2 or 1 and the other way round.

Preemption. `install_sigterm_handler` makes a SIGTERM set a flag instead of killing the process, and the
training loop asks `preemption_requested(step)` after every step; when it answers True the loop saves that
step and returns. A run of several processes must stop at the same step on every process:
- With `jax.distributed` initialised and JAX's preemption service enabled (JAX's default), JAX itself catches
  SIGTERM and agrees on a step through `reached_preemption_sync_point`; no Python handler is installed then,
  because it would replace JAX's native one.
- Otherwise every process polls its own flag, and several processes agree on it through an all-gather of one
  integer every `agree_every_steps` steps. The all-gather is tiny, but it blocks the host until every process
  has reached that step, which stops the host from dispatching ahead; doing it every 10 steps keeps that cost
  negligible and still leaves ample time inside a typical 30 s preemption grace period.
"""
from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers as policies

from resnet_jax import files, trees

# Conventional checkpoint directory inside a workdir (resnet_jax.files.CHECKPOINT_DIR).
SUBDIR = files.CHECKPOINT_DIR
# Items of one checkpoint step.
STATE = "state"
META = "meta"
# Orbax writes these into a step directory before committing it; a step without them is incomplete.
COMMIT_MARKER = ocp.path.atomicity.COMMIT_SUCCESS_FILE
STEP_METADATA = "_CHECKPOINT_METADATA"
# Orbax's prefix-free step names ('0', '1200'); anything else (temporary or set-aside directories) is no step.
_STEP_NAME = re.compile(r"^(0|[1-9]\d*)$")


# ----------------------------------------------------------------------------------------------------------
# Finding complete checkpoints on disk.


def as_path(directory: os.PathLike | str) -> epath.Path:
  """An epath for `directory`; local paths are made absolute so the run does not depend on the cwd."""
  directory = os.fspath(directory)
  if "://" not in directory:
    directory = os.path.abspath(directory)
  return epath.Path(directory)


def is_complete(step_dir: os.PathLike | str) -> bool:
  """Whether `step_dir` is a committed checkpoint (or a `save_params` directory)."""
  step_dir = epath.Path(step_dir)
  return all((step_dir / name).exists() for name in (COMMIT_MARKER, STEP_METADATA, STATE))


def complete_steps(directory: os.PathLike | str) -> list[int]:
  """Sorted steps of the committed checkpoints in `directory` (empty if there is none or no directory).

  Temporary (`<step>.orbax-checkpoint-tmp`) and incomplete step directories are left out. This reads the
  disk, so a save still in flight is not listed until it has been committed.
  """
  directory = as_path(directory)
  if not directory.is_dir():
    return []
  return sorted(
      int(child.name)
      for child in directory.iterdir()
      if _STEP_NAME.match(child.name) and child.is_dir() and is_complete(child))


def _set_aside_incomplete(directory: epath.Path) -> None:
  """Renames step directories that were never committed, so Orbax neither counts nor retains them.

  On a local disk Orbax's rename makes this impossible for its own saves; it happens on file systems without
  an atomic rename and with directories copied by hand. They are kept (renamed) rather than deleted because
  they may be the only copy of someone's data.
  """
  if not directory.is_dir():
    return
  for child in directory.iterdir():
    if _STEP_NAME.match(child.name) and child.is_dir() and not is_complete(child):
      target = child.parent / f"{child.name}.incomplete"
      n = 1
      while target.exists():
        target = child.parent / f"{child.name}.incomplete-{n}"
        n += 1
      logging.warning("Checkpoint directory %s was never committed (no %s or %s); renaming it to %s.",
                      child, COMMIT_MARKER, STEP_METADATA, target.name)
      child.rename(target)


# ----------------------------------------------------------------------------------------------------------
# Comparing a checkpoint's tree with the tree a caller wants.


def _spec(leaf: Any) -> tuple[tuple[int, ...], Any]:
  """(shape, dtype or None) of a live array, a ShapeDtypeStruct or Orbax's metadata of a saved one."""
  return trees.shape(leaf), getattr(leaf, "dtype", None)


def _same_dtype(a: Any, b: Any) -> bool:
  if a is None or b is None:
    return True
  try:
    return np.dtype(a) == np.dtype(b)
  except TypeError:  # dtypes numpy does not know (e.g. PRNG key dtypes)
    return str(a) == str(b)


def _same_spec(a: Any, b: Any) -> bool:
  return a[0] == b[0] and _same_dtype(a[1], b[1])


def _check_same_tree(saved: Any, wanted: Any, where: str) -> None:
  """Raises ValueError naming the first leaf where `wanted` and the checkpoint `saved` disagree (`trees.flatten`
  names both the same way, so a live train state and a checkpoint's metadata tree compare directly)."""
  saved_specs = {p: _spec(leaf) for p, leaf in trees.flatten(saved).items()}
  wanted_specs = {p: _spec(leaf) for p, leaf in trees.flatten(wanted).items()}
  found = trees.differences(wanted_specs, saved_specs, _same_spec)
  if not found:
    return
  kind, path = found[0]
  name = "/".join(path)
  if kind == "missing":
    raise ValueError(
        f"'{name}' (shape {wanted_specs[path][0]}) is not in the checkpoint {where}. The train state's structure "
        "differs from the one that was saved: restore with the same model, optimizer and config as the run that "
        "wrote it.")
  if kind == "different":
    (saved_shape, saved_dtype), (shape, dtype) = saved_specs[path], wanted_specs[path]
    raise ValueError(
        f"'{name}' has shape {saved_shape} and dtype {saved_dtype} in the checkpoint {where}, but the "
        f"target has shape {shape} and dtype {dtype}. Restore with the same model and config as the run "
        "that wrote it (use init_from with merge_for_finetune to change the head).")
  raise ValueError(
      f"The checkpoint {where} has '{name}' (shape {saved_specs[path][0]}), which the target train "
      f"state lacks ({len(found)} such leaves). Restore with the same model, optimizer and config as the run "
      "that wrote it.")


def _check_has_shardings(abstract_state: Any) -> None:
  """The target shardings are what makes a restore topology-independent: insist on them."""
  for path, leaf in trees.flatten(abstract_state).items():
    if hasattr(leaf, "shape") and getattr(leaf, "sharding", None) is None:
      name = "/".join(path)
      raise ValueError(
          f"abstract_state leaf '{name}' has no sharding. Give every leaf its target sharding, e.g. "
          "jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)), or jax.eval_shape the "
          "state initialiser under jit with out_shardings.")


def state_metadata(step_dir: epath.Path) -> Any:
  """The tree of the `state` item of a step directory, with shapes and dtypes but no data."""
  return ocp.PyTreeCheckpointHandler().metadata(step_dir / STATE).tree


def _check_json(meta: Mapping[str, Any]) -> dict[str, Any]:
  if not isinstance(meta, Mapping):
    raise ValueError(f'meta must be a dict of JSON values (e.g. {{"step": 100}}), got {type(meta).__name__}.')
  try:
    json.dumps(dict(meta))
  except TypeError as e:
    raise ValueError(f"meta must hold only JSON values (int, float, str, list, dict); {e}. Convert numpy or "
                     "jax scalars with int() / float().") from e
  return dict(meta)


# ----------------------------------------------------------------------------------------------------------
# Saving and restoring a run's train state.


class Checkpointer:
  """Periodic, asynchronous, atomic checkpoints of a train state on Orbax's CheckpointManager.

  Every process of a run must make the same calls in the same order (Orbax synchronises them).

  Typical use by a training loop::

    checkpoint.install_sigterm_handler()
    with checkpoint.Checkpointer(f'{workdir}/checkpoints', save_every_steps=1000, keep=3) as ckpt:
      step = 0
      if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(None, abstract_state)
        step = meta['step']
      while step < num_steps:
        state = train_step(state, next(batches))
        step += 1
        stop = checkpoint.preemption_requested(step)
        ckpt.save(step, state, {'step': step}, force=stop or step == num_steps)
        if stop:
          break
  """

  def __init__(self,
               directory: os.PathLike | str,
               *,
               save_every_steps: int,
               keep: int | None,
               keep_every_steps: int | None = None,
               async_save: bool = True,
               read_only: bool = False):
    """Opens (creating if needed) the checkpoint directory of a run.

    Args:
      directory: the run's checkpoint directory (conventionally `<workdir>/checkpoints`); local or any
        path etils understands (gs://...).
      save_every_steps: `should_save` is True on positive multiples of this.
      keep: how many of the most recent checkpoints to keep; None keeps all.
      keep_every_steps: also keep, forever, every checkpoint whose step is a multiple of this (a multiple of
        save_every_steps); None keeps only the most recent ones.
      async_save: write in a background thread; `save` then blocks only to copy the arrays to host memory.
      read_only: only restore: nothing is created, renamed or deleted (evaluation, prediction, lesion studies).

    Raises:
      ValueError: on non-positive counts, or keep_every_steps not a multiple of save_every_steps.
    """
    if not isinstance(save_every_steps, int) or save_every_steps < 1:
      raise ValueError(f"save_every_steps must be a positive int, got {save_every_steps!r}.")
    if keep is not None and (not isinstance(keep, int) or keep < 1):
      raise ValueError(f"keep must be a positive int (or None to keep every checkpoint), got {keep!r}.")
    if keep_every_steps is not None and (not isinstance(keep_every_steps, int) or keep_every_steps < 1 or
                                         keep_every_steps % save_every_steps):
      raise ValueError(f"keep_every_steps must be None or a positive multiple of save_every_steps "
                       f"({save_every_steps}), got {keep_every_steps!r}; otherwise no saved step is kept.")
    self._directory = as_path(directory)
    self._save_every_steps = save_every_steps
    if jax.process_index() == 0:
      _set_aside_incomplete(self._directory)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("resnet_jax.checkpoint.set_aside_incomplete")
    keep_policies = [policies.LatestN(keep)]
    if keep_every_steps is not None:
      keep_policies.append(policies.EveryNSteps(keep_every_steps))
    options = ocp.CheckpointManagerOptions(
        # `save` decides itself (see should_save); Orbax's default would also save whenever none exists.
        save_decision_policy=policies.FixedIntervalPolicy(save_every_steps),
        preservation_policy=policies.AnyPreservationPolicy(keep_policies),
        # A kill during a save leaves `<step>.orbax-checkpoint-tmp`; remove such leftovers at start.
        cleanup_tmp_directories=not read_only,
        enable_async_checkpointing=async_save,
        read_only=read_only,
        create=not read_only,
    )
    self._manager = ocp.CheckpointManager(self._directory, options=options, item_names=(STATE, META))

  @property
  def directory(self) -> epath.Path:
    return self._directory

  def should_save(self, step: int) -> bool:
    """True on positive multiples of save_every_steps that have not been saved yet."""
    return step > 0 and step % self._save_every_steps == 0 and step not in self._manager.all_steps()

  def save(self, step: int, state: Any, meta: Mapping[str, Any] | None = None, *, force: bool = False) -> bool:
    """Starts saving `state` and `meta` as checkpoint `step` if `should_save(step)` or `force`.

    Returns once the arrays are copied to host memory (so `state` may then be donated or deleted); with
    async_save the write and commit go on in the background, until `wait`, `close` or the next `save`.
    A step that is already saved is not saved again.

    Args:
      step: the number of optimizer steps `state` has taken.
      state: a pytree of jax.Arrays (sharded or replicated on any mesh) and scalars.
      meta: small JSON host metadata, e.g. {'step': step, 'data_position': ...}; None saves {'step': step}.
      force: save even if `step` is not a multiple of save_every_steps (preemption, end of training).

    Returns:
      Whether a save was started.
    """
    if not (force or self.should_save(step)):
      return False
    if step in self._manager.all_steps():
      logging.info("Checkpoint of step %d already exists in %s; not saving it again.", step, self._directory)
      return False
    meta = _check_json({"step": step} if meta is None else meta)
    return self._manager.save(
        step,
        args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}),
        force=True)

  def wait(self) -> None:
    """Blocks until every started save is committed (and old checkpoints deleted)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases Orbax's threads."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def steps(self) -> list[int]:
    """Steps of the committed checkpoints on disk, sorted."""
    return complete_steps(self._directory)

  def latest_step(self) -> int | None:
    """The latest committed step on disk, or None. A save still in flight is not counted."""
    steps = self.steps()
    return steps[-1] if steps else None

  def restore(self, step: int | None, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
    """Restores checkpoint `step` (None: the latest committed one) onto the target shardings.

    Args:
      step: a committed step, or None for the latest.
      abstract_state: the train state's tree of jax.ShapeDtypeStruct (or arrays), each with the sharding it
        should be restored with; the mesh may differ from the one that saved the checkpoint.

    Returns:
      (state, meta): the restored tree (same structure as abstract_state) and the JSON metadata.

    Raises:
      FileNotFoundError: no committed checkpoint (for that step).
      ValueError: abstract_state lacks shardings, or its structure, shapes or dtypes differ from the
        checkpoint's (the message names the first differing leaf).
    """
    steps = self.steps()
    if step is None:
      if not steps:
        raise FileNotFoundError(f"No committed checkpoint in {self._directory}; nothing to restore.")
      step = steps[-1]
    elif step not in steps:
      raise FileNotFoundError(f'No committed checkpoint of step {step} in {self._directory}; committed steps: '
                              f'{steps or "none"}.')
    _check_has_shardings(abstract_state)
    step_dir = self._directory / str(step)
    _check_same_tree(state_metadata(step_dir), abstract_state, f"{step_dir}")
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}))
    return restored[STATE], dict(restored[META])


# ----------------------------------------------------------------------------------------------------------
# Preemption.

_sigterm_received = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
  del frame
  if _sigterm_received.is_set():
    # A second SIGTERM means "now": fall back to the default action (terminate). A save in flight is lost,
    # which is safe because it was never committed.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return
  _sigterm_received.set()
  logging.warning("SIGTERM received: will save a checkpoint and stop at the next agreed step.")


def _jax_preemption_service_active() -> bool:
  """Whether JAX's coordination service handles SIGTERM and agrees on a sync step across processes."""
  return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


def install_sigterm_handler() -> bool:
  """Makes SIGTERM request a checkpoint-and-stop (see `preemption_requested`) instead of killing at once.

  Call from the main thread, after `jax.distributed.initialize` if the run uses it. A second SIGTERM kills
  the process as usual.

  Returns:
    True if a Python handler was installed; False where JAX's preemption service already owns SIGTERM
    (jax.distributed initialised with the service on): replacing JAX's native handler would blind it.
  """
  if _jax_preemption_service_active():
    logging.info("JAX preemption service active: SIGTERM is left to it (reached_preemption_sync_point).")
    return False
  signal.signal(signal.SIGTERM, _on_sigterm)
  return True


def _any_process(flag: bool) -> bool:
  """Logical OR of `flag` over all processes (every process must call this at the same step)."""
  return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).any())


def preemption_requested(step: int, *, agree_every_steps: int = 10) -> bool:
  """Whether the run should save `step` and stop, with the same answer on every process.

  Call after every training step, on every process, with the step just completed.

  Args:
    step: the step just completed.
    agree_every_steps: with several processes and no JAX preemption service, the SIGTERM flags are
      combined (one tiny all-gather) only on multiples of this, and the answer is False in between.

  Returns:
    True when JAX's preemption sync point is reached at `step`, or a SIGTERM was received (by any
    process, once agreed).
  """
  if _jax_preemption_service_active():
    try:
      return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the service was not started after all: fall back to the flag
      pass
  seen = _sigterm_received.is_set()
  if jax.process_count() == 1:
    return seen
  if step % agree_every_steps:
    return False
  return _any_process(seen)
