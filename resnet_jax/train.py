"""The training engine: `train_and_evaluate(config, workdir)`, read top to bottom.

Sections: Set up devices -> Input pipeline -> Model -> Optimizer -> Train state -> Load checkpoint -> Update step ->
Evaluation -> Train loop. The step functions are pure and written for one device's slice of the batch; all
cross-device communication is explicit collectives over `parallel.AXIS`. `resnet_jax.parallel` maps them over every
device with `jax.shard_map` (default) or `jax.pmap`.
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from resnet_jax import checkpoint as ckpt_lib
from resnet_jax import distributed, files, finetune, models, optim, parallel, reporting, workdir_lock
from resnet_jax import flops as flops_lib
from resnet_jax import metrics as metrics_lib
from resnet_jax import mixing as mixing_lib
from resnet_jax.data import dataset_info

if TYPE_CHECKING:  # The engine runs without ml_collections (accelerator images may lack it).
  import ml_collections

AXIS = parallel.AXIS
_MIX_STREAM = 0x4D4958  # Folded into a micro-batch's dropout key for its mixing draws.


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. A plain pytree: checkpointed as a whole."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any  # None unless config.optimizer.ema_decay is set; evaluation then uses it.

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation, *, ema: bool) -> TrainState:
    """Step 0: the model's variables {'params', 'batch_stats'}, a fresh optimizer state, the EMA if `ema`."""
    params = variables["params"]
    return cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables["batch_stats"],
               opt_state=tx.init(params), ema_params=params if ema else None)


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN or infinite loss."""


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
def create_model(config: ml_collections.ConfigDict, num_classes: int, *, axis_name: str | None = None,
                 **extra):
  """The network of `config.model` (its name and every knob it sets; None keeps the model default).

  `axis_name` is the named batch axis BatchNorm synchronises over (the training model's, when
  `config.sync_batch_stats`); without one, BatchNorm's device groups (`bn_axis_index_groups`) do not apply.
  """
  knobs = {k: v for k, v in config.model.items() if k != "name"}
  if axis_name is None:
    knobs["bn_axis_index_groups"] = None
  knobs.update(extra)
  return models.create(config.model.name, num_classes=num_classes, dtype=jnp.dtype(config.dtype),
                       bn_axis_name=axis_name, **knobs)


def init_variables(model, rng: jax.Array, image_shape) -> dict:
  """{'params', 'batch_stats'} for one example of `image_shape` (H, W, C)."""
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init({"params": rng, "dropout": rng}, x, train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


# ----------------------------------------------------------------------------------------------------------------
# Update step (per device; `batch` is this device's slice)
# ----------------------------------------------------------------------------------------------------------------
def train_step(state: TrainState, batch: dict, *, model, tx, rng: jax.Array, label_smoothing: float,
               ema_decay: float | None, frozen_backbone: bool = False, loss: str = "softmax_xent",
               bce_target_threshold: float | None = None, mixing: mixing_lib.Mixing = mixing_lib.Mixing(),
               grad_accum_steps: int = 1):
  """One update on one device's slice; gradients and BatchNorm statistics are averaged over `AXIS`.

  The slice is mixed (mixup / CutMix, `mixing`) and trained against soft targets with `loss`; training top-1 counts
  the dominant label of each mixed example. With `grad_accum_steps` = k, the slice is split into k consecutive
  micro-batches whose gradients are summed on the device, one after the other (activations of one micro-batch in
  memory), and averaged over devices once per update; BatchNorm normalises each micro-batch with its own statistics
  and updates its running averages k times (the one difference from a k times larger batch).

  With `frozen_backbone` (a linear probe) everything but the head runs in inference mode, with its running
  BatchNorm statistics, so the head trains on the same features evaluation gives it; the backbone gets no gradient
  and its statistics stay as they are (the optimizer leaves its parameters unchanged too, see `build`).
  """
  # Fresh dropout noise per step and per device, derived (not stored) so a resumed run draws the same noise.
  step_rng = jax.random.fold_in(jax.random.fold_in(rng, state.step), jax.lax.axis_index(AXIS))
  soft = mixing.enabled or loss != "softmax_xent"

  def micro_step(batch_stats, micro, key):
    """(gradients, BatchNorm statistics, metric sums) of one micro-batch."""
    images, labels = micro["image"], micro["label"]
    if soft:
      images, targets, labels, _ = mixing_lib.mix(jax.random.fold_in(key, _MIX_STREAM), images, labels,
                                                  model.num_classes, mixing, label_smoothing)

    def loss_fn(params):
      if frozen_backbone:
        params = {k: v if k == "head" else jax.lax.stop_gradient(v) for k, v in params.items()}
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                    train_backbone=not frozen_backbone, rngs={"dropout": key},
                                    mutable=["batch_stats"])
      if soft:
        per_example = metrics_lib.training_loss(loss, logits, targets, bce_target_threshold)
      else:  # Kept as it always was, so that default training stays bitwise the same.
        per_example = metrics_lib.cross_entropy(logits, labels, label_smoothing)
      return per_example.mean(), (logits, updates["batch_stats"], per_example)

    (_, (logits, new_stats, per_example)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    if soft:
      sums = metrics_lib.classification_sums(logits, labels, loss=per_example)
    else:
      sums = metrics_lib.classification_sums(logits, labels, label_smoothing=label_smoothing)
    return grads, new_stats, sums

  if grad_accum_steps == 1:
    grads, batch_stats, sums = micro_step(state.batch_stats, batch, step_rng)
  else:
    micro = jax.tree.map(lambda x: x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]),
                         batch)

    def accumulate(carry, index):
      grads, batch_stats, sums = carry
      more = micro_step(batch_stats, jax.tree.map(lambda x: x[index], micro), jax.random.fold_in(step_rng, index))
      return (jax.tree.map(jnp.add, grads, more[0]), more[1], jax.tree.map(jnp.add, sums, more[2])), None

    first = micro_step(state.batch_stats, jax.tree.map(lambda x: x[0], micro), jax.random.fold_in(step_rng, 0))
    (grads, batch_stats, sums), _ = jax.lax.scan(accumulate, first, jnp.arange(1, grad_accum_steps))
    grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
  # Equal per-device batches, so the mean of per-device means is the global mean.
  grads = jax.lax.pmean(grads, AXIS)
  # With synchronised BatchNorm the running statistics already agree; otherwise average the per-device ones.
  batch_stats = state.batch_stats if frozen_backbone else jax.lax.pmean(batch_stats, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  ema_params = state.ema_params
  if ema_decay is not None:
    ema_params = optim.ema_update(ema_params, params, ema_decay)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
                            ema_params=ema_params)
  return new_state, metrics_lib.psum(sums, AXIS)


def eval_variables(state: TrainState) -> dict:
  """The variables a run is evaluated with: the EMA of its parameters where it keeps one, otherwise its parameters,
  with its BatchNorm statistics. (Evaluation, lesions and predictions all take them from here.)"""
  params = state.params if state.ema_params is None else state.ema_params
  return {"params": params, "batch_stats": state.batch_stats}


def eval_step(state: TrainState, batch: dict, *, model, probabilities: bool = False):
  """Masked (sum, count) metrics of one device's slice of an evaluation batch, summed over `AXIS`.

  Besides loss and accuracy it measures each block's residual-branch signal: the standard deviation of the branch
  output per example, averaged over examples (He et al. 2015, Fig. 7). A block skipped by `lesion_blocks` sows zeros,
  so its signal is logged as 0. With `probabilities`, the same forward pass also gives every example's softmax
  probabilities, label and mask, gathered over `AXIS`: the output is then (sums, rows).
  """
  logits, inter = model.apply(eval_variables(state), batch["image"], train=False, mutable=["intermediates"])
  sums = metrics_lib.classification_sums(logits, batch["label"], batch["mask"])
  mask = batch["mask"].astype(jnp.float32)
  for path, branch in branch_outputs(inter.get("intermediates", {})).items():
    std = jnp.std(branch.astype(jnp.float32).reshape(branch.shape[0], -1), axis=1)
    sums[f"signal/{path}"] = (jnp.sum(std * mask), jnp.sum(mask))
  sums = metrics_lib.psum(sums, AXIS)
  if not probabilities:
    return None, sums
  rows = {"probabilities": jax.nn.softmax(logits.astype(jnp.float32), axis=-1), "label": batch["label"],
          "mask": batch["mask"]}
  return None, (sums, jax.tree.map(lambda x: jax.lax.all_gather(x, AXIS, tiled=True), rows))


def branch_outputs(intermediates) -> dict[str, jax.Array]:
  """{'stage1/block0': residual-branch output, ...} from the model's sown 'intermediates' collection."""
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(intermediates), sep="/")
  return {path.rsplit("/", 1)[0]: values[0] for path, values in flat.items() if path.endswith("/branch")}


def make_train_fn(config: ml_collections.ConfigDict, parts: Parts, strategy, rng):
  """`train_step` of `parts` as `config` sets it up, mapped over every device by `strategy` (state donated): what
  the trainer runs and the benchmark times."""
  return strategy.map_step(functools.partial(
      train_step, model=parts.model, tx=parts.tx, rng=rng, label_smoothing=config.label_smoothing,
      ema_decay=config.optimizer.ema_decay, frozen_backbone=config.freeze_backbone, loss=config.loss,
      bce_target_threshold=config.bce_target_threshold, mixing=mixing_lib.Mixing(**config.mixing),
      grad_accum_steps=config.grad_accum_steps))


def make_eval_fn(model, strategy, *, probabilities: bool = False):
  """`eval_step` of `model`, mapped over every device by `strategy` (compiled on first use, then reused)."""
  return strategy.map_step(functools.partial(eval_step, model=model, probabilities=probabilities),
                           donate_state=False)


def eval_outputs(state, eval_fn, strategy, config: ml_collections.ConfigDict):
  """`eval_fn`'s output (without the state) for every batch of the exact evaluation of `config.data.eval_split`:
  each example once, padding masked."""
  from resnet_jax import data

  for host_batch in data.eval_iterator(config.data, global_batch_size=config.eval_batch_size):
    yield eval_fn(state, strategy.put_batch(host_batch))[1]


def total_metrics(all_sums) -> dict[str, float]:
  """The finalised metrics of a sequence of per-batch (sum, count) collections, added in order on the devices."""
  totals = None
  for sums in all_sums:
    totals = metrics_lib.merge(totals, sums)
  return metrics_lib.finalize(jax.device_get(totals))


def evaluate(state, eval_fn, strategy, config: ml_collections.ConfigDict) -> dict[str, float]:
  """The finalised metrics of `eval_fn` over the exact evaluation of `config.data.eval_split`."""
  return total_metrics(eval_outputs(state, eval_fn, strategy, config))


# ----------------------------------------------------------------------------------------------------------------
# Set-up shared by training, evaluation and the tools
# ----------------------------------------------------------------------------------------------------------------
class Parts(NamedTuple):
  """What a config resolves to, before any array is created."""
  info: Any  # resnet_jax.data.DatasetInfo
  num_classes: int
  steps_per_epoch: int
  plan: optim.StepPlan
  model: Any  # Training model: BatchNorm statistics over AXIS when config.sync_batch_stats.
  eval_model: Any  # The same network without a named axis (inference uses running statistics).
  schedule: optax.Schedule
  tx: optax.GradientTransformation
  make_state: Callable[[dict], TrainState]  # variables -> initial TrainState


def build(config: ml_collections.ConfigDict, info) -> Parts:
  """Resolves `config` against the dataset `info`: step plan, models, schedule, optimizer, state constructor."""
  num_classes = config.data.num_classes or info.num_classes
  steps_per_epoch = dataset_info.steps_per_epoch(info.num_train, config.batch_size)
  plan = optim.plan_steps(config, steps_per_epoch)
  model = create_model(config, num_classes, axis_name=AXIS if config.sync_batch_stats else None)
  eval_model = create_model(config, num_classes)
  schedule = optim.create_schedule(config.schedule, plan, global_batch_size=config.batch_size)
  tx = optim.create_optimizer(config.optimizer, schedule)
  if config.freeze_backbone:
    shapes = jax.eval_shape(functools.partial(init_variables, eval_model, image_shape=info.image_shape),
                            jax.random.PRNGKey(0))
    tx = optim.freeze_all_but(tx, shapes["params"], trainable_prefix="head")
  make_state = functools.partial(TrainState.create, tx=tx, ema=config.optimizer.ema_decay is not None)
  return Parts(info, num_classes, steps_per_epoch, plan, model, eval_model, schedule, tx, make_state)


# ----------------------------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------------------------
def check_model(config: ml_collections.ConfigDict) -> None:
  """Builds the config's network (no parameters, no data) so that a bad name or knob fails before any data work.

  Raises:
    ValueError: from the model's own validation (unknown name, impossible knob combination, ...).
  """
  create_model(config, config.data.num_classes or 10, axis_name=AXIS if config.sync_batch_stats else None)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the final eval metrics."""
  check_model(config)  # Before any data work: a bad name or knob fails in seconds.
  from resnet_jax import data  # Imports TensorFlow for the input pipeline; kept out of module import time.

  enable_compilation_cache(config.compilation_cache_dir)
  is_main = jax.process_index() == 0

  # -- Set up devices -------------------------------------------------------------------------------------------
  mesh = parallel.data_mesh()
  strategy = parallel.strategy(config.parallelism, mesh)
  distributed.validate_topology(config, jax.process_count(), jax.device_count())
  replicated = parallel.ShardMap(mesh).replicated

  # -- Input pipeline, model, optimizer, initial state ---------------------------------------------------------------
  # The built-in dataset (any of its builder configs) and class folders are prepared on first use: no download.
  data.prepare_on_first_use(config.data)
  parts = build(config, data.info(config.data))
  plan = parts.plan
  init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = jax.jit(functools.partial(init_variables, parts.eval_model, image_shape=parts.info.image_shape))(
      init_rng)
  if config.init_from:
    variables = finetune.merge_for_finetune(variables, finetune.load_params(config.init_from),
                                            reinit_head=config.reinit_head)
  state = jax.jit(parts.make_state, out_shardings=replicated)(variables)

  # -- Claim the workdir, load the checkpoint ---------------------------------------------------------------------
  lock = workdir_lock.WorkdirLock(workdir) if is_main else None
  if lock is not None:
    lock.acquire()  # A second trainer on the same workdir stops here, naming the first.
  checkpointer = reporter = None
  try:
    checkpointer = ckpt_lib.Checkpointer(
        f"{workdir}/{files.CHECKPOINT_DIR}", save_every_steps=plan.checkpoint_every, keep=config.keep_checkpoints,
        keep_every_steps=config.keep_checkpoint_every_steps)
    latest = checkpointer.latest_step()
    meta = {}
    if latest is not None:
      state, meta = checkpointer.restore(latest, abstract(state, replicated))
      logging.info("Resumed from the checkpoint of step %d in %s.", latest, workdir)
    start_step = int(state.step)
    start_position = _resume_position(meta, start_step, parts.steps_per_epoch)
    ckpt_lib.install_sigterm_handler()

    reporter = reporting.Reporter(workdir, total_steps=plan.total_steps, is_main=is_main, start_step=start_step)
    reporting.save_config(config, workdir, is_main=is_main)
    logging.info("Training %s on %s: %d steps (%d per epoch) on %d devices in %d processes, from step %d.",
                 config.model.name, config.data.name, plan.total_steps, parts.steps_per_epoch,
                 jax.device_count(), jax.process_count(), start_step)

    # -- Update step ----------------------------------------------------------------------------------------------
    p_train = make_train_fn(config, parts, strategy, dropout_rng)
    p_eval = make_eval_fn(parts.eval_model, strategy)

    def run_eval(state, step):
      if not parts.info.num_eval:  # Synthetic data has nothing to evaluate on.
        return {}
      results = evaluate(state, p_eval, strategy, config)
      reporter.write_eval(step, results)
      return results

    # -- Train loop -----------------------------------------------------------------------------------------------
    stream = data.train_stream(config.data, global_batch_size=config.batch_size, seed=config.seed,
                               start_step=start_step, start_position=start_position)
    # Each batch travels with where the input stream stands after it, which its step's checkpoint records.
    train_batches = parallel.prefetch(stream, lambda item: (strategy.put_batch(item[0]), item[1]))
    state = strategy.put_state(state)
    pending: list[tuple[int, Any]] = []  # (step, device metrics) not yet fetched: avoids a host sync per step.
    eval_results: dict[str, float] = {}
    window_start = time.perf_counter()
    step = start_step
    while step < plan.total_steps:
      batch, position = next(train_batches)
      if step == start_step:
        p_train, step_flops = compile_step(p_train, state, batch)
        reporter.set_step_flops(step_flops, dtype=config.dtype)
        window_start = time.perf_counter()
      state, sums = p_train(state, batch)
      step += 1
      pending.append((step, sums))
      reporter.maybe_profile(step, config.profile_steps, block_on=state)

      preempted = ckpt_lib.preemption_requested(step)
      last = step == plan.total_steps
      do_eval = last or (plan.eval_every and step % plan.eval_every == 0)
      do_save = last or preempted or checkpointer.should_save(step)
      if last or preempted or do_eval or do_save or step % config.log_every_steps == 0:
        # Fetching the metrics waits for the step; it also guards every checkpoint against non-finite state.
        window = _fetch_finite(pending, checkpointer)
        now = time.perf_counter()
        reporter.write_train(step, metrics_lib.finalize(window), lr=float(parts.schedule(step - 1)),
                             num_steps=len(pending), images=len(pending) * config.batch_size,
                             seconds=now - window_start)
        pending, window_start = [], now
      if do_eval:
        eval_results = run_eval(state, step)
        window_start = time.perf_counter()
      if do_save:
        # The data order is a function of the step (see resnet_jax.data); the position in the input stream, saved
        # too, also counts the corrupt records skipped, so that a resumed run reads exactly the same records.
        saved_state = strategy.get_state(state)
        _check_finite_state(saved_state, step, checkpointer)
        meta = {"step": step, "data_position": _gather_positions(position)}
        checkpointer.save(step, saved_state, meta, force=last or preempted)
      if preempted:
        logging.warning("Preemption: saved step %d; rerun the same command to resume from there.", step)
        return eval_results
    if start_step == plan.total_steps:  # Rerun of a finished run: report its final evaluation again.
      eval_results = run_eval(state, step)
    checkpointer.wait()  # The final checkpoint is committed before the run is marked done.
    if is_main:
      files.write_json(f"{workdir}/{files.DONE_FILE}", {"step": step, **eval_results})
  finally:
    if checkpointer is not None:
      checkpointer.close()  # Waits for any save in flight, also when a step raised.
    if reporter is not None:
      reporter.close()
    if lock is not None:
      lock.release()
  return eval_results


def abstract(tree, sharding):
  """The shapes and dtypes of `tree` placed on `sharding`: a restore target."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _gather_positions(position) -> list | None:
  """[[epoch, position], ...] of every process's input stream (see `data.train_stream`), None for synthetic data."""
  if position is None:
    return None
  if jax.process_count() == 1:
    return [list(position)]
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(np.asarray(position, np.int64))).tolist()


def _resume_position(meta: dict, start_step: int, steps_per_epoch: int) -> int | None:
  """Where this process's input stream resumes in the epoch of `start_step`, from the checkpoint's metadata.

  The position counts the records already read in that epoch, corrupt ones included: with it, a resumed run reads
  exactly the records the uninterrupted run would have. None (no position saved, another process count, or
  `start_step` opening a new epoch) lets the stream assume that no corrupt record was skipped.
  """
  positions = meta.get("data_position")
  if not positions or len(positions) != jax.process_count() or not start_step % steps_per_epoch:
    return None
  epoch, position = positions[jax.process_index()]
  return position if epoch == start_step // steps_per_epoch else None


def _fetch_finite(pending, checkpointer) -> dict:
  """Sums the (sum, count) metrics of `pending` steps on the host; raises on the first non-finite loss."""
  fetched = jax.device_get([sums for _, sums in pending])
  for (step, _), sums in zip(pending, fetched):
    loss_sum = float(np.asarray(sums["loss"][0]))
    if not math.isfinite(loss_sum):
      raise NonFiniteLossError(
          f"non-finite training loss ({loss_sum}) at step {step}; {_last_checkpoint(checkpointer)}. Lower the "
          "learning rate (config.schedule.base_lr), enable config.optimizer.grad_clip_norm, or check the input data.")
  return jax.tree.map(lambda *xs: np.sum(xs, axis=0), *fetched)


@jax.jit
def _all_finite(tree) -> jax.Array:
  flags = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(flags).all() if flags else jnp.bool_(True)


def _check_finite_state(state, step: int, checkpointer) -> None:
  """Raises before a non-finite state is saved. The loss of step k is computed before update k, so a finite loss
  does not vouch for the state it leaves behind."""
  if not bool(_all_finite(state)):
    raise NonFiniteLossError(
        f"non-finite parameters or optimizer state after step {step} (its loss was still finite); "
        f"{_last_checkpoint(checkpointer)}. Lower the learning rate (config.schedule.base_lr), enable "
        "config.optimizer.grad_clip_norm, or check the input data.")


def _last_checkpoint(checkpointer) -> str:
  checkpointer.wait()  # A save still in flight was of a finite state: count it.
  last = checkpointer.latest_step()
  return (f"the last checkpoint (step {last}) is finite and untouched" if last is not None
          else "no checkpoint was written")


def compile_step(step_fn, state, batch):
  """Compiles `step_fn` ahead of time (when it is jitted) and returns it with XLA's FLOP count per step."""
  if not hasattr(step_fn, "lower"):
    return step_fn, None
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  logging.info("Compiled the train step in %.1f s.", time.perf_counter() - start)
  return compiled, flops_lib.step_flops(compiled)


def enable_compilation_cache(directory: str | None) -> None:
  """Turns on JAX's persistent compilation cache so a relaunch does not recompile ('' or None disables it)."""
  if not directory:
    return
  path = os.path.expanduser(directory)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
