"""Lesion studies (Veit et al. 2016): a trained residual network evaluated with one block's residual branch skipped
at a time (the model knob `lesion_blocks`), block by block, on the run's whole eval split.

A plain network (shortcut 'none') is refused: see `PLAIN_LESION`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from resnet_jax import results

COLUMNS = ("block", "path", "changes_shape", "top1", "error", "loss", "delta_top1")

PLAIN_LESION = (
    "a lesion study is not defined for a plain network (config.model.shortcut='none'): a plain block's output is "
    "its layers' output F(x) alone, with no identity path beside it, so deleting the block leaves nothing to carry "
    "the signal to the next block. In a residual block out = x + F(x), and deleting F leaves x (Veit et al. 2016). "
    "Passing x through instead would not delete a layer of the plain net but add a shortcut it never had. "
    "Run the lesion study on a residual model (shortcut 'A', 'B' or 'C').")


def check_defined(model_config) -> None:
  """Raises ValueError (explaining why) when the model is a plain network."""
  shortcut = model_config.shortcut
  if isinstance(shortcut, str) and shortcut.lower() == "none":
    raise ValueError(PLAIN_LESION)


@dataclasses.dataclass
class LesionResult:
  """Baseline metrics of the intact network and one row per block (see COLUMNS)."""
  step: int
  baseline: dict[str, float]
  rows: list[dict[str, Any]]


def row(index: int, path: str, changes_shape: bool, metrics: dict[str, float],
        baseline: dict[str, float]) -> dict[str, Any]:
  """One lesion table row: the block, its metrics with the branch skipped, and the top-1 change vs baseline."""
  top1 = metrics.get("top1")
  return {"block": index, "path": path, "changes_shape": changes_shape, "top1": top1,
          "error": None if top1 is None else 1.0 - top1, "loss": metrics.get("loss"),
          "delta_top1": None if top1 is None else top1 - baseline["top1"]}


def study(config, workdir: str, *, step: int | None = None, echo: Callable[[str], None] = print) -> LesionResult:
  """Evaluates the run in `workdir` intact and with each block's residual branch skipped in turn.

  Raises:
    ValueError: the model is a plain network (see PLAIN_LESION).
  """
  check_defined(config.model)
  from resnet_jax import evaluation, train  # The engine, JAX and the input pipeline: only when a study actually runs.

  train.enable_compilation_cache(config.compilation_cache_dir)  # A rerun reuses the per-block compiles.
  evaluator = evaluation.checkpoint_evaluator(config, workdir, step)
  baseline = evaluator.evaluate()
  echo(f"step {evaluator.step}: intact network top-1 {baseline['top1']:.4f}")
  rows = []
  for index, (path, changes_shape) in enumerate(evaluator.eval_model.block_plan()):
    rows.append(row(index, path, changes_shape, evaluator.evaluate(lesion_blocks=(index,)), baseline))
    echo(f"block {index} ({path}) skipped: top-1 {rows[-1]['top1']:.4f} ({100 * rows[-1]['delta_top1']:+.2f} points)")
  return LesionResult(evaluator.step, baseline, rows)


def write(workdir: str, result: LesionResult) -> list[str]:
  """Writes lesion.csv, lesion.md and lesion.png into `workdir`; returns their paths."""
  from resnet_jax import plots

  paths = [os.path.join(workdir, f"lesion.{ext}") for ext in ("csv", "md", "png")]
  results.write_csv(paths[0], result.rows, COLUMNS)
  top1 = result.baseline.get("top1")
  preamble = (f"Lesion study of step {result.step}: each block's residual branch skipped in turn. Intact network: "
              f"top-1 {100 * top1:.2f} % (error {100 * (1 - top1):.2f} %). delta_top1 is the change in top-1 accuracy.")
  results.write_markdown(paths[1], result.rows, COLUMNS, preamble)
  plots.plot_lesion(result.rows, top1, paths[2], title=f"Lesion study, step {result.step}")
  return paths
