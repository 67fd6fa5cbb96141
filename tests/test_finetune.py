"""Weights for fine-tuning (resnet_jax.finetune): saved and loaded without optimizer state, merged into new models."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax import checkpoint, finetune
from tests.states import _assert_equal_trees, _host_state, _mesh, _on_mesh


def _checkpointer(directory, **kwargs):
  return checkpoint.Checkpointer(directory, **{"save_every_steps": 10, "keep": 3, **kwargs})


def _variables(state):
  return {"params": state.params, "batch_stats": state.batch_stats}


def test_load_params_from_run_step_and_weights(tmp_path):
  workdir = tmp_path / "run"
  with _checkpointer(workdir / checkpoint.SUBDIR) as ckpt:
    for step in (10, 20):
      ckpt.save(step, _on_mesh(_host_state(seed=step), _mesh(4)))
  want_20, want_10 = _variables(_host_state(seed=20)), _variables(_host_state(seed=10))
  for path in (workdir, workdir / checkpoint.SUBDIR):  # The latest committed step.
    _assert_equal_trees(finetune.load_params(path), want_20)
  _assert_equal_trees(finetune.load_params(workdir / checkpoint.SUBDIR / "10"), want_10)

  weights = tmp_path / "weights"
  finetune.save_params(weights, want_10)
  loaded = finetune.load_params(weights)
  _assert_equal_trees(loaded, want_10)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(loaded))
  with pytest.raises(ValueError, match="already exists"):
    finetune.save_params(weights, want_20)
  finetune.save_params(weights, want_20, overwrite=True)
  _assert_equal_trees(finetune.load_params(weights), want_20)


def test_load_params_bad_paths(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    finetune.load_params(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="No committed checkpoint"):
    finetune.load_params(tmp_path)
  finetune.save_params(tmp_path / "w", _variables(_host_state()))
  os.remove(tmp_path / "w" / checkpoint.COMMIT_MARKER)
  with pytest.raises(ValueError, match="incomplete checkpoint"):
    finetune.load_params(tmp_path / "w")
  with pytest.raises(ValueError, match="'params'"):
    finetune.save_params(tmp_path / "v", {"batch_stats": {}})


def test_merge_for_finetune():
  loaded = _variables(_host_state(seed=1, num_classes=10))
  same = _variables(_host_state(seed=2, num_classes=10))
  _assert_equal_trees(finetune.merge_for_finetune(same, loaded), loaded)
  fresh_head = finetune.merge_for_finetune(same, loaded, reinit_head=True)  # New classes, as many as before.
  _assert_equal_trees(fresh_head["params"]["head"], same["params"]["head"])
  _assert_equal_trees(fresh_head["params"]["stem"], loaded["params"]["stem"])

  init = _variables(_host_state(seed=2, num_classes=5))  # Another class count: fresh head, loaded backbone.
  merged = finetune.merge_for_finetune(init, loaded)
  _assert_equal_trees(merged["params"]["head"], init["params"]["head"])
  _assert_equal_trees(merged["params"]["stem"], loaded["params"]["stem"])
  _assert_equal_trees(merged["batch_stats"], loaded["batch_stats"])

  with pytest.raises(ValueError, match=r"'params/head/bias' has shape \(10,\) in the loaded weights but \(5,\)"):
    finetune.merge_for_finetune(init, loaded, reinit_head_if_mismatch=False)

  wide = _variables(_host_state(seed=2))
  wide["params"]["stem"]["kernel"] = np.zeros((3, 3, 3, 16), np.float32)
  with pytest.raises(ValueError, match=r"'params/stem/kernel' has shape \(3, 3, 3, 8\) in the loaded weights but "
                                       r"\(3, 3, 3, 16\) in the model"):
    finetune.merge_for_finetune(wide, loaded)

  deeper = _variables(_host_state(seed=2))
  deeper["params"]["block"] = {"kernel": np.zeros((2,), np.float32)}
  with pytest.raises(ValueError, match="'params/block/kernel' \\(shape \\(2,\\)\\) of the model is not in the loaded"):
    finetune.merge_for_finetune(deeper, loaded)
  with pytest.raises(ValueError, match="'params/block/kernel' \\(shape \\(2,\\)\\) of the loaded weights is not in"):
    finetune.merge_for_finetune(loaded, deeper)


def test_finetune_a_real_model_on_other_classes(tmp_path):
  """A ResNet's variables for 10 classes, saved, loaded into the same ResNet with 4 classes.

  The variables have the model's real names and shapes (from jax.eval_shape); their values are random numbers,
  which is all that merging looks at, and cost no compilation.
  """
  from resnet_jax import models
  x = jnp.zeros((1, 32, 32, 3))

  def init(num_classes, seed):
    rng = jax.random.key(0)
    model = models.create("cifar_resnet20", num_classes=num_classes)
    shapes = jax.eval_shape(lambda: model.init({"params": rng, "dropout": rng}, x, train=False))
    values = np.random.default_rng(seed)
    return jax.tree.map(lambda s: values.standard_normal(s.shape).astype(s.dtype), shapes)

  source, target = init(10, seed=0), init(4, seed=1)
  finetune.save_params(tmp_path / "w", source)
  merged = finetune.merge_for_finetune(target, finetune.load_params(tmp_path / "w"))
  _assert_equal_trees(merged["params"]["head"], target["params"]["head"])
  backbone = {k: v for k, v in merged["params"].items() if k != "head"}
  _assert_equal_trees(backbone, {k: v for k, v in source["params"].items() if k != "head"})
  _assert_equal_trees(merged["batch_stats"], source["batch_stats"])


def test_a_new_head_trains_on_a_fixed_backbone_with_the_multiplier_at_zero(tmp_path, shapes_data_dir, xla_cache_dir):
  """init_from weights for 10 classes, fine-tuned for 12 with optimizer.backbone_lr_multiplier=0: every backbone
  parameter stays bitwise as loaded, the new head trains. (BatchNorm statistics still follow the data, as they
  do in training mode; config.freeze_backbone fixes those too.)"""
  from resnet_jax import models, train
  from tests import runs

  config = runs.tiny_config(shapes_data_dir, xla_cache_dir)
  model = models.create("cifar_resnet20", num_classes=10, width=0.5)
  rng = jax.random.key(0)
  shapes = jax.eval_shape(lambda: model.init({"params": rng, "dropout": rng}, jnp.zeros((1, 32, 32, 3)), train=False))
  values = np.random.default_rng(0)
  source = {k: jax.tree.map(lambda s: (0.1 * values.standard_normal(s.shape)).astype(s.dtype), shapes[k])
            for k in ("params", "batch_stats")}
  source["batch_stats"] = jax.tree.map(np.abs, source["batch_stats"])  # Variances must be positive.
  finetune.save_params(tmp_path / "weights", source)
  config = runs.tiny_config(shapes_data_dir, xla_cache_dir, init_from=str(tmp_path / "weights"),
                            **{"data.num_classes": 12, "optimizer.backbone_lr_multiplier": 0.0})
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  at_3, at_6 = (finetune.load_params(workdir / checkpoint.SUBDIR / str(step)) for step in (3, 6))
  backbone = {k: v for k, v in at_6["params"].items() if k != "head"}
  _assert_equal_trees(backbone, {k: v for k, v in source["params"].items() if k != "head"})
  assert at_6["params"]["head"]["dense"]["kernel"].shape[-1] == 12
  assert not np.array_equal(at_3["params"]["head"]["dense"]["kernel"], at_6["params"]["head"]["dense"]["kernel"])
  assert not np.array_equal(at_6["batch_stats"]["stem"]["bn"]["mean"], source["batch_stats"]["stem"]["bn"]["mean"])
