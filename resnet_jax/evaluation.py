"""Evaluating a run's checkpoint: restored once, evaluated exactly (evaluate, predict and lesion studies use it).

`evaluate_checkpoint(config, workdir)` gives a checkpoint's metrics on `config.data.eval_split`, every example once;
`checkpoint_evaluator` restores once and evaluates with model knobs changed (lesions); `restore_for_eval` gives the
state and the config's parts for tools that run their own step over it (predictions). All of them read the workdir
only, and evaluate with the trainer's own `train.eval_step`.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import jax

from resnet_jax import checkpoint as ckpt_lib
from resnet_jax import files, parallel, train

if TYPE_CHECKING:
  import ml_collections


def restore_for_eval(config: ml_collections.ConfigDict, workdir: str, step: int | None = None):
  """(state, parts) of a run's checkpoint (the latest when `step` is None), placed replicated on all devices.

  Reads only: nothing is created or changed in the workdir.

  Raises:
    FileNotFoundError: the workdir holds no committed checkpoint (of that step).
  """
  from resnet_jax import data

  directory = f"{workdir}/{files.CHECKPOINT_DIR}"
  steps = ckpt_lib.complete_steps(directory)
  if not steps or (step is not None and step not in steps):
    wanted = "" if step is None else f" of step {step}"
    raise FileNotFoundError(f"No committed checkpoint{wanted} in {directory} (committed steps: {steps or 'none'}): "
                            "a run saves one every config.checkpoint_every_steps steps, at the end and on SIGTERM.")
  parts = train.build(config, data.info(config.data))
  replicated = parallel.ShardMap(parallel.data_mesh()).replicated
  variables = jax.eval_shape(functools.partial(train.init_variables, parts.eval_model,
                                               image_shape=parts.info.image_shape), jax.random.PRNGKey(0))
  target = train.abstract(jax.eval_shape(parts.make_state, variables), replicated)
  with ckpt_lib.Checkpointer(directory, save_every_steps=1, keep=None, read_only=True) as checkpointer:
    state, _ = checkpointer.restore(step, target)
  return state, parts


class Evaluator(NamedTuple):
  """A restored checkpoint, ready to be evaluated as it is or with model knobs changed (`evaluate(**knobs)`)."""
  step: int
  eval_model: Any
  evaluate: Callable[..., dict[str, float]]


def checkpoint_evaluator(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> Evaluator:
  """Restores a run's checkpoint once; `evaluate(**knobs)` then evaluates it exactly on `config.data.eval_split`,
  with knob overrides such as `lesion_blocks=(3,)` applied to the network (none: the run's own network)."""
  state, parts = restore_for_eval(config, workdir, step)
  # restore_for_eval places the state replicated over all devices, the layout the shard_map strategy reads.
  strategy = parallel.ShardMap(parallel.data_mesh())

  def run(**knobs) -> dict[str, float]:
    model = train.create_model(config, parts.num_classes, **knobs) if knobs else parts.eval_model
    return train.evaluate(state, train.make_eval_fn(model, strategy), strategy, config)

  return Evaluator(int(state.step), parts.eval_model, run)


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                        **model_overrides) -> dict[str, float]:
  """Exact evaluation of a run's checkpoint on `config.data.eval_split`; knobs such as lesion_blocks may be set."""
  evaluator = checkpoint_evaluator(config, workdir, step)
  return {"step": evaluator.step, **evaluator.evaluate(**model_overrides)}
