"""``report.md`` (for people) and ``report.json`` (for programs) of a recipe run."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from ssl_mae_plugin.report.layer_sweep import LAYER_SWEEP_COLUMNS, layer_sweep_items
from ssl_mae_plugin.report.machine import describe_machine
from ssl_mae_plugin.report.rows import PARTS, accuracy, sweep_groups
from ssl_mae_plugin.report.transfer import summary_columns
from ssl_mae_plugin.storage import write_text_atomic

PART_TITLES = {"knn": "k-NN", "linear": "linear", "finetune": "fine-tune"}


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def _with_interval(result: dict[str, Any] | None, key: str = "top1") -> str:
    """``53.1 (51.2–55.0)`` in percent, or the bare value when no interval was computed."""
    if not result or result.get(key) is None:
        return "–"
    interval = (result.get("ci95") or {}).get(key)
    if not interval:
        return _percent(result[key])
    return f"{_percent(result[key])} ({_percent(interval[0])}–{_percent(interval[1])})"


def _table(items: list[Any], columns: dict[str, Callable[[Any], str]]) -> str:
    """A Markdown table: one line per item, a cell per ``{header: cell of an item}``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(item) for cell in columns.values()) + " |" for item in items]
    return "\n".join(lines)


def comparison_table(rows: list[dict[str, Any]]) -> str:
    """Accuracies of every row in percent, top-1 with its 95 % interval, and its control."""
    columns: dict[str, Callable[[Any], str]] = {
        "row": lambda row: row["label"],
        "backbone": lambda row: row["backbone"],
        "control": lambda row: row["control"] or "–",
    }
    for part in PARTS:
        columns[f"{PART_TITLES[part]} top1 (95 % CI)"] = partial(_part_cell, part=part)
    for part in ("knn", "linear"):
        columns[f"{PART_TITLES[part]} top5"] = partial(_top5_cell, part=part)
    return _table(rows, columns)


def _part_cell(row: dict[str, Any], part: str) -> str:
    return _with_interval(row.get(part))


def _top5_cell(row: dict[str, Any], part: str) -> str:
    return _percent(accuracy(row, part, "top5"))


PRETRAINING_COLUMNS: dict[str, Callable[[Any], str]] = {
    "row": lambda row: row["label"],
    "method": lambda row: row["method"],
    "params (M)": lambda row: f"{row['params'] / 1e6:.2f}",
    "epochs": lambda row: _number(row["pretrain"]["epochs"]),
    "seconds": lambda row: _number(row["pretrain"]["seconds"]),
    "images/s": lambda row: _number(row["pretrain"]["images_per_second"]),
    "final loss": lambda row: _number(row["pretrain"]["final_loss"], 4),
}
DIFFERENCE_COLUMNS: dict[str, Callable[[Any], str]] = {
    "row": lambda entry: entry["row"],
    "versus": lambda entry: entry["versus"],
    "part": lambda entry: PART_TITLES[entry["part"]],
    "difference (points)": lambda entry: f"{100 * entry['difference']:+.1f}",
    "95 % CI": lambda entry: f"{100 * entry['ci95'][0]:+.1f} to {100 * entry['ci95'][1]:+.1f}",
    "excludes 0": lambda entry: "yes" if entry["excludes_zero"] else "no",
    "kind": lambda entry: entry["ci95_kind"],
}
SEED_COLUMNS: dict[str, Callable[[Any], str]] = {
    "row": lambda item: item[0]["label"],
    "part": lambda item: PART_TITLES[item[1]],
    "per seed": lambda item: ", ".join(map(_percent, item[0][item[1]]["per_seed"]["top1"])),
    "mean": lambda item: _percent(item[0][item[1]]["top1"]),
    "std": lambda item: _percent(item[0][item[1]]["std"]["top1"]),
}


def pretraining_table(rows: list[dict[str, Any]]) -> str:
    """What pretraining each trained row had and cost."""
    return _table([row for row in rows if row.get("pretrain")], PRETRAINING_COLUMNS)


def difference_table(paired: list[dict[str, Any]]) -> str:
    """Top-1 differences in points with their paired 95 % intervals."""
    return _table(paired, DIFFERENCE_COLUMNS)


def seeds_table(rows: list[dict[str, Any]]) -> str:
    """Each row's top-1 per seed, mean and standard deviation (several seeds)."""
    return _table([(row, part) for row in rows for part in PARTS if row.get(part)], SEED_COLUMNS)


def sweep_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: per swept entry, a table of its points (values, accuracies, loss)."""
    lines: list[str] = []
    for of, points in sweep_groups(rows).items():
        columns: dict[str, Callable[[Any], str]] = {
            key: partial(_point_value, key=key) for key in points[0]["sweep_point"]["values"]
        }
        for part in PARTS:
            if any(row.get(part) for row in points):
                columns[f"{PART_TITLES[part]} top1 (95 % CI)"] = partial(_part_cell, part=part)
        columns["final loss"] = lambda row: _number(row["pretrain"]["final_loss"], 4)
        lines += [f"### {of}", "", _table(points, columns), ""]
    return lines


def _point_value(row: dict[str, Any], key: str) -> str:
    return str(row["sweep_point"]["values"][key])


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
        "Accuracies in percent on the validation split. Each trained row names its control: "
        "the same method built with the same seed and not trained (`random_init`), evaluated "
        "the same way; `pixels` classifies the normalised, flattened image. Pretraining: "
        f"{report['protocols']['pretrain']}. k-NN: "
        f"{report['protocols']['knn']}; linear: {report['protocols']['linear']}. "
        f"Seeds: {', '.join(map(str, report['seeds']))}. 95 % intervals: "
        f"{_interval_kind(report['rows'])}.",
        "",
        comparison_table(report["rows"]),
        "",
        "## Paired differences",
        "",
        "Top-1 of each row minus its control's and minus the reference row's, on the same "
        "images. Where the interval excludes 0 the difference is more than this run's "
        "sampling noise.",
        "",
        difference_table(report["paired"]),
        "",
    ]
    if report.get("sweep"):
        swept = ", ".join(f"`{key}` over {values}" for key, values in report["sweep"].items())
        parts += ["## Sweep", "", f"Swept: {swept}; each point is a row above.", ""]
        parts += sweep_tables(report["rows"])
    if sweeps := layer_sweep_items(report["rows"]):
        parts += [
            "## Layer sweep",
            "",
            "Every block of each ViT row probed with each pooling (tokens through the final "
            "norm). `best` is picked on the validation images, so its lead is optimistic; "
            "the last two columns pick on half of them and measure on the other half.",
            "",
            _table(sweeps, LAYER_SWEEP_COLUMNS),
            "",
        ]
    if report.get("transfer"):
        parts += transfer_lines(report["transfer"])
    if len(report["seeds"]) > 1:
        parts += ["## Per seed", "", seeds_table(report["rows"]), ""]
    parts += ["## Pretraining", "", pretraining_table(report["rows"]), ""]
    if report["notes"]:
        parts += ["## Notes", "", *[f"- {note}" for note in report["notes"]], ""]
    parts += ["## Figures", ""]
    parts += [f"![{title}](figures/{name})" for title, name in report["figures"].items()]
    recipe = yaml.safe_dump(report["recipe"], sort_keys=False).rstrip()
    parts += ["", "## Recipe", "", "```yaml", recipe, "```", ""]
    return "\n".join(parts)


def transfer_lines(transfer: dict[str, Any]) -> list[str]:
    """Markdown lines: a table per transfer dataset, then the mean over all datasets."""
    lines = [
        "## Transfer",
        "",
        "Every row evaluated on more datasets, at the pretraining image size and "
        "normalisation, with the same protocols; each table pairs rows as above.",
        "",
    ]
    for name, section in transfer["datasets"].items():
        dataset = section["dataset"]
        lines += [
            f"### {name}",
            "",
            f"`{dataset['name']}`: {dataset['train_images']:,} train / "
            f"{dataset['val_images']:,} validation images, {dataset['classes']} classes.",
            "",
            comparison_table(section["rows"]),
            "",
            difference_table(section["paired"]),
            "",
        ]
    summary = transfer["summary"]
    present = [p for p in PARTS if any(entry[p] is not None for entry in summary["rows"])]
    columns = summary_columns([PART_TITLES[p] for p in present], present)
    lines += [
        "### Across datasets",
        "",
        f"Mean top-1 (percent) over {', '.join(summary['over'])}.",
        "",
        _table(summary["rows"], columns),
        "",
    ]
    return lines


def _interval_kind(rows: list[dict[str, Any]]) -> str:
    kinds = {row[p]["ci95_kind"] for row in rows for p in PARTS if (row.get(p) or {}).get("ci95")}
    return "; ".join(sorted(kinds)) or "none"


def write_report(run_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` atomically; returns their paths."""
    json_path = write_text_atomic(run_dir / "report.json", json.dumps(report, indent=2) + "\n")
    md_path = write_text_atomic(run_dir / "report.md", markdown_report(report))
    return json_path, md_path
