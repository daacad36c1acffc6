"""The transfer part of a report: every row on each ``eval.datasets`` entry, and a summary.

Each dataset gets the rows of the main table (combined over seeds, with intervals) and
its own paired table; the summary gives each row's mean top-1 over all datasets, the
pretraining one included.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ssl_mae_plugin.data import FOLDER_DATASETS
from ssl_mae_plugin.evaluation.protocols import EvalData
from ssl_mae_plugin.report.rows import PARTS, accuracy
from ssl_mae_plugin.report.statistics import combine_seeds, paired_table

TRANSFER_KEYS = ("label", "method", "backbone", "control", "features", *PARTS)


def transfer_section(
    rows: list[dict[str, Any]],
    rows_by_seed: list[list[dict[str, Any]]],
    data: EvalData,
    reference: str,
) -> dict[str, Any] | None:
    """The transfer results by dataset and their summary; ``None`` without transfer sets.

    Args:
        rows: The main rows combined over seeds; their raw ``transfer`` entries are removed.
        rows_by_seed: Per seed, the rows with ``transfer`` ({dataset: results}).
        data: The main splits, with :attr:`EvalData.transfer`.
        reference: The row the paired tables compare with.
    """
    for row in rows:
        row.pop("transfer", None)
    if not data.transfer:
        return None
    datasets: dict[str, Any] = {}
    for name, (_, splits) in data.transfer.items():
        labels = list(splits.val.targets)
        seeded = [
            [{k: row[k] for k in TRANSFER_KEYS if k not in PARTS} | row["transfer"][name]
             for row in seed_rows]
            for seed_rows in rows_by_seed
        ]  # fmt: skip
        combined = combine_seeds(seeded, labels)
        datasets[name] = {
            "dataset": splits.describe(),
            "rows": [{k: row.get(k) for k in TRANSFER_KEYS} for row in combined],
            "paired": paired_table(seeded, labels, reference),
        }
    root, kind = data.key["root"], data.key["dataset"]
    main = Path(root).name if kind in FOLDER_DATASETS and root else kind
    tables = {main: rows, **{n: d["rows"] for n, d in datasets.items()}}
    summary = []
    for position, row in enumerate(rows):
        entry: dict[str, Any] = {"label": row["label"]}
        for part in PARTS:
            values = [accuracy(table[position], part) for table in tables.values()]
            entry[part] = None if None in values else float(np.mean(values))
        summary.append(entry)
    return {"datasets": datasets, "summary": {"over": list(tables), "rows": summary}}


def _mean_cell(entry: dict[str, Any], part: str) -> str:
    return "–" if entry[part] is None else f"{100 * entry[part]:.1f}"


def summary_columns(
    titles: list[str], parts: list[str]
) -> dict[str, Callable[[dict[str, Any]], str]]:
    """Columns of the summary table: the row and its mean top-1 per part."""
    columns: dict[str, Callable[[dict[str, Any]], str]] = {"row": lambda entry: entry["label"]}
    for title, part in zip(titles, parts, strict=True):
        columns[f"{title} mean top1"] = partial(_mean_cell, part=part)
    return columns
