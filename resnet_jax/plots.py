"""Figures for sweeps, searches, lesion studies and evaluations, drawn with matplotlib's Agg canvas (no display, no
pyplot state).

- `plot_errors`: training error (dashed) and test error (bold) against steps, one colour per run, with plain and
  residual networks side by side: the layout of Fig. 6 of He et al. (2015).
- `plot_loss`: training loss against steps, one line per run, in the same panels.
- `plot_signal`: standard deviation of each block's residual-branch output against the block's index, one line per
  run (Fig. 7 of He et al. 2015).
- `plot_error_bands`, `plot_signal_bands`: the same two figures over seeds, the mean of each configuration's runs
  with a band from the lowest to the highest (the signal also sorted by magnitude, as Fig. 7's lower panel).
- `plot_lesion`: bar chart of the change in top-1 accuracy when each block is skipped (Veit et al. 2016).
- `plot_confusion`: an evaluation's confusion matrix, rows normalised, axes named by class.
- `plot_mistakes`: a grid of images with their titles (the most confident mistakes: true and predicted names).
- `plot_search`: a hyperparameter search's metric against each searched setting, one panel per setting.

Inputs are plain data (metrics records as read from metrics.jsonl, lists of numbers); every figure is written
atomically (temporary file, then rename), so an interrupted plot never leaves a truncated PNG. Each function
returns its `Figure` as well, for inspection.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_PANEL_ORDER = ("plain", "residual")


def save(figure: Figure, path: str, dpi: int = 120) -> None:
  """Renders `figure` as PNG into `path` through a temporary file renamed over it."""
  FigureCanvasAgg(figure)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # Same directory (an atomic rename), unique name, the umask's permissions.
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    with open(tmp, "xb") as f:
      figure.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def _series(records: Sequence[dict], split: str, key: str, transform=lambda v: v) -> tuple[list, list]:
  """(steps, values) of `key` in the records of `split`, by step, skipping records without it."""
  points = sorted((r["step"], transform(r[key])) for r in records
                  if r.get("split") == split and r.get(key) is not None)
  return [s for s, _ in points], [v for _, v in points]


def _percent_error(top1: float) -> float:
  return 100.0 * (1.0 - top1)


def _panels(names: Sequence[str], groups: dict[str, str] | None) -> list[tuple[str, list[str]]]:
  """[(panel title, run names)]: one panel per group (plain first), or a single untitled panel."""
  if not groups:
    return [("", list(names))]
  titles = sorted({groups[n] for n in names}, key=lambda g: (_PANEL_ORDER + (g,)).index(g))
  return [(title, [n for n in names if groups[n] == title]) for title in titles]


def _figure(num_panels: int, height: float = 4.0) -> tuple[Figure, list[Any]]:
  figure = Figure(figsize=(5.5 * num_panels, height))
  axes = figure.subplots(1, num_panels, sharey=True, squeeze=False)[0]
  return figure, list(axes)


def _colours(count: int) -> list:
  """Distinct colours: the qualitative palette up to ten lines, a continuous map beyond."""
  cmap = colormaps["tab10" if count <= 10 else "viridis"]
  return [cmap(i if count <= 10 else i / max(1, count - 1)) for i in range(count)]


def plot_errors(histories: dict[str, Sequence[dict]], path: str, *,
                groups: dict[str, str] | None = None) -> Figure:
  """Fig. 6 style: training error dashed, test error bold, in percent against steps; one colour per run.

  Args:
    histories: run name -> metrics records ({'step', 'split': 'train'|'eval', 'top1', ...}).
    path: the PNG to write.
    groups: run name -> panel ('plain' / 'residual'); None draws one panel.
  """
  panels = _panels(list(histories), groups)
  figure, axes = _figure(len(panels))
  for ax, (title, names) in zip(axes, panels):
    for colour, name in zip(_colours(len(names)), names):
      steps, values = _series(histories[name], "train", "top1", _percent_error)
      ax.plot(steps, values, linestyle="--", linewidth=1.0, color=colour)
      steps, values = _series(histories[name], "eval", "top1", _percent_error)
      ax.plot(steps, values, linestyle="-", linewidth=2.2, color=colour, label=name,
              marker="o" if len(steps) == 1 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="dashed: train, bold: test", title_fontsize="small")
  axes[0].set_ylabel("error (%)")
  save(figure, path)
  return figure


def plot_loss(histories: dict[str, Sequence[dict]], path: str, *,
              groups: dict[str, str] | None = None) -> Figure:
  """Training loss against steps, one line per run, panels as in `plot_errors`."""
  panels = _panels(list(histories), groups)
  figure, axes = _figure(len(panels))
  for ax, (title, names) in zip(axes, panels):
    for colour, name in zip(_colours(len(names)), names):
      steps, values = _series(histories[name], "train", "loss")
      ax.plot(steps, values, color=colour, label=name, marker="o" if len(steps) == 1 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  axes[0].set_ylabel("training loss")
  save(figure, path)
  return figure


def plot_signal(profiles: dict[str, Sequence[tuple[str, float]]], path: str) -> Figure:
  """Fig. 7 style: std of each block's residual-branch output against the block index, one line per run.

  Args:
    profiles: run name -> [(block path, std)] in network order.
    path: the PNG to write.
  """
  figure = Figure(figsize=(7.0, 4.0))
  ax = figure.subplots()
  for colour, (name, profile) in zip(_colours(len(profiles)), profiles.items()):
    ax.plot(range(len(profile)), [std for _, std in profile], marker=".", color=colour, label=name)
  ax.set_xlabel("block index")
  ax.set_ylabel("std of the residual-branch output")
  ax.set_title("Branch response per block (last evaluation)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  save(figure, path)
  return figure


def plot_lesion(rows: Sequence[dict], baseline_top1: float, path: str, *, title: str = "Lesion study") -> Figure:
  """Bars of the top-1 change (percentage points) when each block's branch is skipped, coloured by stage.

  Blocks that change the feature shape (downsampling) are hatched: there the shortcut is a projection or a padded
  identity, not a plain identity.

  Args:
    rows: one dict per block with 'block', 'path' ('stage2/block0'), 'changes_shape' and 'delta_top1'.
    baseline_top1: top-1 of the intact network, shown in the title.
    path: the PNG to write.
  """
  figure = Figure(figsize=(max(6.0, 0.3 * len(rows) + 2.0), 4.0))
  ax = figure.subplots()
  stages = list(dict.fromkeys(r["path"].split("/")[0] for r in rows))  # Network order.
  colours = dict(zip(stages, _colours(len(stages))))
  for row in rows:
    stage = row["path"].split("/")[0]
    delta = 100.0 * (row["delta_top1"] or 0.0)
    ax.bar(row["block"], delta, color=colours[stage], hatch="//" if row.get("changes_shape") else None,
           edgecolor="black", linewidth=0.5, label=stage)
  handles, labels = ax.get_legend_handles_labels()
  unique = dict(zip(labels, handles))
  ax.legend(unique.values(), unique.keys(), fontsize="small")
  ax.axhline(0.0, color="black", linewidth=0.8)
  ax.set_xticks([r["block"] for r in rows])
  ax.tick_params(axis="x", labelsize="small")
  ax.set_xlabel("skipped block (hatched: changes the feature shape)")
  ax.set_ylabel("change in top-1 accuracy (points)")
  ax.set_title(f"{title} (intact top-1 {100.0 * baseline_top1:.2f} %)")
  ax.grid(axis="y", alpha=0.3)
  save(figure, path)
  return figure


def plot_confusion(matrix, names: Sequence[str], path: str, *, title: str = "Confusion matrix") -> Figure:
  """Rows (true class) normalised to fractions, coloured; counts written in the cells when there are few classes.

  Args:
    matrix: counts [true class, predicted class].
    names: the class names, in label order (tick labels on both axes, up to 60 classes).
    path: the PNG to write.
  """
  matrix = np.asarray(matrix)
  n = len(names)
  totals = matrix.sum(axis=1, keepdims=True)
  fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape, float), where=totals > 0)
  side = min(max(4.0, 0.45 * n + 2.0), 30.0)
  figure = Figure(figsize=(side + 1.2, side))
  ax = figure.subplots()
  image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  if n <= 60:
    ax.set_xticks(range(n), [str(name) for name in names], rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(n), [str(name) for name in names], fontsize="small")
  if n <= 20:
    for i in range(n):
      for j in range(n):
        if matrix[i, j]:
          ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize="x-small",
                  color="white" if fractions[i, j] > 0.5 else "black")
  ax.set_xlabel("predicted class")
  ax.set_ylabel("true class")
  ax.set_title(title)
  figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
  save(figure, path)
  return figure


def plot_mistakes(images: Sequence[Any], titles: Sequence[str], path: str, *, title: str = "",
                  columns: int = 4) -> Figure:
  """A grid of images (uint8 [H, W, 3]), each with its title; a note instead when there are none."""
  rows = max(1, -(-len(images) // columns))
  figure = Figure(figsize=(2.6 * columns, 2.9 * rows + 0.4))
  axes = figure.subplots(rows, columns, squeeze=False)
  for ax in axes.flat:
    ax.set_axis_off()
  for ax, image, text in zip(axes.flat, images, titles):
    ax.imshow(image, interpolation="nearest")
    ax.set_title(text, fontsize="small", color="firebrick")
  if not images:
    axes[0, 0].text(0.0, 0.5, "no mistakes", fontsize="large")
  if title:
    figure.suptitle(title)
  save(figure, path)
  return figure


def plot_search(points: dict[str, Sequence[tuple[Any, float, str]]], path: str, *, metric: str,
                log_x: Sequence[str] = ()) -> Figure:
  """A search's objective against each searched setting: one panel per setting, one point per trial.

  Args:
    points: setting -> [(value, metric, status)], status 'finished' (filled) or 'pruned' (open: the last value it
      reported). Values that are not numbers are drawn as categories.
    path: the PNG to write.
    metric: the y-axis label.
    log_x: the settings drawn on a log scale (log-uniform ranges).
  """
  keys = list(points)
  figure, axes = _figure(max(1, len(keys)))
  for ax, key in zip(axes, keys):
    values = [v for v, _, _ in points[key]]
    categorical = any(isinstance(v, str) for v in values)
    categories = list(dict.fromkeys(str(v) for v in values))
    for status in ("finished", "pruned"):
      chosen = [(v, m) for v, m, s in points[key] if s == status and m is not None]
      xs = [categories.index(str(v)) if categorical else v for v, _ in chosen]
      ax.scatter(xs, [m for _, m in chosen], s=40, label=status, edgecolors="tab:blue",
                 facecolors="tab:blue" if status == "finished" else "none")
    if categorical:
      ax.set_xticks(range(len(categories)), categories)
    elif key in log_x:
      ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  axes[0].set_ylabel(metric)
  save(figure, path)
  return figure


def _band(histories: Sequence[Sequence[dict]], split: str, key: str, transform=lambda v: v):
  """(steps, mean, low, high) of `key` over runs, at the steps that every run logged."""
  series = [dict(zip(*_series(h, split, key, transform))) for h in histories]
  steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
  values = np.array([[s[t] for t in steps] for s in series], float).reshape(len(series), len(steps))
  return steps, values.mean(0), values.min(0), values.max(0)


def plot_error_bands(groups: dict[str, Sequence[Sequence[dict]]], path: str, *,
                     panels: dict[str, str] | None = None) -> Figure:
  """Fig. 6 over seeds: for each configuration, the mean over its runs of the training error (dashed) and the test
  error (bold), in percent against steps, each with a band from the lowest to the highest run.

  Args:
    groups: configuration label -> the metrics records of each of its runs (one per seed).
    path: the PNG to write.
    panels: configuration label -> panel ('plain' / 'residual'); None draws one panel.
  """
  layout = _panels(list(groups), panels)
  figure, axes = _figure(len(layout))
  for ax, (title, labels) in zip(axes, layout):
    for colour, label in zip(_colours(len(labels)), labels):
      runs = groups[label]
      steps, mean, low, high = _band(runs, "train", "top1", _percent_error)
      ax.plot(steps, mean, linestyle="--", linewidth=1.0, color=colour)
      ax.fill_between(steps, low, high, color=colour, alpha=0.12, linewidth=0)
      steps, mean, low, high = _band(runs, "eval", "top1", _percent_error)
      ax.plot(steps, mean, linestyle="-", linewidth=2.2, color=colour, label=f"{label} (n={len(runs)})",
              marker="o" if len(steps) == 1 else None)
      ax.fill_between(steps, low, high, color=colour, alpha=0.25, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="mean over seeds, band: min to max\ndashed: train, bold: test",
              title_fontsize="small")
  axes[0].set_ylabel("error (%)")
  save(figure, path)
  return figure


def plot_signal_bands(groups: dict[str, Sequence[Sequence[tuple[str, float]]]], path: str) -> Figure:
  """Fig. 7 over seeds: the std of each block's residual-branch output against the block's index (left) and sorted
  by magnitude (right), the mean over each configuration's runs with a band from the lowest to the highest.

  Args:
    groups: configuration label -> one profile [(block path, std)] per run, in network order.
    path: the PNG to write.
  """
  figure, (by_index, by_size) = _figure(2)
  for colour, (label, profiles) in zip(_colours(len(groups)), groups.items()):
    values = np.array([[std for _, std in p] for p in profiles], float)
    for ax, data in ((by_index, values), (by_size, -np.sort(-values, axis=1))):
      x = range(data.shape[1])
      ax.plot(x, data.mean(0), marker=".", color=colour, label=f"{label} (n={len(profiles)})")
      ax.fill_between(x, data.min(0), data.max(0), color=colour, alpha=0.2, linewidth=0)
  by_index.set_xlabel("block index")
  by_size.set_xlabel("block, sorted by response")
  by_index.set_ylabel("std of the residual-branch output")
  by_index.set_title("Branch response per block (last evaluation)")
  by_size.set_title("Sorted by magnitude")
  for ax in (by_index, by_size):
    ax.grid(alpha=0.3)
  by_index.legend(fontsize="small")
  save(figure, path)
  return figure
