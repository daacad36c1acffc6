"""The layer-sweep part of a report: accuracy by block and pooling, the best point, a figure.

The best point is picked on the validation images, so its lead over the last block's cls
token is optimistic; the summary also picks a point on half of the images (even
positions) and measures its lead on the other half, which no selection has seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ssl_mae_plugin.report.figures import PART_NAMES, save_figure
from ssl_mae_plugin.report.statistics import combine_seeds, correct_outcomes, paired_difference

PROBES = ("knn", "linear")
KEPT = ("top1", "top5", "ci95", "ci95_kind", "per_seed")


def _point_name(point: dict[str, Any]) -> dict[str, Any]:
    return {"pool": point["pool"], "block": point["block"]}


def summarize_layer_sweep(
    points_by_seed: list[list[dict[str, Any]]], labels: Sequence[int]
) -> dict[str, Any]:
    """Every point's accuracies with intervals, and per probe the best point vs the last cls.

    Args:
        points_by_seed: Per seed, the points of
            :func:`~ssl_mae_plugin.evaluation.layer_sweep.sweep_blocks` (same order).
        labels: The validation labels.

    Returns:
        ``{"depth", "points", "best"}``: ``points`` without predictions; ``best[probe]``
        names the reference (the last block's cls token, its mean token without one),
        the best point with its paired difference to the reference, and the held-out
        choice (picked on even image positions, measured on odd ones).
    """
    combined = combine_seeds(points_by_seed, labels)
    depth = max(point["block"] for point in combined) + 1
    points = [
        {
            **_point_name(point),
            **{p: point[p] and {k: point[p][k] for k in KEPT} for p in PROBES},
        }
        for point in combined
    ]
    pools = {point["pool"] for point in combined}
    reference = next(
        i
        for i, point in enumerate(combined)
        if point["block"] == depth - 1 and point["pool"] == ("cls" if "cls" in pools else "mean")
    )
    best: dict[str, Any] = {}
    for probe in PROBES:
        if not combined[0][probe]:
            continue

        def outcomes(index: int, probe: str = probe) -> list[np.ndarray]:
            return [correct_outcomes(seeded[index][probe], labels) for seeded in points_by_seed]

        top = max(range(len(combined)), key=lambda i: combined[i][probe]["top1"])
        half_a, half_b = slice(0, None, 2), slice(1, None, 2)
        chosen = max(
            range(len(combined)), key=lambda i: np.mean([o[half_a].mean() for o in outcomes(i)])
        )
        held_out = paired_difference(
            [o[half_b] for o in outcomes(chosen)], [o[half_b] for o in outcomes(reference)]
        )
        best[probe] = {
            "reference": {**_point_name(combined[reference]), **points[reference][probe]},
            "best": {**_point_name(combined[top]), **points[top][probe]},
            "versus_reference": paired_difference(outcomes(top), outcomes(reference)),
            "held_out": {
                **_point_name(combined[chosen]),
                "chosen_on": "even image positions",
                "measured_on": "odd image positions",
                **held_out,
            },
        }
    return {"depth": depth, "points": points, "best": best}


def plot_layer_sweep(label: str, summary: dict[str, Any], path: Path) -> Path:
    """Top-1 against block, a line per pooling (95 % bands), a panel per probe."""
    probes = [p for p in PROBES if p in summary["best"]]
    figure = Figure(figsize=(5.2 * len(probes), 3.8))
    for axes, probe in zip(np.atleast_1d(figure.subplots(1, len(probes))), probes, strict=True):
        for pool in dict.fromkeys(point["pool"] for point in summary["points"]):
            line = [p for p in summary["points"] if p["pool"] == pool and p[probe]]
            blocks = [p["block"] + 1 for p in line]
            (drawn,) = axes.plot(
                blocks, [100 * p[probe]["top1"] for p in line], marker="o", label=pool
            )
            low = [100 * p[probe]["ci95"]["top1"][0] for p in line]
            high = [100 * p[probe]["ci95"]["top1"][1] for p in line]
            axes.fill_between(blocks, low, high, alpha=0.12, color=drawn.get_color())
        axes.set_xlabel("block (1 = first)")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_ylabel("top-1 accuracy (%)")
        axes.set_title(f"{PART_NAMES[probe]}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, title="pooling", title_fontsize=8)
    figure.suptitle(f"{label}: accuracy by block and pooling (95 % bands)", fontsize=10)
    figure.tight_layout()
    return save_figure(figure, path)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _signed(entry: dict[str, Any]) -> str:
    low, high = entry["ci95"]
    return f"{100 * entry['difference']:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"


def _where(point: dict[str, Any]) -> str:
    return f"{point['pool']}, block {point['block'] + 1}"


LAYER_SWEEP_COLUMNS: dict[str, Callable[[tuple[str, str, dict[str, Any]]], str]] = {
    "row": lambda item: item[0],
    "probe": lambda item: PART_NAMES[item[1]],
    "last block": lambda item: (
        f"{_where(item[2]['reference'])}: {_percent(item[2]['reference']['top1'])}"
    ),
    "best": lambda item: f"{_where(item[2]['best'])}: {_percent(item[2]['best']['top1'])}",
    "best - last (95 % CI)": lambda item: _signed(item[2]["versus_reference"]),
    "chosen on half A": lambda item: _where(item[2]["held_out"]),
    "its lead on half B (95 % CI)": lambda item: _signed(item[2]["held_out"]),
}


def layer_sweep_items(rows: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(row label, probe, best entry)`` of every row with a layer sweep."""
    return [
        (row["label"], probe, best)
        for row in rows
        if row.get("layer_sweep")
        for probe, best in row["layer_sweep"]["best"].items()
    ]


def add_layer_sweeps(
    rows: list[dict[str, Any]],
    rows_by_seed: list[list[dict[str, Any]]],
    labels: Sequence[int],
    folder: Path,
) -> dict[str, str]:
    """Replace each combined row's raw sweep by its summary and draw its figure.

    Args:
        rows: The rows combined over seeds (changed in place).
        rows_by_seed: Per seed, the rows with the raw sweep points.
        labels: The validation labels.
        folder: The report's figure folder.

    Returns:
        ``{figure title: file name}`` of the figures drawn.
    """
    figures = {}
    for position, row in enumerate(rows):
        if not row.get("layer_sweep"):
            continue
        sweeps = [seeded[position]["layer_sweep"] for seeded in rows_by_seed]
        row["layer_sweep"] = summarize_layer_sweep(sweeps, labels)
        name = f"layer_sweep_{position}.png"
        plot_layer_sweep(row["label"], row["layer_sweep"], folder / name)
        figures[f"accuracy by block ({row['label']})"] = name
    return figures
