"""The report's figures: loss curves, accuracy bars and image grids (e.g. reconstructions)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from ssl_mae_plugin.data import IMAGENET_NORM
from ssl_mae_plugin.mae import MAE
from ssl_mae_plugin.mae.visualize import ImageGrid, reconstruction_grid
from ssl_mae_plugin.report.rows import PARTS, accuracy, sweep_groups
from ssl_mae_plugin.storage import atomic_path

PART_NAMES = {"knn": "k-NN", "linear": "linear probe", "finetune": "fine-tune"}


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically; returns ``path``."""
    with atomic_path(path) as partial:
        figure.savefig(partial, dpi=110)
    return path


def _epoch_chart(
    lines: dict[str, tuple[list[int], list[float]]], ylabel: str, title: str, path: Path
) -> Path:
    """One chart of ``{label: (epochs, values)}`` lines against the epoch."""
    figure = Figure(figsize=(6.5, 4))
    axes = figure.subplots()
    for label, (epochs, values) in lines.items():
        axes.plot(epochs, values, marker="o", markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return save_figure(figure, path)


def plot_loss_curves(curves: dict[str, list[float]], path: Path) -> Path | None:
    """Each method's per-epoch pretraining loss on one chart, relative to its first epoch."""
    lines = {
        f"{label} (epoch 1: {losses[0]:.3g})": (
            list(range(1, len(losses) + 1)),
            [loss / (losses[0] or 1.0) for loss in losses],
        )
        for label, losses in curves.items()
        if losses
    }
    if not lines:
        return None
    title = "Pretraining loss (each method relative to its first epoch)"
    return _epoch_chart(lines, "loss / epoch-1 loss", title, path)


def plot_knn_curves(curves: dict[str, list[dict[str, Any]]], path: Path) -> Path | None:
    """k-NN top-1 during pretraining, a line per row label (see ``pretrain.knn_monitor``).

    Args:
        curves: ``{label: [{"epoch": int, "top1": fraction}, ...]}``, e.g. from
            :func:`ssl_mae_plugin.pretrain.callbacks.knn_curve` of each row's metrics.csv.
        path: Where to write the PNG.

    Returns:
        ``path``, or ``None`` when no curve has a point.
    """
    lines = {
        label: ([point["epoch"] for point in points], [100 * point["top1"] for point in points])
        for label, points in curves.items()
        if points
    }
    if not lines:
        return None
    title = "k-NN accuracy during pretraining"
    return _epoch_chart(lines, "k-NN top-1 accuracy (%)", title, path)


def plot_accuracy_bars(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Grouped bars of k-NN / linear / fine-tune top-1 per row (controls included)."""
    parts = [p for p in PARTS if any(accuracy(r, p) for r in rows)]
    if not parts:
        return None
    labels = [f"{r['label']}\n{r['backbone']}" for r in rows]
    width = 0.8 / len(parts)
    figure = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    axes = figure.subplots()
    for offset, part in enumerate(parts):
        values = [100 * (accuracy(r, part) or 0.0) for r in rows]
        intervals = [((r.get(part) or {}).get("ci95") or {}).get("top1") for r in rows]
        errors = [
            [v - 100 * ci[0] if ci else 0.0 for v, ci in zip(values, intervals, strict=True)],
            [100 * ci[1] - v if ci else 0.0 for v, ci in zip(values, intervals, strict=True)],
        ]
        positions = [i + (offset - (len(parts) - 1) / 2) * width for i in range(len(rows))]
        bars = axes.bar(
            positions, values, width=width, label=PART_NAMES[part], yerr=errors, capsize=2
        )
        axes.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    crowded = len(rows) > 6 or max(len(label) for label in labels) > 24
    axes.set_xticks(
        range(len(rows)),
        labels,
        fontsize=8,
        rotation=30 if crowded else 0,
        ha="right" if crowded else "center",
    )
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Validation top-1 with 95 % intervals (untrained: each method's own control)")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return save_figure(figure, path)


def _top1_with_error(row: dict[str, Any], part: str) -> tuple[float, list[float]]:
    """Top-1 in percent and its ``[below, above]`` interval extent (zeros without one)."""
    value = 100 * (accuracy(row, part) or 0.0)
    interval = ((row.get(part) or {}).get("ci95") or {}).get("top1")
    return value, [value - 100 * interval[0], 100 * interval[1] - value] if interval else [0, 0]


def plot_sweep(points: list[dict[str, Any]], rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Each accuracy against the first swept key, a line per value of the second key.

    Args:
        points: The rows of one swept entry (each with ``sweep_point``).
        rows: All rows of the report (for the points' untrained control).
        path: Where to write the PNG.
    """
    parts = [p for p in PARTS if any(accuracy(row, p) is not None for row in points)]
    if not parts:
        return None
    keys = list(points[0]["sweep_point"]["values"])
    x_key, series_key = keys[0], keys[1] if len(keys) > 1 else None
    xs = [row["sweep_point"]["values"][x_key] for row in points]
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs)
    ticks = sorted(set(xs)) if numeric else list(dict.fromkeys(map(str, xs)))
    places = xs if numeric else [ticks.index(str(x)) for x in xs]
    positions = {row["label"]: place for row, place in zip(points, places, strict=True)}
    controls = {row["control"] for row in points}
    control = next((r for r in rows if r["label"] in controls), None)
    figure = Figure(figsize=(4.2 * len(parts) + 0.6, 3.8))
    for axes, part in zip(figure.subplots(1, len(parts), squeeze=False)[0], parts, strict=True):
        series = dict.fromkeys(row["sweep_point"]["values"].get(series_key) for row in points)
        for value in series:
            members = [
                row
                for row in points
                if row["sweep_point"]["values"].get(series_key) == value and row.get(part)
            ]
            measured = [_top1_with_error(row, part) for row in members]
            axes.errorbar(
                [positions[row["label"]] for row in members],
                [top1 for top1, _ in measured],
                yerr=[[e[0] for _, e in measured], [e[1] for _, e in measured]],
                marker="o",
                capsize=3,
                label=f"{series_key}={value}" if series_key else "pretrained",
            )
        if len(controls) == 1 and control and accuracy(control, part) is not None:
            axes.axhline(100 * accuracy(control, part), linestyle="--", color="grey",
                         label="untrained control")  # fmt: skip
        axes.set_xticks(ticks if numeric else range(len(ticks)), [str(t) for t in ticks])
        axes.set_xlabel(x_key)
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(PART_NAMES[part])
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    of = points[0]["sweep_point"]["of"]
    figure.suptitle(f"{of}: validation top-1 against {x_key}, 95 % intervals", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def summary_figures(rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Draw loss curves, accuracy bars and each sweep's curves; ``{title: file name}``."""
    curves = {row["label"]: row["pretrain"]["losses"] for row in rows if row["pretrain"]}
    drawn = {
        "pretraining loss": plot_loss_curves(curves, folder / "loss_curves.png"),
        "accuracy": plot_accuracy_bars(rows, folder / "accuracy.png"),
    }
    for of, points in sweep_groups(rows).items():
        drawn[f"sweep ({of})"] = plot_sweep(points, rows, folder / f"sweep_{of}.png")
    return {title: path.name for title, path in drawn.items() if path is not None}


def save_image_grid(grid: ImageGrid, path: str | Path) -> Path:
    """Draw an :class:`ImageGrid`: one row per image, its columns titled, as a PNG."""
    columns = list(grid.columns.items())
    rows = len(columns[0][1])
    figure = Figure(figsize=(2 * len(columns), 2 * rows + 0.6))
    axes = figure.subplots(rows, len(columns), squeeze=False)
    for col, (name, images) in enumerate(columns):
        for row in range(rows):
            ax = axes[row][col]
            picture = images[row].numpy()
            if picture.shape[-1] == 1:
                ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    figure.suptitle(grid.title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, Path(path))


def save_reconstruction_figure(
    model: MAE,
    images: torch.Tensor,
    path: str | Path,
    mean: Sequence[float] = IMAGENET_NORM.mean,
    std: Sequence[float] = IMAGENET_NORM.std,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """The official demo's four panels (original, masked, reconstruction, pasted) as a PNG.

    Args:
        model: The MAE to visualise.
        images: ``[N, C, H, W]`` images normalised with ``mean`` and ``std``.
        path: Where to write the PNG; parent folders are created.
        mean: Per-channel mean of the input normalisation.
        std: Per-channel standard deviation of the input normalisation.
        mask_ratio: Fraction of patches to remove; the model's default when omitted.
        noise: Optional ``[N, L]`` masking noise.
        title: What the images are; the mask ratio (and the norm-pix note) are appended.

    Returns:
        The path written.
    """
    grid = reconstruction_grid(
        model, images, mean, std, mask_ratio=mask_ratio, noise=noise, title=title
    )
    return save_image_grid(grid, path)
