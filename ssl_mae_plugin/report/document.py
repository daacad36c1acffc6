"""The report of a run as one JSON-ready mapping: what ran, on what, where, and the rows."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ssl_mae_plugin.evaluation.protocols import EvalData
from ssl_mae_plugin.recipes import Recipe
from ssl_mae_plugin.report.machine import machine_description


def compose_report(
    recipe: Recipe,
    data: EvalData,
    rows: list[dict[str, Any]],
    paired: list[dict[str, Any]],
    figures: dict[str, str],
    seconds: float,
    transfer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``report.json``'s contents: rows, paired table, data, protocols, notes, figures, recipe.

    ``transfer`` is the section of :func:`~ssl_mae_plugin.report.transfer.transfer_section`.
    """
    notes = [
        f"{row['label']}: fine-tuning skipped (it needs a ViT backbone)"
        for row in rows
        if recipe.eval.finetune is not None and row["method"] != "pixels" and not row["finetune"]
    ]
    bad_images = recipe.run_dir / "bad_images.txt"
    skipped = sorted(set(bad_images.read_text().split())) if bad_images.is_file() else []
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped: " + ", ".join(skipped[:20]))
    return {
        "name": recipe.name,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": machine_description(),
        "dataset": {
            **data.describe(),
            "root": recipe.data.root,
            "image_size": recipe.data.image_size,
        },
        "protocols": protocols(recipe),
        "seeds": recipe.all_seeds,
        "sweep": recipe.sweep,
        "rows": rows,
        "paired": paired,
        "transfer": transfer,
        "skipped_images": skipped,
        "notes": notes,
        "figures": figures,
        "recipe": recipe.model_dump(mode="json"),
    }


def protocols(recipe: Recipe) -> dict[str, str]:
    """How the rows were pretrained and how k-NN and the linear probe ran, in words."""
    knn, linear, budget = recipe.eval.knn, recipe.eval.linear, recipe.pretrain
    knn_text = "off" if knn is None else f"k={knn.k}, T={knn.temperature}, cosine similarity"
    pretrain_text = f"{budget.epochs} epochs, batch {budget.batch_size}"
    if budget.accumulate_grad_batches > 1:
        pretrain_text += (
            f" x {budget.accumulate_grad_batches} accumulated: "
            f"{budget.effective_batch_size} images per optimizer step"
        )
    if linear is None:
        return {"pretrain": pretrain_text, "knn": knn_text, "linear": "off"}
    how = {
        "cached": "cached frozen features, SGD",
        "augmented": "the paper's protocol: RandomResizedCrop + flip, LARS",
    }[linear.mode]
    return {
        "pretrain": pretrain_text,
        "knn": knn_text,
        "linear": f"{how}, {linear.epochs} epochs, BatchNorm + Linear head",
    }
