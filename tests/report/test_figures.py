"""The report's figures are real PNGs of the right shape, drawn from the rows and grids."""

import torch
from PIL import Image

from ssl_mae_plugin.mae.visualize import ImageGrid
from ssl_mae_plugin.report import plot_accuracy_bars, plot_loss_curves, save_image_grid


def size_of(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_loss_curves_skip_methods_without_losses_and_none_at_all(tmp_path):
    path = plot_loss_curves(
        {"mae": [1.0, 0.5, 0.4], "simclr": [5.0, 4.0, 3.5], "x": []}, tmp_path / "l.png"
    )
    assert size_of(path)[0] > 300
    assert plot_loss_curves({"x": []}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_accuracy_bars_need_some_accuracy(tmp_path):
    rows = [
        {"label": "mae", "backbone": "vit_tiny/4", "linear": None,
         "knn": {"top1": 0.4, "ci95": {"top1": [0.35, 0.45]}}},
        {"label": "mae (untrained)", "backbone": "vit_tiny/4", "knn": {"top1": 0.3},
         "linear": None},
    ]  # fmt: skip
    assert size_of(plot_accuracy_bars(rows, tmp_path / "a.png"))[0] > 300
    empty = [{**row, "knn": None} for row in rows]
    assert plot_accuracy_bars(empty, tmp_path / "b.png") is None


def test_image_grid_has_one_row_per_image_and_a_column_per_view(tmp_path):
    columns = {name: torch.rand(3, 8, 8, 3) for name in ("a", "b")}
    wide = size_of(save_image_grid(ImageGrid("two views", columns), tmp_path / "g.png"))
    gray = {name: torch.rand(1, 8, 8, 1) for name in ("a", "b", "c", "d")}
    flat = size_of(save_image_grid(ImageGrid("gray", gray), tmp_path / "h.png"))
    assert wide[1] > wide[0]  # three rows of two columns: taller than wide
    assert flat[0] > flat[1]  # one row of four columns: wider than tall
