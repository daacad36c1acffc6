"""Reports of a recipe run: ``report.json``, ``report.md`` and ``figures/*.png``.

``report.json`` is for programs, ``report.md`` for people; the figures show the loss
curves, accuracy bars and MAE reconstructions.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure

from ssl_mae_plugin.callbacks import read_metrics

PART_NAMES = {"knn": "k-NN", "linear": "linear probe", "finetune": "fine-tune"}
FIGURES = {
    "loss": "loss_curves.png",
    "accuracy": "accuracy.png",
    "reconstructions": "mae_reconstructions.png",
}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_description() -> dict[str, Any]:
    """Where the run happened: CPU model and cores, GPU, torch version."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "gpu_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via a temporary file and a rename, so a kill never truncates it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _accuracy(row: dict[str, Any], part: str, key: str = "top1") -> float | None:
    result = row.get(part)
    return None if not result else result.get(key)


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of all rows, accuracies in percent."""
    header = (
        "| method | backbone | params (M) | epochs | pretrain time (s) | images/s | final loss "
        "| k-NN top1 | k-NN top5 | linear top1 | linear top5 | fine-tune top1 |"
    )
    lines = [header, "|" + "---|" * 12]
    for row in rows:
        pretrain = row.get("pretrain") or {}
        lines.append(
            "| "
            + " | ".join(
                [
                    row["method"],
                    row["backbone"],
                    f"{row['params'] / 1e6:.2f}",
                    _number(pretrain.get("epochs")),
                    _number(pretrain.get("seconds")),
                    _number(pretrain.get("images_per_second")),
                    _number(pretrain.get("final_loss"), 4),
                    _percent(_accuracy(row, "knn")),
                    _percent(_accuracy(row, "knn", "top5")),
                    _percent(_accuracy(row, "linear")),
                    _percent(_accuracy(row, "linear", "top5")),
                    _percent(_accuracy(row, "finetune")),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: the comparison table, notes, figures, recipe and machine."""
    machine = report["machine"]
    hardware = f"{machine['cpu']} ({machine['cpu_cores']} cores)"
    if machine["gpu"]:
        hardware += f", {machine['gpu_count']} x {machine['gpu']}"
    parts = [
        f"# {report['name']}",
        "",
        f"Dataset `{report['dataset']['name']}`: {report['dataset']['train_images']:,} train / "
        f"{report['dataset']['val_images']:,} validation images, "
        f"{report['dataset']['classes']} classes, {report['dataset']['image_size']} px. "
        f"Machine: {hardware}, torch {machine['torch']}. Finished {report['finished']}.",
        "",
        "Accuracies in percent on the validation split; `random_init` is the same backbone "
        "untrained, evaluated the same way. k-NN: "
        + report["protocols"]["knn"]
        + "; linear: "
        + report["protocols"]["linear"]
        + ".",
        "",
        comparison_table(report["rows"]),
        "",
    ]
    if report["notes"]:
        parts += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    parts += ["## Figures", ""]
    for title, name in report["figures"].items():
        parts.append(f"![{title}](figures/{name})")
    parts += [
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(report["recipe"], sort_keys=False).rstrip(),
        "```",
        "",
    ]
    return "\n".join(parts)


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
    json_path, md_path = run_dir / "report.json", run_dir / "report.md"
    write_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_atomic(md_path, markdown_report(report))
    return json_path, md_path


def plot_loss_curves(method_dirs: dict[str, Path], path: Path) -> Path | None:
    """All methods' per-epoch pretraining loss on one chart, relative to epoch 0."""
    curves = {}
    for label, method_dir in method_dirs.items():
        rows = [r for r in read_metrics(method_dir / "metrics.csv") if r["loss"]]
        if rows:
            losses = [float(r["loss"]) for r in rows]
            curves[label] = ([int(r["epoch"]) + 1 for r in rows], losses)
    if not curves:
        return None
    figure = Figure(figsize=(6.5, 4))
    axes = figure.subplots()
    for label, (epochs, losses) in curves.items():
        first = losses[0] if losses[0] else 1.0
        axes.plot(
            epochs,
            [loss / first for loss in losses],
            marker="o",
            markersize=3,
            label=f"{label} (epoch 1: {losses[0]:.3g})",
        )
    axes.set_xlabel("epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.set_ylabel("loss / epoch-1 loss")
    axes.set_title("Pretraining loss (each method relative to its first epoch)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_accuracy_bars(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Grouped bars of k-NN / linear / fine-tune top-1 per row (random init included)."""
    parts = [p for p in ("knn", "linear", "finetune") if any(_accuracy(r, p) for r in rows)]
    if not parts:
        return None
    labels = [f"{r['method']}\n{r['backbone']}" for r in rows]
    width = 0.8 / len(parts)
    figure = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2), 4))
    axes = figure.subplots()
    for offset, part in enumerate(parts):
        values = [100 * (_accuracy(r, part) or 0.0) for r in rows]
        positions = [i + (offset - (len(parts) - 1) / 2) * width for i in range(len(rows))]
        bars = axes.bar(positions, values, width=width, label=PART_NAMES[part])
        axes.bar_label(bars, fmt="%.1f", fontsize=7)
    axes.set_xticks(range(len(rows)), labels, fontsize=8)
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_title("Validation top-1 (random_init: the backbone untrained)")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.png")
    figure.savefig(partial, dpi=110)
    os.replace(partial, path)
    return path
