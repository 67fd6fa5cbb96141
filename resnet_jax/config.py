"""Configs on the command line and on disk: a config file plus `--config.key=value` overrides, and a run's saved config.

A run's settings are an ml_collections `ConfigDict` from a config file (`configs/*.py`, whose `get_config()` starts
from `configs/default.py`, where every field is declared with a comment). Scripts take the file as `--config=FILE`
and any field as `--config.a.b=value` (`None` unsets a field); `resolve` turns both into the config, exactly as
for every script (train, sweep) that takes them. Errors say what to change: an unknown key names the nearest valid
ones, a value that does not parse names its field's type, and `validate` checks every numeric setting before any
work starts.

`load_run_config` reads the config a run saved in its workdir, so that evaluation, prediction and lesion studies
rebuild the run exactly; configs saved by older versions are brought up to date (fields added since then take
their declared defaults).
"""
from __future__ import annotations

import difflib
import json
import logging
import numbers
import os
from collections.abc import Sequence
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from resnet_jax import files, metrics, models
from resnet_jax.data import policies

PREFIX = "--config."


# ----------------------------------------------------------------------------------------------------------------
# Command lines
# ----------------------------------------------------------------------------------------------------------------
def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(other arguments, `--config.key=value` overrides) of a command line, each in order (`resolve` checks them)."""
  rest, overrides = [], []
  for arg in argv:
    (overrides if arg.startswith(PREFIX) else rest).append(arg)
  return rest, overrides


def override_key(flag: str) -> str:
  """'--config.a.b=1' -> 'a.b'."""
  return flag[len(PREFIX):].partition("=")[0]


def resolve(config_file: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of `--config=config_file` with the `--config.key=value` flags `overrides` applied.

  Values are typed by ml_collections' own flag parser, as the field's type says; `--config.key=None` unsets a
  field. The result is locked (no new fields) and validated (`validate`).

  Raises:
    ValueError: the file does not exist or fails to load, a key is unknown (the message names the nearest valid
      ones), a value does not parse as its field's type, or a setting is out of range.
  """
  path, colon, args = config_file.partition(":")
  if not os.path.isfile(path) and not os.path.isabs(path) and os.path.isfile(os.path.join(files.REPO_ROOT, path)):
    path = os.path.join(files.REPO_ROOT, path)  # configs/... from anywhere, not only from the repository's root.
    config_file = path + colon + args
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist (give a path such as configs/shapes.py)")
  for flag in overrides:
    if not flag.startswith(PREFIX) or "=" not in flag:
      raise ValueError(f"{flag!r} is not a config override: write --config.key=value (one argument, with '=')")
  unset = [override_key(f) for f in overrides if f.partition("=")[2] == "None"]
  typed = [f for f in overrides if f.partition("=")[2] != "None"]
  try:
    # Unknown keys first, against the file's own config: config_flags reports them only as a bare KeyError.
    base = _parse([f"--config={config_file}"])
    for flag in overrides:
      check_key(base, override_key(flag))
    config = _parse([f"--config={config_file}", *typed]) if typed else base
  except flags.Error as error:
    # A config file's own error arrives wrapped with its traceback: its last line is the message that matters.
    message = str(error).strip().splitlines()[-1]
    raise ValueError(f"bad config {' '.join([config_file, *overrides])}: {message}") from None
  for key in unset:
    unset_field(config, key)
  validate(config)
  return config


def _parse(argv: list[str]) -> ml_collections.ConfigDict:
  flag_values = flags.FlagValues()
  # sys_argv tells config_flags which override flags to define (it reads sys.argv otherwise).
  config_flags.DEFINE_config_file("config", None, "Config file.", flag_values=flag_values, lock_config=True,
                                  sys_argv=["resolve", *argv])
  flag_values(["resolve", *argv])
  return flag_values.config


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
  """Raises ValueError naming the nearest valid keys unless the dotted `key` is a field of `config`."""
  node, walked = config, []
  for part in key.split("."):
    fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
    if part not in fields:
      where = ".".join(walked) or "the config"
      close = difflib.get_close_matches(part, fields, n=3)
      if close:
        hint = "did you mean " + " or ".join(f"config.{'.'.join(walked + [c])}" for c in close) + "?"
      else:
        hint = f"its fields are {', '.join(sorted(fields))}" if fields else f"{where} is a value, not a section"
      raise ValueError(f"unknown config field config.{key}: {where} has no field {part!r}; {hint}")
    node = node[part]
    walked.append(part)


def unset_field(config: ml_collections.ConfigDict, key: str) -> None:
  """Sets the dotted config field `key` to None (what `--config.key=None` means on the command line).

  Raises:
    ValueError: the config has no such field.
  """
  check_key(config, key)
  *parents, leaf = key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = None


def get(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of the dotted field `key`."""
  node = config
  for part in key.split("."):
    node = node[part]
  return node


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def _number(config, key: str) -> Any:
  value = get(config, key)
  if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
    raise ValueError(f"config.{key}={value!r} must be a number")
  return value


def _check(config, key: str, ok, requirement: str) -> None:
  value = _number(config, key)
  if value is not None and not ok(value):
    raise ValueError(f"config.{key}={value!r} {requirement}: set --config.{key}=...")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every numeric setting of a training config, before any data or model work.

  Raises:
    ValueError: naming the first setting out of range and what it must be.
  """
  positive, non_negative, unit = (models.RANGES[name] for name in ("positive", "non_negative", "unit"))
  probability = (lambda v: 0 <= v <= 1, "must be in [0, 1]")
  checks = {
      "batch_size": positive, "eval_batch_size": positive, "num_epochs": positive, "num_steps": positive,
      "seed": non_negative, "label_smoothing": unit, "log_every_steps": positive, "eval_every_steps": positive,
      "eval_every_epochs": positive, "checkpoint_every_steps": positive, "keep_checkpoints": positive,
      "keep_checkpoint_every_steps": positive,
      "schedule.base_lr": positive, "schedule.reference_batch": positive, "schedule.warmup_epochs": non_negative,
      "schedule.warmup_steps": non_negative, "schedule.decay_factor": non_negative,
      "schedule.end_lr": non_negative, "schedule.power": positive,
      "optimizer.momentum": unit, "optimizer.weight_decay": non_negative, "optimizer.grad_clip_norm": positive,
      "optimizer.ema_decay": unit, "optimizer.b2": unit, "optimizer.eps": positive,
      "optimizer.trust_coefficient": positive, "optimizer.backbone_lr_multiplier": non_negative,
      # The model's knobs declare their own ranges (models.knob's `valid`).
      **{f"model.{name}": models.RANGES[spec["valid"]] for name, spec in models.knob_specs().items()
         if spec["valid"]},
      "data.image_size": positive, "data.eval_image_size": positive,
      "data.crop_fraction": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
      "data.shuffle_buffer": positive, "data.num_classes": positive,
      "data.num_parallel_calls": (lambda v: v == -1 or v > 0, "must be -1 (autotune) or positive"),
      "data.rotation_degrees": (lambda v: 0 <= v <= 180, "must be in [0, 180] (0: no rotation)"),
      "data.color_jitter": (lambda v: 0 <= v < 1, "must be in [0, 1) (0: no jitter)"),
      "bce_target_threshold": (lambda v: 0 <= v < 1, "must be in [0, 1) (None: soft targets)"),
      "mixing.mixup_alpha": non_negative, "mixing.cutmix_alpha": non_negative, "mixing.prob": probability,
      "mixing.switch_prob": probability, "grad_accum_steps": positive,
      "data.random_erasing": probability, "data.repeated_augmentation": positive,
  }
  for key, (ok, requirement) in checks.items():
    try:
      get(config, key)
    except (KeyError, AttributeError):
      continue  # Configs of other tools (benchmarks) may leave sections out.
    _check(config, key, ok, requirement)
  for key in ("num_steps", "batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
              "eval_every_steps", "schedule.warmup_steps", "data.image_size", "data.eval_image_size",
              "grad_accum_steps", "data.repeated_augmentation"):
    try:
      value = get(config, key)
    except (KeyError, AttributeError):
      continue
    if value is not None and value != int(value):
      raise ValueError(f"config.{key}={value!r} must be a whole number")
  if config.get("reinit_head") and not config.get("init_from"):
    raise ValueError("config.reinit_head=True replaces the head of loaded weights, and config.init_from is not set: "
                     "add --config.init_from=RUN_OR_WEIGHTS_DIR, or drop the flag to train from scratch")
  _validate_recipe(config)


def _validate_recipe(config: ml_collections.ConfigDict) -> None:
  """The loss, mixing and accumulation settings that only make sense together."""
  loss = config.get("loss")
  if loss is None:
    return  # Configs of other tools (benchmarks) leave the recipe out.
  if loss not in metrics.LOSSES:
    raise ValueError(f"config.loss={loss!r} is not a loss; choose one of {list(metrics.LOSSES)}")
  if config.bce_target_threshold is not None and loss != "sigmoid_xent":
    raise ValueError(f"config.bce_target_threshold={config.bce_target_threshold} applies to "
                     "config.loss='sigmoid_xent' only: set that loss or --config.bce_target_threshold=None")
  mixing = config.mixing
  if (mixing.mixup_alpha or mixing.cutmix_alpha) and config.data.num_classes == 1:
    raise ValueError("config.mixing mixes the labels of two examples: it needs at least 2 classes "
                     "(config.data.num_classes=1); set --config.mixing.mixup_alpha=0 --config.mixing.cutmix_alpha=0")
  policies.parse(config.data.augment)
  policies.check_eval_transform(config.data.eval_transform, config.data.eval_interpolation)
  if config.batch_size is not None and config.batch_size % config.grad_accum_steps:
    raise ValueError(f"config.grad_accum_steps={config.grad_accum_steps} must divide config.batch_size="
                     f"{config.batch_size} (each update adds that many equal micro-batches): choose a divisor")


# ----------------------------------------------------------------------------------------------------------------
# A run's saved config
# ----------------------------------------------------------------------------------------------------------------
def _tuples(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _migrate(saved: dict[str, Any]) -> dict[str, Any]:
  """Brings a config.json written by an older version up to date."""
  model = saved.get("model", {})
  # Depth had its own field (`model.depth`, replacing the trailing number of `model.name`) until the name became
  # the one way to choose the network.
  depth = model.pop("depth", None)
  if depth is not None:
    model["name"] = model["name"].rstrip("0123456789") + str(depth)
  # The inference-time lesion knob was `drop_blocks` until it was renamed so as not to be taken for DropBlock or
  # drop-path regularisation.
  if "drop_blocks" in model:
    model["lesion_blocks"] = model.pop("drop_blocks")
  return saved


def _merge(base: ml_collections.ConfigDict, saved: dict[str, Any], prefix: str = "") -> None:
  for key, value in saved.items():
    if key not in base:
      logging.warning("The saved config's field %s%s no longer exists; it is ignored.", prefix, key)
      continue
    if isinstance(base[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _merge(base[key], value, f"{prefix}{key}.")
    else:
      base[key] = value


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in `workdir/config.json`, on top of configs/default.py's declarations.

  Fields the saved config lacks (added to the project after the run was started) take their declared defaults,
  which are the values the code used before they were declared.

  Raises:
    ValueError: `workdir` holds no config.json (it is not a training run's workdir), or the file is not JSON.
  """
  from configs import default  # The declarations; configs/ is data, loaded only here.

  path = os.path.join(workdir, files.CONFIG_FILE)
  if not files.exists(workdir):
    raise ValueError(f"{workdir} does not exist: give the --workdir of a training run")
  try:
    saved = files.read_json(path)
  except json.JSONDecodeError as error:
    raise ValueError(f"{path} is not valid JSON ({error}); was the run's directory edited by hand?") from None
  if saved is None:
    raise ValueError(f"{workdir} has no {files.CONFIG_FILE}: it is not a training run's --workdir (a run writes "
                     "it when it starts)")
  config = default.get_config()
  _merge(config, _migrate(_tuples(saved)))
  config.lock()
  return config
