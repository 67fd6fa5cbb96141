"""Bad input to every script: one line that says what to do (no traceback without --verbose), a non-zero exit, and
nothing created. Every script in experiments/ has rows here (a test checks it).

Each row runs the script in a subprocess, in a fresh working directory with a fresh TFDS data dir, so that "nothing
created" covers the workdir, checkpoints, results files and generated datasets alike.
"""
import json
import os
import subprocess
import sys

import pytest

from tests import runs

SHAPES = os.path.join(runs.ROOT, "configs", "shapes.py")

# (script, arguments, what the message must say). {run} is a workdir holding a run's config.json but no
# checkpoint, {plain} the same for a plain network, {file} a regular file, {text} a file that is not an image.
CASES = [
    ("train", ["--config.schedule.base_lr=-0.5"], "config.schedule.base_lr=-0.5 must be positive"),
    ("train", ["--config.optimizer.weight_decay=-1e-4"], "must be zero or positive"),
    ("train", ["--config.label_smoothing=1.5"], r"must be in [0, 1)"),
    ("train", ["--config.optimizer.momentum=1.2"], r"must be in [0, 1)"),
    ("train", ["--config.batch_size=0"], "config.batch_size=0 must be positive"),
    ("train", ["--config.num_epochs=None", "--config.num_steps=-5"], "config.num_steps=-5 must be positive"),
    ("train", ["--config.modle.name=resnet18"], "did you mean config.model?"),
    ("train", ["--config.model.nme=resnet18"], "did you mean config.model.name?"),
    ("train", ["--config.model.name=resnet51"], "unknown model 'resnet51'"),
    ("train", ["--config.model.name=cifar_resnet21"], "depth 6n+2"),
    ("train", ["--config.model.shortcut=D"], "unknown shortcut 'D'"),
    ("train", ["--config.model.width=wide"], "could not convert string to float"),
    ("train", [f"--config={SHAPES}:depth=21"], "takes no arguments"),
    ("train", ["--config=configs/nope.py"], "config file 'configs/nope.py' does not exist"),
    ("train", ["--workdir={file}"], "is a file; give a directory"),
    ("train", ["--config.data.name=shapez"], "Unknown dataset 'shapez'"),
    ("train", ["--config.model"], "write --config.key=value"),
    ("evaluate", [], "--workdir is required"),
    ("evaluate", ["--workdir={missing}"], "does not exist"),
    ("evaluate", ["--workdir={file}"], "no config.json"),
    ("evaluate", ["--workdir={run}"], "No committed checkpoint"),
    ("predict", ["--workdir={run}"], "Give one or more image files"),
    ("predict", ["--workdir={run}", "{text}"], "not an image TensorFlow can decode"),
    ("predict", ["--workdir={run}", "{missing}"], "No such file"),
    ("predict", ["--workdir={run}", "--top_k=0", "{text}"], "--top_k must be at least 1"),
    ("lesion", ["--workdir={plain}"], "not defined for a plain network"),
    ("lesion", ["--workdir={run}"], "No committed checkpoint"),
    ("lesion", [], "--workdir is required"),
    ("sweep", ["--workdir={missing}", "--grid=model.shortcut=A model.shortcut=B"], "appears twice"),
    ("sweep", ["--workdir={missing}", "--grid=model.shortcut=A,D"], "unknown shortcut 'D'"),
    ("sweep", ["--workdir={missing}", "--grid=model.shrtcut=A"], "did you mean config.model.shortcut?"),
    ("sweep", ["--workdir={missing}", "--ablation=shortcut"], "choose one of"),
    ("sweep", ["--grid=model.shortcut=A"], "--workdir is required"),
    ("sweep", ["--workdir={missing}", "--ablation=depth_study", "--dry_run", "--report_only"],
     "--dry_run and --report_only"),
    ("compile_for", ["--target=tpu:v3-8"], "unknown target 'tpu:v3-8': targets are tpu:<v4|v5p>-<TensorCores>"),
    ("compile_for", ["--target=tpu:v5p-6"], "Cloud provisions v5p slices of v5p-8, v5p-16,"),
    ("compile_for", ["--config=configs/shapes.py"], "The shapes of 'shapes' are not known without its data"),
    ("prepare_data", [], "--dataset is required"),
    ("prepare_data", ["--dataset=shapez"], "Unknown dataset 'shapez'"),
    ("prepare_data", ["--dataset=imagenet2012"], "needs --manual_dir"),
    ("convert_weights", ["--out={missing}"], "--from (keras or torchvision) and --out are required"),
    ("convert_weights", ["--from=keras", "--out={file}"], "exists; pass --overwrite"),
    ("convert_weights", ["--from=keras", "--keras_weights={missing}", "--out={missing}"], "no such file"),
    ("convert_weights", ["--from=safetensors", "--out={missing}"], "--from=safetensors needs --safetensors=FILE"),
    ("convert_weights", ["--from=safetensors", "--safetensors={text}", "--model=resnet18", "--out={missing}"],
     "is not a readable .safetensors file"),
    ("train", ["--config.data.name=folder:{missing}"], "missing: no such folder"),
    ("train", ["--config.data.rotation_degrees=400"], "must be in [0, 180]"),
    ("train", ["--config.optimizer.backbone_lr_multiplier=-1"], "config.optimizer.backbone_lr_multiplier=-1"),
    ("train", ["--config.data.color_jitter=1"], "config.data.color_jitter=1"),
    ("train", ["--config.data.augment=randaug"], "unknown policy 'randaug'"),
    ("train", ["--config.data.augment=rand-m9-x2"], "cannot read 'x2'"),
    ("train", ["--config.mixing.prob=1.5"], "config.mixing.prob=1.5 must be in [0, 1]"),
    ("train", ["--config.mixing.cutmix_alpha=-1"], "config.mixing.cutmix_alpha=-1"),
    ("train", ["--config.grad_accum_steps=3"], "must divide config.batch_size=128"),
    ("train", ["--config.bce_target_threshold=0.2"], "applies to config.loss='sigmoid_xent' only"),
    ("train", ["--config.loss=hinge"], "config.loss='hinge' is not a loss"),
    ("train", ["--config.reinit_head=true"], "config.reinit_head=True replaces the head of loaded weights"),
    ("train", ["--config.data.eval_transform=resize"], "Unknown evaluation transform 'resize'"),
    ("train", ["--config.data.eval_interpolation=bicubic"], "needs config.data.eval_transform='resize_crop'"),
    ("train", ["--config.data.random_erasing=2"], "config.data.random_erasing=2"),
    ("export_images", ["--out={missing}"], "--dataset and --out are required"),
    ("export_images", ["--dataset=shapez", "--out={missing}"], "Unknown dataset 'shapez'"),
    ("export_images", ["--dataset=shapes", "--out={file}"], "exists and is not an empty folder"),
    ("search", ["--space=schedule.base_lr=loguniform(0.01,1)"], "--workdir is required"),
    ("search", ["--workdir={missing}", "--space=schedule.base_lr=loguniform(0,1)"], "must be positive"),
    ("search", ["--workdir={missing}", "--space=schedule.base_lr=choice(0.1,-1)"], "must be positive"),
    ("benchmark", ["--peers=tf"], "unknown peer(s) ['tf']"),
    ("benchmark", ["--steps=0"], "must be at least 1"),
    ("benchmark_input", ["--threads=0"], "--threads must be positive"),
    ("profile", ["--steps=0"], "--steps and --batch must be positive"),
    ("profile", ["--model=resnet51"], "unknown model 'resnet51'"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
  """The paths the rows refer to, in a directory of their own (the rows' working directory is another one)."""
  from resnet_jax import config as config_lib
  root = tmp_path_factory.mktemp("places")
  paths = {"missing": str(root / "missing"), "file": str(root / "a_file"), "text": str(root / "notes.png"),
           "run": str(root / "run"), "plain": str(root / "plain")}
  (root / "a_file").write_text("a file\n")
  (root / "notes.png").write_text("not an image\n")
  for name, shortcut in (("run", "A"), ("plain", "none")):
    config = config_lib.resolve(SHAPES, [f"--config.model.shortcut={shortcut}"])
    os.makedirs(paths[name])
    with open(os.path.join(paths[name], "config.json"), "w") as f:
      json.dump(config.to_dict(), f)
  return paths


def _listing(directory):
  return sorted(os.path.relpath(os.path.join(d, n), directory) for d, _, names in os.walk(directory) for n in names)


@pytest.mark.parametrize("script, args, message", CASES, ids=[f"{s}:{' '.join(a)}" for s, a, _ in CASES])
def test_bad_input_fails_fast_with_one_line_and_creates_nothing(tmp_path, places, script, args, message):
  cwd, data_dir = tmp_path / "cwd", tmp_path / "tfds"
  cwd.mkdir()
  data_dir.mkdir()
  args = [a.format(**places) for a in args]
  if script == "train":
    args = [f"--config={SHAPES}", *args] if not any(a.startswith("--config=") for a in args) else args
    args += [f"--config.data.data_dir={data_dir}"] if not any(a == "--config.model" for a in args) else []
    if not any(a.startswith("--workdir=") for a in args):
      args.append(f"--workdir={cwd / 'run'}")
  before = {name: _listing(path) if os.path.isdir(path) else None for name, path in places.items()}
  env = {**os.environ, "PYTHONPATH": runs.ROOT, "TFDS_DATA_DIR": str(data_dir)}
  result = subprocess.run([sys.executable, "-m", f"experiments.{script}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
  output = result.stdout + result.stderr
  assert result.returncode != 0, output[-3000:]
  assert "Traceback" not in output, output[-3000:]
  assert message in output, output[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith(f"{script}: ")]
  assert len(lines) == 1 and message in lines[0], output[-3000:]
  assert _listing(cwd) == [] and _listing(data_dir) == [], "the script created files"
  after = {name: _listing(path) if os.path.isdir(path) else None for name, path in places.items()}
  assert after == before, "the script changed the run directories"


def test_verbose_shows_the_traceback(tmp_path):
  result = subprocess.run([sys.executable, "-m", "experiments.train", "--config.schedule.base_lr=-0.5", "--verbose",
                           f"--workdir={tmp_path / 'run'}"], cwd=runs.ROOT, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode != 0 and "Traceback" in result.stderr


def test_every_script_has_bad_input_cases():
  scripts = {f[:-3] for f in os.listdir(os.path.join(runs.ROOT, "experiments"))
             if f.endswith(".py") and f != "__init__.py"}
  covered = {script for script, _, _ in CASES}
  assert scripts <= covered, f"scripts without bad-input rows: {sorted(scripts - covered)}"
