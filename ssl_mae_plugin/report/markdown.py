"""``report.md`` (for people) and ``report.json`` (for programs) of a recipe run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ssl_mae_plugin.report.machine import describe_machine
from ssl_mae_plugin.report.rows import accuracy
from ssl_mae_plugin.storage import write_text_atomic

COLUMNS = (
    "method", "backbone", "params (M)", "epochs", "pretrain time (s)", "images/s", "final loss",
    "k-NN top1", "k-NN top5", "linear top1", "linear top5", "fine-tune top1",
)  # fmt: skip


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of all rows, accuracies in percent."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        pretrain = row.get("pretrain") or {}
        cells = [
            row["method"],
            row["backbone"],
            f"{row['params'] / 1e6:.2f}",
            _number(pretrain.get("epochs")),
            _number(pretrain.get("seconds")),
            _number(pretrain.get("images_per_second")),
            _number(pretrain.get("final_loss"), 4),
            _percent(accuracy(row, "knn")),
            _percent(accuracy(row, "knn", "top5")),
            _percent(accuracy(row, "linear")),
            _percent(accuracy(row, "linear", "top5")),
            _percent(accuracy(row, "finetune")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: dict[str, Any]) -> str:
    """``report.md``: the comparison table, notes, figures, recipe and machine."""
    dataset = report["dataset"]
    parts = [
        f"# {report['name']}",
        "",
        f"Dataset `{dataset['name']}`: {dataset['train_images']:,} train / "
        f"{dataset['val_images']:,} validation images, {dataset['classes']} classes, "
        f"{dataset['image_size']} px. Machine: {describe_machine(report['machine'])}. "
        f"Finished {report['finished']}.",
        "",
        "Accuracies in percent on the validation split; `random_init` is the same backbone "
        f"untrained, evaluated the same way. k-NN: {report['protocols']['knn']}; linear: "
        f"{report['protocols']['linear']}.",
        "",
        comparison_table(report["rows"]),
        "",
    ]
    if report["notes"]:
        parts += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    parts += ["## Figures", ""]
    parts += [f"![{title}](figures/{name})" for title, name in report["figures"].items()]
    recipe = yaml.safe_dump(report["recipe"], sort_keys=False).rstrip()
    parts += ["", "## Recipe", "", "```yaml", recipe, "```", ""]
    return "\n".join(parts)


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
    json_path = write_text_atomic(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    md_path = write_text_atomic(run_dir / "report.md", markdown_report(report))
    return json_path, md_path
