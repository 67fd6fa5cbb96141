"""Optimizers, learning-rate schedules and the resolution of durations to steps.

Everything the training engine needs to turn `config.optimizer` and `config.schedule` into an
`optax.GradientTransformation`:

- `steps_from` / `plan_steps`: the one place where a duration written in epochs or in steps becomes a step
  count. A duration is a pair of config fields `{prefix}_epochs` / `{prefix}_steps` of which at most one may be set
  (`num_epochs`/`num_steps`, `warmup_epochs`/`warmup_steps`, `boundaries_epochs`/`boundaries_steps`,
  `eval_every_epochs`/`eval_every_steps`, `checkpoint_every_epochs`/`checkpoint_every_steps`).
- `create_schedule`: linear warmup from 0, then cosine, step, polynomial or constant, with the peak learning rate
  scaled linearly with the batch size (Goyal et al. 2017).
- `create_optimizer`: SGD (optionally Nesterov), LARS, AdamW and LAMB, with weight decay on kernels only and
  optional gradient clipping by global norm.
- `ema_update` (exponential moving average of parameters), `freeze_all_but` (train only a subtree, e.g. the
  head, for fine-tuning or linear probes) and `scale_backbone` (a learning-rate multiplier outside the head).
"""
from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from resnet_jax import trees


def _get(section: Any, name: str) -> Any:
  """`section.name` (a ConfigDict or any object with attributes): every field read here is declared, with its
  default, in configs/default.py."""
  try:
    return getattr(section, name)
  except (AttributeError, KeyError):
    raise AttributeError(f"The config has no field {name!r}; configs/default.py declares every field the engine "
                         "reads: start from its config.") from None


# ----------------------------------------------------------------------------------------------------------------
# Durations
# ----------------------------------------------------------------------------------------------------------------


def _to_steps(value: Any, name: str, steps_per_epoch: int | None, unit: str) -> int:
  """Converts one duration value given in `unit` ('epochs' or 'steps') to a non-negative step count."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(f"{name} must be a number, got {value!r}.")
  if value < 0:
    raise ValueError(f"{name} must be non-negative, got {value!r}.")
  if unit == "steps":
    if value != int(value):
      raise ValueError(f"{name} must be a whole number of steps, got {value!r}.")
    return int(value)
  # Fractional epochs are allowed (e.g. half an epoch of warmup); rounding rather than truncating keeps binary
  # floating point (0.29 * 100 == 28.999...) from losing a step.
  return int(round(value * steps_per_epoch))


def steps_from(section: Any, prefix: str, steps_per_epoch: int | None, *,
               required: bool = False) -> int | tuple[int, ...] | None:
  """Resolves the duration `{prefix}_epochs` / `{prefix}_steps` of a config section to steps.

  At most one of the two fields may be set (not None).
  Either may hold a number or a sequence of numbers (as for step-decay boundaries); a sequence resolves to a tuple.

  Args:
    section: a ConfigDict, mapping or object holding the fields.
    prefix: the common prefix, e.g. 'num', 'warmup', 'boundaries', 'eval_every'.
    steps_per_epoch: optimizer steps in one epoch; may be None when no field is given in epochs (e.g. synthetic
      data, which has no epochs).
    required: whether a missing duration is an error.

  Returns:
    The step count (int), a tuple of step counts, or None when neither field is set and `required` is False.

  Raises:
    ValueError: both fields are set, neither is set while required, a value is negative or not a whole number of
      steps, or a duration is given in epochs while `steps_per_epoch` is unknown.
  """
  epochs_name, steps_name = f"{prefix}_epochs", f"{prefix}_steps"
  epochs, steps = _get(section, epochs_name), _get(section, steps_name)
  if epochs is not None and steps is not None:
    raise ValueError(f"Both {epochs_name}={epochs!r} and {steps_name}={steps!r} are set: they give the same "
                     f"duration twice. Set one of them and set the other to None.")
  if epochs is None and steps is None:
    if required:
      raise ValueError(f"Neither {epochs_name} nor {steps_name} is set: set exactly one of them.")
    return None
  if steps is not None:
    name, value, unit = steps_name, steps, "steps"
  else:
    if not steps_per_epoch or steps_per_epoch <= 0:
      raise ValueError(f"{epochs_name}={epochs!r} is given in epochs, but the epoch length is unknown "
                       f"(steps_per_epoch={steps_per_epoch!r}). Set {steps_name} instead.")
    name, value, unit = epochs_name, epochs, "epochs"
  if isinstance(value, Sequence) and not isinstance(value, str):
    return tuple(_to_steps(v, name, steps_per_epoch, unit) for v in value)
  return _to_steps(value, name, steps_per_epoch, unit)


@dataclasses.dataclass(frozen=True)
class StepPlan:
  """All durations of a run, in optimizer steps.

  Attributes:
    total_steps: length of training.
    warmup_steps: length of the linear learning-rate warmup (0 for none).
    boundaries: steps at which the 'step' schedule multiplies the learning rate by its decay factor (may be empty).
    eval_every: evaluation interval, or None to evaluate only at the end.
    checkpoint_every: checkpoint interval, or None to leave it to the engine's default.
  """
  total_steps: int
  warmup_steps: int
  boundaries: tuple[int, ...]
  eval_every: int | None
  checkpoint_every: int | None


def _schedule_steps(schedule_config: Any, total_steps: int,
                    steps_per_epoch: int | None) -> tuple[int, tuple[int, ...]]:
  """Resolves and checks the warmup length and step-decay boundaries of a schedule config."""
  warmup = steps_from(schedule_config, "warmup", steps_per_epoch) or 0
  if not isinstance(warmup, int):
    raise ValueError(f"warmup_epochs/warmup_steps must be a single number, got {warmup!r} (in steps).")
  if warmup > total_steps:
    raise ValueError(f"The warmup ({warmup} steps) is longer than training ({total_steps} steps): "
                     f"shorten warmup_epochs/warmup_steps or train longer.")
  boundaries = steps_from(schedule_config, "boundaries", steps_per_epoch)
  if boundaries is None:
    boundaries = ()
  elif isinstance(boundaries, int):
    boundaries = (boundaries,)
  if list(boundaries) != sorted(set(boundaries)):
    raise ValueError(f"Step-decay boundaries must be strictly increasing, got {boundaries} (in steps).")
  for b in boundaries:
    if not warmup < b <= total_steps:
      raise ValueError(f"Step-decay boundary at step {b} must lie after the warmup ({warmup} steps) and not "
                       f"after the end of training ({total_steps} steps).")
  return warmup, boundaries


def _interval(section: Any, prefix: str, steps_per_epoch: int | None) -> int | None:
  every = steps_from(section, prefix, steps_per_epoch)
  if every is not None and (not isinstance(every, int) or every <= 0):
    raise ValueError(f"{prefix}_epochs/{prefix}_steps must resolve to a positive number of steps, got {every!r}.")
  return every


def plan_steps(config: Any, steps_per_epoch: int | None) -> StepPlan:
  """Resolves every duration of a training config to steps, rejecting ambiguous or inconsistent settings.

  Reads `config.num_epochs` / `config.num_steps` (exactly one must be set),
  `config.schedule.warmup_epochs` / `warmup_steps`, `config.schedule.boundaries_epochs` / `boundaries_steps`,
  `config.eval_every_epochs` / `eval_every_steps` and `config.checkpoint_every_epochs` / `checkpoint_every_steps`
  (at most one of each pair).

  Args:
    config: the training config.
    steps_per_epoch: optimizer steps per epoch of the training set (None when the data has no epochs).

  Returns:
    A `StepPlan`.

  Raises:
    ValueError: see `steps_from`; also a non-positive training length, a warmup longer than training, or
      step-decay boundaries that are not increasing or fall inside the warmup or after the end.
  """
  total = steps_from(config, "num", steps_per_epoch, required=True)
  if not isinstance(total, int) or total <= 0:
    raise ValueError(f"num_epochs/num_steps must resolve to a positive number of steps, got {total!r}.")
  warmup, boundaries = _schedule_steps(_get(config, "schedule"), total, steps_per_epoch)
  return StepPlan(
      total_steps=total,
      warmup_steps=warmup,
      boundaries=boundaries,
      eval_every=_interval(config, "eval_every", steps_per_epoch),
      checkpoint_every=_interval(config, "checkpoint_every", steps_per_epoch),
  )


# ----------------------------------------------------------------------------------------------------------------
# Learning-rate schedules
# ----------------------------------------------------------------------------------------------------------------


SCHEDULES = ("constant", "cosine", "polynomial", "step")


def scaled_learning_rate(base_lr: float, global_batch_size: int, reference_batch: int = 256) -> float:
  """The linear scaling rule: `base_lr` is the rate for `reference_batch` images per step."""
  if global_batch_size <= 0 or reference_batch <= 0:
    raise ValueError(f"Batch sizes must be positive, got global_batch_size={global_batch_size}, "
                     f"reference_batch={reference_batch}.")
  return base_lr * global_batch_size / reference_batch


def _cosine(peak: float, end: float, decay_steps: int) -> optax.Schedule:
  def schedule(step):
    progress = jnp.clip(step / decay_steps, 0.0, 1.0)
    return end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return schedule


def _step(peak: float, factor: float, boundaries: tuple[int, ...]) -> optax.Schedule:
  edges = jnp.asarray(boundaries)

  def schedule(step):
    # The new rate applies from the boundary step itself.
    return peak * factor ** jnp.sum(step >= edges)
  return schedule


def _main_schedule(name: str, cfg: Any, peak: float, decay_steps: int,
                   boundaries: tuple[int, ...]) -> optax.Schedule:
  """The schedule after warmup; its step count starts at 0 where the warmup ends."""
  end = float(cfg.end_lr)
  if name == "constant":
    return optax.constant_schedule(peak)
  if name == "cosine":
    return _cosine(peak, end, decay_steps)
  if name == "polynomial":
    power = float(cfg.power)
    return optax.polynomial_schedule(peak, end, power, decay_steps)
  # 'step': the boundaries arrive shifted to count from the end of the warmup, like the step given here.
  if not boundaries:
    raise ValueError("Schedule 'step' needs its decay points: set schedule.boundaries_epochs or "
                     "schedule.boundaries_steps.")
  return _step(peak, float(cfg.decay_factor), boundaries)  # Its range is checked by config.validate.


def create_schedule(schedule_config: Any, plan: StepPlan, *, global_batch_size: int) -> optax.Schedule:
  """Builds the learning-rate schedule: linear warmup from 0 to the peak, then the named decay.

  The peak is `base_lr * global_batch_size / reference_batch`. Decays:
    - 'cosine': half a cosine from the peak at the end of warmup to `end_lr` at `total_steps`.
    - 'step': the peak, multiplied by `decay_factor` at each boundary (the new rate applies from the boundary
      step itself; boundaries count from the start of training, not from the end of warmup).
    - 'polynomial': `end_lr + (peak - end_lr) * (1 - t / T) ** power` with t counted from the end of warmup and
      T = total_steps - warmup steps.
    - 'constant': the peak.

  Reads `name`, `base_lr`, `reference_batch`, `decay_factor` ('step' only), `end_lr` (an absolute rate, not
  scaled with the batch; 'cosine' and 'polynomial') and `power` ('polynomial' only), all declared in
  configs/default.py. The durations (training length, warmup, step-decay boundaries) are the plan's.

  Args:
    schedule_config: the `config.schedule` section.
    plan: the run's durations in steps (`plan_steps`).
    global_batch_size: images per optimizer step, summed over all devices and processes.

  Returns:
    An optax schedule: step -> learning rate.

  Raises:
    ValueError: unknown schedule name, missing base_lr, or inconsistent durations (see `plan_steps`).
  """
  name = schedule_config.name
  if name not in SCHEDULES:
    raise ValueError(f'Unknown schedule {name!r}: schedule.name must be one of {", ".join(SCHEDULES)}.')
  base_lr = schedule_config.base_lr
  if base_lr is None:
    raise ValueError("schedule.base_lr is not set: give the learning rate for reference_batch (256) images.")
  peak = scaled_learning_rate(float(base_lr), global_batch_size,
                              int(schedule_config.reference_batch))
  total_steps, warmup, boundaries = plan.total_steps, plan.warmup_steps, plan.boundaries
  # A zero-length decay (warmup as long as training) would divide by zero; it is never evaluated past its start.
  decay_steps = max(total_steps - warmup, 1)
  main = _main_schedule(name, schedule_config, peak, decay_steps, tuple(b - warmup for b in boundaries))
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


# ----------------------------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------------------------


def weight_decay_mask(params: Any) -> Any:
  """True for the leaves that get weight decay: kernels (conv and dense weights) only.

  BatchNorm scales and offsets and all biases are excluded: the "no bias decay" practice of large-batch ResNet
  recipes (Jia et al. 2018; He et al. 2019, "Bag of Tricks"; the MLPerf LARS reference). These parameters are few
  and decaying them mostly shrinks activations rather than regularising. The decision is made from each leaf's
  name, so it holds for any flax parameter tree.
  """
  return jax.tree_util.tree_map_with_path(lambda path, _: trees.key_str(path[-1]) == "kernel", params)


def _sgd(cfg: Any, schedule: optax.Schedule, mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  # The ResNet recipe's weight decay is L2 regularisation: wd * param is added to the gradient before momentum,
  # so its effective strength follows the learning-rate schedule (as in the paper and torchvision).
  momentum = float(cfg.momentum)
  return optax.chain(
      optax.add_decayed_weights(float(cfg.weight_decay), mask=mask),
      optax.sgd(schedule, momentum=momentum or None, nesterov=bool(cfg.nesterov)),
  )


def _lars(cfg: Any, schedule: optax.Schedule, mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  # BatchNorm parameters and biases get neither weight decay nor the layer-wise trust ratio (MLPerf reference).
  return optax.lars(
      schedule,
      weight_decay=float(cfg.weight_decay),
      weight_decay_mask=mask,
      trust_coefficient=float(cfg.trust_coefficient),
      trust_ratio_mask=mask,
      momentum=float(cfg.momentum),
      nesterov=bool(cfg.nesterov),
  )


def _eps(cfg: Any, published: float) -> float:
  # config.optimizer.eps = None means the value each optimizer's paper uses (declared so in configs/default.py).
  return float(published if cfg.eps is None else cfg.eps)


def _adamw(cfg: Any, schedule: optax.Schedule, mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  # Decoupled weight decay (Loshchilov & Hutter): lr * wd * param is subtracted after the Adam update.
  # `momentum` doubles as Adam's b1 (the decay of the first moment), so one config field serves every optimizer.
  return optax.adamw(
      schedule,
      b1=float(cfg.momentum),
      b2=float(cfg.b2),
      eps=_eps(cfg, 1e-8),
      weight_decay=float(cfg.weight_decay),
      mask=mask,
  )


def _lamb(cfg: Any, schedule: optax.Schedule, mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  return optax.lamb(
      schedule,
      b1=float(cfg.momentum),
      b2=float(cfg.b2),
      eps=_eps(cfg, 1e-6),
      weight_decay=float(cfg.weight_decay),
      mask=mask,
  )


OPTIMIZERS: dict[str, Callable[[Any, optax.Schedule, Callable[[Any], Any]], optax.GradientTransformation]] = {
    "sgd": _sgd,
    "lars": _lars,
    "adamw": _adamw,
    "lamb": _lamb,
}


def create_optimizer(optimizer_config: Any, schedule: optax.Schedule | float) -> optax.GradientTransformation:
  """Builds the optimizer named by `optimizer_config.name`, with optional gradient clipping.

  Weight decay is applied to kernels only (see `weight_decay_mask`). Its form depends on the optimizer:
    - 'sgd': L2 regularisation, wd * param added to the gradient before momentum (ResNet paper, torchvision).
    - 'lars': the same L2 term, inside the layer-wise trust ratio, which also skips BatchNorm and biases.
    - 'adamw', 'lamb': decoupled decay, scaled by the learning rate.

  Reads `name`, `weight_decay`, `grad_clip_norm` (None: no clipping; otherwise gradients are clipped to this global
  norm before anything else), `backbone_lr_multiplier` (see `scale_backbone`),
  `momentum` (0 for plain SGD; Adam's b1 for 'adamw' and 'lamb'), and per optimizer:
  `nesterov` ('sgd', 'lars'), `trust_coefficient` ('lars'), `b2` and `eps` ('adamw', 'lamb'; eps None: 1e-8 for
  AdamW, 1e-6 for LAMB). Every field is declared, with its default, in configs/default.py. `ema_decay` is not read
  here: the engine keeps the average itself (see `ema_update`).

  Args:
    optimizer_config: the `config.optimizer` section.
    schedule: the learning-rate schedule (or a constant rate).

  Returns:
    An optax gradient transformation; its `update` needs the params (weight decay, trust ratios).

  Raises:
    ValueError: unknown optimizer name, a non-positive clipping norm, or a negative backbone multiplier.
  """
  name = optimizer_config.name
  if name not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}: optimizer.name must be one of {", ".join(OPTIMIZERS)}.')
  tx = OPTIMIZERS[name](optimizer_config, schedule, weight_decay_mask)
  clip = optimizer_config.grad_clip_norm  # None: no clipping (its range is checked by config.validate).
  if clip is not None:
    tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
  tx = scale_backbone(tx, optimizer_config.backbone_lr_multiplier)
  return tx


# ----------------------------------------------------------------------------------------------------------------
# Parameter averaging and freezing
# ----------------------------------------------------------------------------------------------------------------


def ema_update(ema_params: Any, params: Any, decay: float | jax.Array) -> Any:
  """One step of an exponential moving average: `decay * ema + (1 - decay) * params`, leaf by leaf.

  Pure and jittable; the average keeps the dtype of `ema_params`.
  """
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params)


def freeze_all_but(tx: optax.GradientTransformation, params: Any,
                   trainable_prefix: str | Sequence[str] = "head") -> optax.GradientTransformation:
  """Wraps `tx` so that only parameters under `trainable_prefix` are trained; all others get zero updates.

  Frozen parameters are routed to `optax.set_to_zero`, so they carry no optimizer state and receive no weight
  decay. (BatchNorm statistics are not parameters: the engine decides whether frozen layers still update them.)

  Args:
    tx: the optimizer for the trainable parameters.
    params: the parameter tree (used to check that the prefix names something).
    trainable_prefix: a '/'-separated path prefix such as 'head' or 'stage4/block2', or a sequence of them.

  Returns:
    An optax gradient transformation over the whole parameter tree.

  Raises:
    ValueError: no parameter lies under any of the prefixes (the message lists the top-level names).
  """
  prefixes = [trainable_prefix] if isinstance(trainable_prefix, str) else list(trainable_prefix)
  prefix_paths = [tuple(p.strip("/").split("/")) for p in prefixes]

  def labels(tree):
    def label(path, _):
      names = tuple(map(trees.key_str, path))
      return "trainable" if any(names[:len(p)] == p for p in prefix_paths) else "frozen"
    return jax.tree_util.tree_map_with_path(label, tree)

  if "trainable" not in jax.tree.leaves(labels(params)):
    top = sorted({path[0] for path in trees.flatten(params)})
    raise ValueError(f"No parameters under {prefixes}: the prefix must start with one of the top-level names "
                     f"{top}.")
  return optax.partition({"trainable": tx, "frozen": optax.set_to_zero()}, labels)


def scale_backbone(tx: optax.GradientTransformation, multiplier: float,
                   head: str = "head") -> optax.GradientTransformation:
  """`tx` with the updates of every parameter outside the top-level `head` multiplied by `multiplier`: the usual
  smaller learning rate for a pretrained backbone when fine-tuning.

  1.0 returns `tx` itself (bitwise the same training). 0.0 routes the backbone to `optax.set_to_zero` (as
  `freeze_all_but` does): its parameters stay exactly as they are and carry no optimizer state, and `tx` (clipping
  included) sees only the head. Other values scale `tx`'s final updates, which for every optimizer here is the same
  as scaling the learning rate (SGD's L2 term and AdamW's decoupled decay included). BatchNorm statistics are not
  parameters: in training mode the backbone's still follow the new data (`config.freeze_backbone` fixes those too).

  Raises:
    ValueError: a negative multiplier.
  """
  if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real) or multiplier < 0:
    raise ValueError(f"optimizer.backbone_lr_multiplier must be a number >= 0 (1 = the head's learning rate, 0 = "
                     f"backbone fixed); got {multiplier!r}.")
  if multiplier == 1:
    return tx

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "head" if tuple(map(trees.key_str, path))[0] == head else "backbone", params)

  backbone = optax.set_to_zero() if multiplier == 0 else optax.scale(float(multiplier))
  if multiplier == 0:
    return optax.partition({"head": tx, "backbone": backbone}, labels)
  return optax.chain(tx, optax.partition({"head": optax.identity(), "backbone": backbone}, labels))
