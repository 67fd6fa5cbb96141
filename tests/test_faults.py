"""Fault injection: kills, preemption, half-written checkpoints, divergence, topology changes, bad init_from.

Every run trains a tiny model (tests/runs.py) for `NUM_STEPS` steps on `shapes/small`, saving every `SAVE_EVERY`
steps, on 4 simulated CPU devices, in a subprocess of `python -m experiments.train`, exactly as a user would run it
(only the init_from tests call the engine in this process). An uninterrupted run of the same command (the
`reference` fixture) is what every interrupted run must end equal to. The signals land at a random step; failure
messages say which.

Equality is exact (bitwise): an interrupted run replays the same XLA program on the same CPU from a checkpoint that
stores float32 values exactly, and its data order and dropout noise are functions of the step alone, so nothing
can differ, not even by rounding.
"""
import functools
import json
import os
import random
import re
import shutil
import signal

import jax
import numpy as np
import pytest

from resnet_jax import checkpoint as ckpt_lib
from resnet_jax import files, finetune, train
from tests import runs

NUM_STEPS = 24
SAVE_EVERY = 4
FAULT_RUN = {"num_steps": NUM_STEPS, "checkpoint_every_steps": SAVE_EVERY, "log_every_steps": 1}
DEVICES = 4
EXACT = {"rtol": 0, "atol": 0}


def _flags(data_dir, cache_dir, workdir, **overrides):
  return [f"--workdir={workdir}", *runs.tiny_flags(data_dir, cache_dir, **{**FAULT_RUN, **overrides})]


def _ckpt_dir(workdir):
  return os.path.join(workdir, ckpt_lib.SUBDIR)


def _resumed_from(output: str) -> int | None:
  match = re.search(r"Resumed from the checkpoint of step (\d+)", output)
  return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory, shapes_data_dir, xla_cache_dir):
  """Workdir of the uninterrupted run."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  output = runs.run("experiments.train", _flags(shapes_data_dir, xla_cache_dir, workdir), devices=DEVICES)
  assert ckpt_lib.complete_steps(_ckpt_dir(workdir))[-1] == NUM_STEPS
  # The console keeps the trainer's own lines and drops the libraries' INFO lines (--library_logs shows them).
  assert "Compiled the train step" in output and f"train step {NUM_STEPS}/{NUM_STEPS}" in output
  assert "checkpoint_manager.py" not in output and "dataset_info.py" not in output, output[-3000:]
  return workdir


def _assert_same_run(workdir, reference_dir):
  """Final parameters and statistics, and every step's training metrics, equal the uninterrupted run's."""
  runs.assert_trees_close(runs.final_params(workdir), runs.final_params(reference_dir), **EXACT)
  got, want = runs.train_records(workdir), runs.train_records(reference_dir)
  assert sorted(got) == list(range(1, NUM_STEPS + 1)), "every step logged exactly once"
  for step in got:  # The resumed part saw the same batches: its losses are the same numbers.
    assert got[step]["loss"] == want[step]["loss"], step
  with open(os.path.join(workdir, "done.json")) as f:
    assert json.load(f)["step"] == NUM_STEPS


# ----------------------------------------------------------------------------------------------------------------
# Kill -9, half-written checkpoints, SIGTERM
# ----------------------------------------------------------------------------------------------------------------
def _plant_half_written(ckpt_dir, reference, latest):
  """What saves killed mid-way leave behind, for steps after `latest`; returns their names.

  - `<step>.orbax-checkpoint-tmp`: Orbax's temporary directory of a save killed mid-write (here a whole copy of a
    real step, the most tempting content there is);
  - `<NUM_STEPS>` without its commit marker: a step directory that was never committed (a file system without an
    atomic rename, or a copy by hand), holding the uninterrupted run's final state: taking it would end the run.
  """
  planted = []
  if latest + SAVE_EVERY < NUM_STEPS:
    name = f"{latest + SAVE_EVERY}.orbax-checkpoint-tmp"
    if not os.path.exists(os.path.join(ckpt_dir, name)):  # Else the kill itself interrupted that save.
      shutil.copytree(os.path.join(ckpt_dir, str(latest)), os.path.join(ckpt_dir, name))
    planted.append(name)
  name = str(NUM_STEPS)
  shutil.copytree(os.path.join(reference, ckpt_lib.SUBDIR, name), os.path.join(ckpt_dir, name))
  os.remove(os.path.join(ckpt_dir, name, ckpt_lib.COMMIT_MARKER))
  return planted + [name]


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_kill_9_and_half_written_checkpoints_then_rerun_resumes_from_last_complete_one(
    tmp_path, shapes_data_dir, xla_cache_dir, reference):
  """kill -9 at a random step after the first save; then saves that died half-way are planted; the rerun resumes
  from the last complete checkpoint (never a half-written one) and ends equal to the uninterrupted run."""
  workdir = str(tmp_path / "run")
  ckpt_dir = _ckpt_dir(workdir)
  args = _flags(shapes_data_dir, xla_cache_dir, workdir)
  # Any step after the first save, early enough that the run is still going when the signal lands.
  kill_at = random.randint(SAVE_EVERY + 1, NUM_STEPS - 6)
  with runs.running(runs.run_subprocess(args, devices=DEVICES)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(workdir) >= kill_at and ckpt_lib.complete_steps(ckpt_dir),
                  proc, what=f"step {kill_at}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  killed_at = runs.last_logged_step(workdir)
  saved = ckpt_lib.complete_steps(ckpt_dir)
  context = f"aimed at step {kill_at}, killed at {killed_at}, committed steps {saved}"
  assert saved and saved[-1] <= killed_at < NUM_STEPS, context
  assert not os.path.exists(os.path.join(workdir, "done.json"))

  planted = _plant_half_written(ckpt_dir, reference, saved[-1])
  assert ckpt_lib.complete_steps(ckpt_dir) == saved, context
  runs.assert_trees_close(finetune.load_params(workdir),
                          finetune.load_params(os.path.join(ckpt_dir, str(saved[-1]))), **EXACT)
  with pytest.raises(ValueError, match="incomplete checkpoint"):
    finetune.load_params(os.path.join(ckpt_dir, str(NUM_STEPS)))

  output = runs.run("experiments.train", args, devices=DEVICES)
  assert _resumed_from(output) == saved[-1], f"{context}, planted {planted}"
  _assert_same_run(workdir, reference)
  # The never-committed directory is set aside for inspection; Orbax removed its temporary one.
  leftovers = sorted(name for name in os.listdir(ckpt_dir) if not name.isdigit())
  assert leftovers == [f"{NUM_STEPS}.incomplete"], leftovers


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_sigterm_saves_the_current_step_and_rerun_resumes_there(tmp_path, shapes_data_dir, xla_cache_dir,
                                                                reference):
  workdir = str(tmp_path / "run")
  args = _flags(shapes_data_dir, xla_cache_dir, workdir)
  term_at = random.choice([s for s in range(SAVE_EVERY + 1, NUM_STEPS - 6) if s % SAVE_EVERY])
  with runs.running(runs.run_subprocess(args, devices=DEVICES)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(workdir) >= term_at, proc, what=f"step {term_at}")
    proc.send_signal(signal.SIGTERM)
    output = runs.finish(proc, expect_rc=0)
  match = re.search(r"Preemption: saved step (\d+)", output)
  assert match, output[-4000:]
  stopped = int(match.group(1))
  # The step it stopped at is saved, whether or not it is a multiple of SAVE_EVERY, and is the latest.
  assert term_at <= stopped < NUM_STEPS
  assert ckpt_lib.complete_steps(_ckpt_dir(workdir))[-1] == stopped
  assert runs.last_logged_step(workdir) == stopped
  assert not os.path.exists(os.path.join(workdir, "done.json"))

  output = runs.run("experiments.train", args, devices=DEVICES)
  assert _resumed_from(output) == stopped
  _assert_same_run(workdir, reference)


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_resume_is_exact_after_a_corrupt_training_record(tmp_path, shapes_data_dir, xla_cache_dir):
  """One corrupt record, read early in epoch 0: a run stopped by SIGTERM after it and rerun reads the same records
  as the uninterrupted run on the same data (the checkpoint records where the input stream stands), so it ends
  bitwise equal to it."""
  index = runs.record_index_at(runs.data_config(name="shapes", builder_config="small", data_dir=shapes_data_dir,
                                                preprocess="cifar", eval_split="test", cache=True), 5, local_batch=32)
  data_dir = runs.corrupt_copy(shapes_data_dir, tmp_path / "tfds", "train", index)
  reference = str(tmp_path / "reference")
  runs.run("experiments.train", _flags(data_dir, xla_cache_dir, reference), devices=DEVICES)
  workdir = str(tmp_path / "run")
  args = _flags(data_dir, xla_cache_dir, workdir)
  term_at = 9  # After the corrupt record (step 1) and not a multiple of SAVE_EVERY.
  with runs.running(runs.run_subprocess(args, devices=DEVICES)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(workdir) >= term_at, proc, what=f"step {term_at}")
    proc.send_signal(signal.SIGTERM)
    output = runs.finish(proc, expect_rc=0)
  assert "Skipped 1 corrupt training record" in output, output[-3000:]
  stopped = int(re.search(r"Preemption: saved step (\d+)", output).group(1))
  assert stopped < NUM_STEPS
  output = runs.run("experiments.train", args, devices=DEVICES)
  assert _resumed_from(output) == stopped
  _assert_same_run(workdir, reference)


@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_fault_campaign_kills_at_random_moments_and_the_run_ends_as_if_never_interrupted(
    tmp_path, shapes_data_dir, xla_cache_dir, reference):
  """kill -9 at random steps and in the middle of asynchronous checkpoint writes, then a SIGTERM, each followed by a
  restart of the same command: the run ends with the uninterrupted run's final parameters, per-step losses and
  final evaluation record, bitwise. Run by CI (.ci/run)."""
  workdir = str(tmp_path / "run")
  ckpt_dir = _ckpt_dir(workdir)
  args = _flags(shapes_data_dir, xla_cache_dir, workdir)
  rng = random.Random()
  seed = rng.randrange(1 << 30)
  rng.seed(seed)
  events, writes_interrupted, attempts = [], 0, 0

  def writing():
    return os.path.isdir(ckpt_dir) and any(n.endswith(".orbax-checkpoint-tmp") for n in os.listdir(ckpt_dir))

  while (len(events) < 4 or not writes_interrupted) and attempts < 10:
    attempts += 1
    start = runs.last_logged_step(workdir)
    if start >= NUM_STEPS - 6:
      break
    mid_write = not writes_interrupted and len(events) % 2 == 1
    target = rng.randint(start + 1, min(start + 6, NUM_STEPS - 5))
    with runs.running(runs.run_subprocess(args, devices=DEVICES)) as proc:
      if mid_write:  # The next save in flight: its temporary directory is there until it is committed.
        runs.wait_for(lambda: writing() or runs.last_logged_step(workdir) >= NUM_STEPS - 5, proc,
                      what="a checkpoint write", poll=0.002)
      else:
        runs.wait_for(lambda: runs.last_logged_step(workdir) >= target, proc, what=f"step {target}")
      caught = writing()
      proc.send_signal(signal.SIGKILL)
      proc.wait()
    writes_interrupted += caught and mid_write
    events.append(("kill -9 during a write" if caught else "kill -9", runs.last_logged_step(workdir)))
  context = f"seed {seed}: {events}"
  assert writes_interrupted, f"no kill landed during a checkpoint write ({context})"

  # A SIGTERM mid-run saves the step it stopped at.
  term_at = min(runs.last_logged_step(workdir) + 2, NUM_STEPS - 2)
  with runs.running(runs.run_subprocess(args, devices=DEVICES)) as proc:
    runs.wait_for(lambda: runs.last_logged_step(workdir) >= term_at, proc, what=f"step {term_at}")
    proc.send_signal(signal.SIGTERM)
    output = runs.finish(proc, expect_rc=0)
  stopped = int(re.search(r"Preemption: saved step (\d+)", output).group(1))
  assert ckpt_lib.complete_steps(ckpt_dir)[-1] == stopped, context

  runs.run("experiments.train", args, devices=DEVICES)
  _assert_same_run(workdir, reference)
  with open(os.path.join(workdir, "done.json")) as f, open(os.path.join(reference, "done.json")) as g:
    assert json.load(f) == json.load(g), context
  eval_records = [[r for r in files.read_records(os.path.join(d, "metrics.jsonl")) if r["split"] == "eval"]
                  for d in (workdir, reference)]
  assert [{k: v for k, v in r.items() if k != "wall_time"} for r in eval_records[0]][-1] == \
      [{k: v for k, v in r.items() if k != "wall_time"} for r in eval_records[1]][-1], context


# ----------------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_non_finite_loss_stops_with_the_step_and_keeps_a_finite_checkpoint(tmp_path, shapes_data_dir,
                                                                           xla_cache_dir):
  """An absurd learning rate: the run stops with an error naming the step; every checkpoint it left is finite."""
  workdir = str(tmp_path / "run")
  args = _flags(shapes_data_dir, xla_cache_dir, workdir, **{"schedule.base_lr": 1e12, "checkpoint_every_steps": 1})
  output = runs.run("experiments.train", args, devices=DEVICES, expect_rc=1)
  # Either the loss overflows first, or the update does (the loss of step k is computed before update k).
  match = re.search(r"NonFiniteLossError: non-finite (?:training loss \(\S+\) at|parameters or optimizer state "
                    r"after) step (\d+)\D.*the last checkpoint \(step (\d+)\) is finite", output)
  assert match, output[-4000:]
  bad_step, last_step = int(match.group(1)), int(match.group(2))
  saved = ckpt_lib.complete_steps(_ckpt_dir(workdir))
  assert saved[-1] == last_step == bad_step - 1  # Every step before it was saved (checkpoint_every_steps=1).
  for step in saved:
    variables = finetune.load_params(os.path.join(_ckpt_dir(workdir), str(step)))
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
      assert np.isfinite(leaf).all(), f"{jax.tree_util.keystr(path)} is not finite in step {step}"
  assert not os.path.exists(os.path.join(workdir, "done.json"))


# ----------------------------------------------------------------------------------------------------------------
# Topology
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.ci  # Run by CI's second pytest line (.ci/run).
def test_evaluate_on_other_device_counts(tmp_path, reference):
  """Trained and saved on 4 devices; evaluated by experiments.evaluate on 1 and on 2 devices: the same metrics."""
  workdirs = {1: reference, 2: str(tmp_path / "copy")}
  shutil.copytree(reference, workdirs[2])  # Each evaluation writes eval_step<S>.json into its workdir.
  procs = {n: runs.start("experiments.evaluate", [f"--workdir={w}"], devices=n) for n, w in workdirs.items()}
  with runs.running(procs[1]), runs.running(procs[2]):
    for proc in procs.values():
      runs.finish(proc)
  with open(os.path.join(reference, "done.json")) as f:
    want = json.load(f)  # The training run's final evaluation, on 4 devices.
  for devices, workdir in workdirs.items():
    with open(os.path.join(workdir, f"eval_step{NUM_STEPS}.json")) as f:
      got = json.load(f)
    assert got["step"] == NUM_STEPS
    # Counts of correct examples out of 500: equal. The mean loss differs only by the order of float32 additions.
    assert (got["top1"], got["top5"]) == (want["top1"], want["top5"]), devices
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), devices


# ----------------------------------------------------------------------------------------------------------------
# Starting from weights (in this process, on the 4 devices of conftest.py)
# ----------------------------------------------------------------------------------------------------------------
def test_init_from_a_missing_path_is_a_clear_error(tmp_path, shapes_data_dir, xla_cache_dir):
  config = runs.tiny_config(shapes_data_dir, xla_cache_dir, init_from=str(tmp_path / "nowhere"))
  with pytest.raises(ValueError, match="nowhere does not exist; expected a run's workdir"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(os.path.join(tmp_path, "run", ckpt_lib.SUBDIR))


def _variables_of(config, **model_overrides):
  """Random {'params', 'batch_stats'} with the names and shapes of `config`'s model (no compilation)."""
  from resnet_jax import data
  config = config.copy_and_resolve_references()
  for key, value in model_overrides.items():
    config.model[key] = value
  parts = train.build(config, data.info(config.data))
  shapes = jax.eval_shape(lambda: train.init_variables(parts.eval_model, jax.random.PRNGKey(0),
                                                       parts.info.image_shape))
  values = np.random.default_rng(0)
  return jax.tree.map(lambda s: values.standard_normal(s.shape).astype(s.dtype), shapes)


def _names(variables):
  """'params/stem/conv/kernel' -> shape, in flattening order (the order merge_for_finetune checks)."""
  return {"/".join(str(k.key) for k in path): np.shape(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]}


@pytest.mark.parametrize("source, message", [
    ({"width": 1.0}, "has shape {loaded} in the loaded weights but {model} in the model"),  # Another width.
    ({"name": "cifar_resnet32"}, "of the loaded weights is not in the model"),  # A deeper network.
])
def test_init_from_incompatible_weights_names_the_first_mismatch(tmp_path, shapes_data_dir, xla_cache_dir,
                                                                  source, message):
  config = runs.tiny_config(shapes_data_dir, xla_cache_dir, init_from=str(tmp_path / "weights"))
  loaded = _variables_of(config, **source)
  finetune.save_params(tmp_path / "weights", loaded)
  model, loaded = _names(_variables_of(config)), _names(loaded)
  first = next(name for name in {**model, **loaded}
               if model.get(name) != loaded.get(name) and name.split("/")[1] != "head")  # A new head is fine.
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert f"'{first}'" in str(error.value)
  assert message.format(loaded=loaded.get(first), model=model.get(first)) in str(error.value)


# reinit_head: seed 1, so that the fresh head is not the reference run's initial one (seed 0) trained a little.
@pytest.mark.parametrize("num_classes, reinit_head, seed", [(12, False, 0), (10, True, 1)],
                         ids=["12_classes", "reinit_head"])
def test_init_from_other_classes_with_frozen_backbone_trains_only_a_new_head(tmp_path, shapes_data_dir,
                                                                              xla_cache_dir, reference, num_classes,
                                                                              reinit_head, seed):
  """Fine-tuning the reference run as a linear probe, with 12 classes or with 10 new ones (`reinit_head`): a new
  head, the backbone untouched."""
  workdir = str(tmp_path / "probe")
  config = runs.tiny_config(shapes_data_dir, xla_cache_dir, init_from=reference, freeze_backbone=True,
                            reinit_head=reinit_head, seed=seed, num_steps=4, checkpoint_every_steps=4,
                            **{"data.num_classes": num_classes})
  train.train_and_evaluate(config, workdir)
  before, after = runs.final_params(reference), runs.final_params(workdir)
  runs.assert_trees_close(runs.without_head(after["params"]), runs.without_head(before["params"]), **EXACT)
  runs.assert_trees_close(after["batch_stats"], before["batch_stats"], **EXACT)

  # The head was re-initialised (the engine's own initialisation), then trained.
  from resnet_jax import data
  parts = train.build(config, data.info(config.data))
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
  init = jax.jit(functools.partial(train.init_variables, parts.eval_model, image_shape=parts.info.image_shape))
  initial = init(init_rng)["params"]["head"]
  kernel, start = after["params"]["head"]["dense"]["kernel"], np.asarray(initial["dense"]["kernel"])
  loaded = before["params"]["head"]["dense"]["kernel"]
  assert loaded.shape[-1] == 10
  assert kernel.shape == start.shape and kernel.shape[-1] == num_classes
  # Trained, but close to where it started: a head drawn from any other initialisation (the loaded one included)
  # would be about sqrt(2) x |start| away, a head left untrained 0 away.
  distance = np.linalg.norm(kernel - start) / np.linalg.norm(start)
  assert 0 < distance < 0.5, distance
  if loaded.shape == kernel.shape:
    assert np.linalg.norm(kernel - loaded) / np.linalg.norm(start) > 0.5
