"""The rows of a report: one per evaluated model, in the shape ``report.json`` keeps."""

from __future__ import annotations

from typing import Any

from torch import nn

from ssl_mae_plugin.backbones import is_vit
from ssl_mae_plugin.recipes import MethodEntry

PARTS = ("knn", "linear", "finetune")


def describe_backbone(entry: MethodEntry) -> str:
    """A short backbone name for tables: ``vit_tiny/4`` or ``vit_tiny/4 d4 w128 h4``."""
    options = entry.options()
    name = options["backbone"]
    if not is_vit(name):
        return name
    text = f"{name}/{options['patch_size']}"
    for key, short in (("depth", "d"), ("embed_dim", "w"), ("num_heads", "h")):
        if options.get(key) is not None:
            text += f" {short}{options[key]}"
    return text


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of a module (trainable or not)."""
    return sum(param.numel() for param in module.parameters())


def make_row(
    label: str,
    method: str,
    entry: MethodEntry | None,
    backbone: nn.Module | None,
    pretrain: dict[str, Any] | None,
    results: dict[str, Any],
) -> dict[str, Any]:
    """One row: what was evaluated, how it was pretrained (``None``: untrained), results.

    Args:
        label: The row's name (a method entry's label, ``mae (untrained)``, ``pixels``).
        method: The registered method, ``random_init`` for an untrained control, or
            ``pixels``.
        entry: The recipe entry the model comes from (``None``: none).
        backbone: The evaluated network (``None``: none).
        pretrain: The pretraining summary (``None``: not pretrained).
        results: ``{"knn", "linear", "finetune"}`` results (``None``: not run), the
            ``"features"`` they ran on and the raw ``"layer_sweep"`` points (if any).
    """
    return {
        "label": label,
        "method": method,
        "backbone": describe_backbone(entry) if entry else "",
        "params": count_parameters(backbone) if backbone else 0,
        "pretrain": pretrain,
        "control": None,
        "features": results.get("features"),
        **{part: results.get(part) for part in PARTS},
        "layer_sweep": results.get("layer_sweep"),
        "transfer": results.get("transfer"),
    }


def accuracy(row: dict[str, Any], part: str, key: str = "top1") -> float | None:
    """``row[part][key]``, or ``None`` when the part was not run."""
    result = row.get(part)
    return None if not result else result.get(key)


def sweep_groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The trained rows of each swept recipe entry (by its label), in recipe order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("sweep_point"):
            groups.setdefault(row["sweep_point"]["of"], []).append(row)
    return groups
