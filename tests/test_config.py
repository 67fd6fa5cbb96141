"""Configs (resnet_jax.config, configs/): resolving files and overrides, validation, saved configs of runs, and the
declarations: every field the code reads is declared in configs/default.py, with a comment."""
import ast
import json
import os

import ml_collections
import numpy as np
import pytest

from configs import default
from resnet_jax import config as config_lib
from resnet_jax import files, models
from tests import runs

REPO = runs.ROOT
SHAPES = os.path.join(REPO, "configs", "shapes.py")
RECIPES = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs")) if f.endswith(".py") and f != "__init__.py")


def _leaves(config, prefix=""):
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out[prefix + key] = value
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


# --- Resolving a file and its overrides -------------------------------------------------------------------------
def test_resolve_types_values_as_the_fields_say():
  config = config_lib.resolve(SHAPES, [
      "--config.model.name=cifar_resnet56", "--config.model.head_hidden=(64,64)", "--config.model.head=mlp",
      "--config.model.zero_init_residual=false", "--config.model.dropout=0.5", "--config.data.builder_config=small",
      "--config.model.bn_axis_index_groups=((0,1),(2,3))", "--config.model.param_dtype=bfloat16"])
  assert config.model.name == "cifar_resnet56" and config.model.head_hidden == (64, 64)
  assert config.model.zero_init_residual is False and config.model.dropout == 0.5
  assert config.data.builder_config == "small" and config.model.bn_axis_index_groups == ((0, 1), (2, 3))
  assert config.model.param_dtype == "bfloat16"
  with pytest.raises(AttributeError):
    config.new_field = 1  # Locked: no new fields.


def test_none_unsets_a_field():
  config = config_lib.resolve(SHAPES, ["--config.num_epochs=None", "--config.num_steps=300",
                                       "--config.eval_every_epochs=None", "--config.eval_every_steps=100"])
  assert config.num_epochs is None and config.num_steps == 300
  assert config.eval_every_epochs is None and config.eval_every_steps == 100


@pytest.mark.parametrize("overrides, message", [
    (["--config.modle.name=resnet18"], r"unknown config field config.modle.name: the config has no field 'modle'; "
                                       r"did you mean config.model\?"),
    (["--config.num_epoch=None"], r"did you mean config.num_epochs"),
    (["--config.model.widht=2"], r"did you mean config.model.width"),
    (["--config.seed.x=1"], "is a value, not a section"),
    (["--config.model.width=wide"], "could not convert string to float"),
    (["--config.model"], "write --config.key=value"),
])
def test_bad_overrides_say_what_to_change(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_lib.resolve(SHAPES, overrides)


def test_missing_file_and_old_style_arguments_are_named(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    config_lib.resolve(str(tmp_path / "nope.py"))
  with pytest.raises(ValueError, match="takes no arguments.*--config.model.name=cifar_resnet56"):
    config_lib.resolve(f"{SHAPES}:depth=56,shortcut=none")


def test_split_overrides_keeps_order():
  rest, overrides = config_lib.split_overrides(["prog", "--workdir=w", "--config.a=1", "--config.b.c=x", "-v"])
  assert rest == ["prog", "--workdir=w", "-v"] and overrides == ["--config.a=1", "--config.b.c=x"]


# --- Validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("schedule.base_lr=-0.5", "config.schedule.base_lr=-0.5 must be positive"),
    ("optimizer.weight_decay=-1e-4", "weight_decay=-0.0001 must be zero or positive"),
    ("label_smoothing=1.5", r"label_smoothing=1.5 must be in \[0, 1\)"),
    ("optimizer.momentum=1.0", r"momentum=1.0 must be in \[0, 1\)"),
    ("optimizer.momentum=-0.1", r"must be in \[0, 1\)"),
    ("batch_size=0", "batch_size=0 must be positive"),
    ("eval_batch_size=-8", "must be positive"),
    ("num_epochs=0", "num_epochs=0.0 must be positive"),
    ("model.width=0", "width=0.0 must be positive"),
    ("model.dropout=1.0", r"dropout=1.0 must be in \[0, 1\)"),
    ("data.crop_fraction=1.5", r"must be in \(0, 1\]"),
    ("schedule.warmup_epochs=-1", "must be zero or positive"),
    ("checkpoint_every_steps=0", "must be positive"),
])
def test_every_numeric_setting_is_validated(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.resolve(SHAPES, [f"--config.{override}"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_is_valid(recipe):
  config_lib.resolve(os.path.join(REPO, "configs", f"{recipe}.py"))


# --- The declarations -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_override_the_base_and_add_nothing(recipe):
  config = config_lib.resolve(os.path.join(REPO, "configs", f"{recipe}.py"))
  assert set(_leaves(config)) == set(_leaves(default.get_config()))


def test_every_field_of_the_base_config_has_a_comment():
  path = os.path.join(REPO, "configs", "default.py")
  with open(path) as f:
    lines = f.read().splitlines()
  tree = ast.parse("\n".join(lines))
  (get_config,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_config"]
  uncommented = []
  for node in ast.walk(get_config):
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
      line = lines[node.end_lineno - 1]
      above = lines[node.lineno - 2].strip()
      if "#" not in line and not above.startswith("#"):
        uncommented.append(lines[node.lineno - 1].strip())
  assert not uncommented, f"fields of configs/default.py without a comment: {uncommented}"


def test_model_section_is_the_declared_knobs():
  assert set(default.get_config().model) == {"name", *models.config_knobs()}


def test_the_engine_reads_only_declared_fields(tmp_path, shapes_data_dir, xla_cache_dir, monkeypatch):
  """A tiny run, its evaluation and a prediction read every config field through ConfigDict; each field read must
  be one configs/default.py declares (no silent defaults for undeclared ones)."""
  from resnet_jax import data, evaluation, lesion, predict, train
  from resnet_jax.data import datasets, tfrecords

  config = runs.tiny_config(shapes_data_dir, xla_cache_dir)
  declared = set(_leaves(default.get_config()))
  paths = {id(node): key for key, node in _leaves(config).items() if isinstance(node, ml_collections.ConfigDict)}
  paths[id(config)] = ""
  read = set()
  original = ml_collections.ConfigDict.__getitem__

  def recording(self, key):
    if id(self) in paths and isinstance(key, str):
      read.add(f"{paths[id(self)]}.{key}".lstrip("."))
    return original(self, key)

  monkeypatch.setattr(ml_collections.ConfigDict, "__getitem__", recording)
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  evaluation.evaluate_checkpoint(config, workdir)
  lesion.check_defined(config.model)
  image = tmp_path / "image.png"
  builder = datasets.builder_for(config.data)
  image.write_bytes(next(iter(tfrecords.read_split(builder, "test").map(lambda r: tfrecords.parse_fn(builder)(r)[0])
                              .take(1))).numpy())
  predict.predict(config, workdir, [str(image)])
  # The streamed input pipeline and synthetic data read their own fields.
  config.data.cache = False
  next(data.train_iterator(config.data, global_batch_size=32, seed=0))
  with config.unlocked():
    config.data.name = "synthetic"
    config.data.image_size = 16
  train.build(config, data.info(config.data))
  monkeypatch.undo()
  assert read, "nothing was recorded"
  assert read <= declared, f"fields read but not declared in configs/default.py: {sorted(read - declared)}"


# --- A run's saved config -------------------------------------------------------------------------------------
def test_load_run_config_round_trips_and_fills_newer_fields(tmp_path):
  config = config_lib.resolve(SHAPES, ["--config.model.head=mlp", "--config.model.head_hidden=(8,)"])
  saved = config.to_dict()
  del saved["optimizer"]["b2"]  # A run saved before the field was declared.
  (tmp_path / files.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  loaded = config_lib.load_run_config(str(tmp_path))
  assert loaded.model.head_hidden == (8,) and loaded.optimizer.b2 == default.get_config().optimizer.b2
  assert _leaves(loaded).keys() == _leaves(config).keys()


def test_load_run_config_folds_the_old_depth_field_into_the_name(tmp_path):
  saved = config_lib.resolve(SHAPES).to_dict()
  saved["model"]["depth"] = 56  # Configs saved before the name became the one way to choose the network.
  (tmp_path / files.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  assert config_lib.load_run_config(str(tmp_path)).model.name == "cifar_resnet56"


def test_load_run_config_reads_the_old_lesion_knob_name(tmp_path):
  saved = config_lib.resolve(SHAPES).to_dict()
  del saved["model"]["lesion_blocks"]
  saved["model"]["drop_blocks"] = [3, 5]  # The knob's name in runs started before the rename.
  (tmp_path / files.CONFIG_FILE).write_text(json.dumps(saved, default=str))
  assert config_lib.load_run_config(str(tmp_path)).model.lesion_blocks == (3, 5)
  # A committed record of such a run loads, with its value.
  record = os.path.join(REPO, "benchmarks", "demo")
  with open(os.path.join(record, files.CONFIG_FILE)) as f:
    assert "drop_blocks" in json.load(f)["model"]
  assert config_lib.load_run_config(record).model.lesion_blocks is None


def test_load_run_config_errors(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    config_lib.load_run_config(str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="has no config.json"):
    config_lib.load_run_config(str(tmp_path))
  (tmp_path / files.CONFIG_FILE).write_text("{not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    config_lib.load_run_config(str(tmp_path))


def test_the_b2_command_line_trains_adamw():
  config = config_lib.resolve(SHAPES, ["--config.optimizer.name=adamw", "--config.optimizer.b2=0.95"])
  from resnet_jax import optim
  tx = optim.create_optimizer(config.optimizer, 0.1)
  params = {"kernel": np.ones((2, 2), np.float32)}
  tx.update(params, tx.init(params), params)
  assert config.optimizer.b2 == 0.95
