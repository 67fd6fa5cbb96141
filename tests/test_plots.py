"""Sweep and lesion figures: PNG files written atomically, with the lines and panels the papers' figures have."""
import os

import pytest
from matplotlib.figure import Figure

from resnet_jax import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(top1_train, top1_eval, loss, every=10):
  """Metrics records like the engine's: train lines every `every` steps, one eval line per eval value."""
  records = [{"step": every * (i + 1), "split": "train", "loss": value, "top1": t}
             for i, (t, value) in enumerate(zip(top1_train, loss))]
  last = every * len(top1_train)
  records += [{"step": last * (i + 1) // len(top1_eval), "split": "eval", "top1": t, "loss": 1.0}
              for i, t in enumerate(top1_eval)]
  return records


HISTORIES = {
    "depth=20,shortcut=none": _history([0.3, 0.5, 0.6], [0.45, 0.55], [2.0, 1.5, 1.2]),
    "depth=56,shortcut=none": _history([0.2, 0.4, 0.5], [0.35, 0.45], [2.2, 1.8, 1.5]),
    "depth=20,shortcut=A": _history([0.3, 0.6, 0.7], [0.5, 0.65], [2.0, 1.2, 0.9]),
}
GROUPS = {name: "plain" if "none" in name else "residual" for name in HISTORIES}


def _assert_png(path):
  with open(path, "rb") as f:
    head = f.read(8)
  assert head == PNG_MAGIC
  assert os.path.getsize(path) > 1000
  leftovers = [f for f in os.listdir(os.path.dirname(path)) if f.endswith(".tmp")]
  assert not leftovers


def test_error_plot_puts_plain_and_residual_side_by_side_with_dashed_train_and_bold_test(tmp_path):
  path = str(tmp_path / "error.png")
  figure = plots.plot_errors(HISTORIES, path, groups=GROUPS)
  _assert_png(path)
  axes = figure.axes
  assert [ax.get_title() for ax in axes] == ["plain", "residual"]
  for ax, count in zip(axes, (2, 1)):
    lines = ax.get_lines()
    assert len(lines) == 2 * count  # A train and a test curve per run.
    train, test = lines[0::2], lines[1::2]
    assert all(line.get_linestyle() == "--" for line in train)
    assert all(line.get_linestyle() == "-" and line.get_linewidth() > train[0].get_linewidth() for line in test)
    assert [line.get_color() for line in train] == [line.get_color() for line in test]
  # Errors are in percent: 1 - 0.3 -> 70.
  first_train = axes[0].get_lines()[0]
  assert list(first_train.get_xdata()) == [10, 20, 30]
  assert list(first_train.get_ydata()) == pytest.approx([70.0, 50.0, 40.0])


def test_error_plot_without_groups_has_one_panel(tmp_path):
  figure = plots.plot_errors(HISTORIES, str(tmp_path / "error.png"))
  assert len(figure.axes) == 1
  assert len(figure.axes[0].get_lines()) == 2 * len(HISTORIES)


def test_loss_plot_has_one_line_per_run(tmp_path):
  path = str(tmp_path / "loss.png")
  figure = plots.plot_loss(HISTORIES, path, groups=GROUPS)
  _assert_png(path)
  assert sum(len(ax.get_lines()) for ax in figure.axes) == len(HISTORIES)
  assert list(figure.axes[1].get_lines()[0].get_ydata()) == [2.0, 1.2, 0.9]


def test_single_point_histories_still_draw(tmp_path):
  """A four-step run logs one train and one eval record: the figure must show them, not an empty frame."""
  path = str(tmp_path / "error.png")
  figure = plots.plot_errors({"r": _history([0.5], [0.4], [1.0])}, path)
  _assert_png(path)
  assert all(len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None")
             for line in figure.axes[0].get_lines()[1:])


def test_signal_plot_has_one_line_per_run_over_block_index(tmp_path):
  profiles = {"plain": [("stage1/block0", 1.0), ("stage1/block1", 2.0), ("stage2/block0", 3.0)],
              "residual": [("stage1/block0", 0.5), ("stage1/block1", 0.4), ("stage2/block0", 0.3)]}
  path = str(tmp_path / "signal.png")
  figure = plots.plot_signal(profiles, path)
  _assert_png(path)
  lines = figure.axes[0].get_lines()
  assert len(lines) == 2
  assert list(lines[0].get_xdata()) == [0, 1, 2]
  assert list(lines[1].get_ydata()) == [0.5, 0.4, 0.3]


def test_lesion_plot_has_one_bar_per_block(tmp_path):
  rows = [{"block": i, "path": f"stage{1 + i // 3}/block{i % 3}", "changes_shape": i == 3,
           "delta_top1": -0.01 * i} for i in range(6)]
  path = str(tmp_path / "lesion.png")
  figure = plots.plot_lesion(rows, 0.9, path)
  _assert_png(path)
  bars = figure.axes[0].patches
  assert len(bars) == 6
  assert [b.get_height() for b in bars] == pytest.approx([-1.0 * i for i in range(6)])  # percentage points
  assert bars[3].get_hatch() == "//" and bars[2].get_hatch() is None


def test_a_plot_failing_while_rendering_leaves_the_previous_file_untouched(tmp_path):
  path = tmp_path / "error.png"
  plots.plot_errors(HISTORIES, str(path))
  before = path.read_bytes()
  figure = Figure()
  figure.text(0.5, 0.5, r"$\notamathtextcommand$")  # Fails at draw time, inside savefig.
  with pytest.raises(ValueError):
    plots.save(figure, str(path))
  assert path.read_bytes() == before
  assert sorted(os.listdir(tmp_path)) == ["error.png"]


def test_error_bands_draw_the_mean_over_seeds_with_a_min_max_band(tmp_path):
  seeds = {"shortcut=none": [_history([0.2, 0.4], [0.5], [2.0, 1.5]), _history([0.4, 0.6], [0.7], [2.0, 1.0])],
           "shortcut=A": [_history([0.5, 0.7], [0.8], [1.5, 1.0])]}
  path = str(tmp_path / "error_seeds.png")
  figure = plots.plot_error_bands(seeds, path, panels={"shortcut=none": "plain", "shortcut=A": "residual"})
  _assert_png(path)
  plain, residual = figure.axes[:2]
  assert (plain.get_title(), residual.get_title()) == ("plain", "residual")
  train, test = plain.get_lines()[:2]
  assert train.get_linestyle() == "--" and test.get_linestyle() == "-"
  assert list(train.get_ydata()) == pytest.approx([70.0, 50.0])  # Mean error over the two seeds, in percent.
  band = plain.collections[0].get_paths()[0].vertices[:, 1]
  assert (band.min(), band.max()) == pytest.approx((40.0, 80.0))  # From the best to the worst seed.
  assert "(n=2)" in test.get_label()


def test_signal_bands_show_the_profile_in_order_and_sorted(tmp_path):
  profiles = {"A": [[("s1/b0", 1.0), ("s1/b1", 3.0)], [("s1/b0", 2.0), ("s1/b1", 1.0)]]}
  figure = plots.plot_signal_bands(profiles, str(tmp_path / "signal_seeds.png"))
  by_index, by_size = figure.axes[:2]
  assert list(by_index.get_lines()[0].get_ydata()) == [1.5, 2.0]
  assert list(by_size.get_lines()[0].get_ydata()) == [2.5, 1.0]  # Each seed sorted, then averaged.
