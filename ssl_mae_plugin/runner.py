"""Pretrain -> evaluate -> report, for every method of a recipe.

Everything a run produces lives under ``<output_dir>/<name>/``; a re-run reuses finished
checkpoints, cached features and cached evaluation results, and only redoes what is
missing or what a changed setting invalidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only

from ssl_mae_plugin.data import Normalization, build_dataset, eval_transform, limit_dataset
from ssl_mae_plugin.evaluation.protocols import EvalData, Evaluator
from ssl_mae_plugin.pretrain import (
    build_method,
    checkpoint_path,
    load_pretrained,
    pretrain,
    summarize,
)
from ssl_mae_plugin.pretrain.checkpoints import data_position
from ssl_mae_plugin.recipes import Recipe, RecipeError
from ssl_mae_plugin.report import (
    describe_backbone,
    machine_description,
    make_row,
    plot_accuracy_bars,
    plot_loss_curves,
    save_image_grid,
    write_report,
)
from ssl_mae_plugin.storage import digest

FIGURE_IMAGES = 6  # validation images in method-specific figures


def prepare_data(recipe: Recipe) -> EvalData:
    """Build both splits and check them against the recipe before any work starts.

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
        RecipeError: For a batch larger than the training split.
    """
    data = recipe.data
    splits = []
    for split, max_images in ((data.train_split, data.max_train_images),
                              (data.val_split, data.max_val_images)):  # fmt: skip
        dataset = build_dataset(
            data.dataset,
            split,
            root=data.root,
            download=data.download,
            on_bad_image=data.on_bad_image,
            bad_image_log=recipe.run_dir / "bad_images.txt",
        )
        splits.append(limit_dataset(dataset, max_images, seed=recipe.seed))
    train, val = splits
    batches = {"pretrain.batch_size": recipe.pretrain.batch_size}
    for name in ("linear", "finetune"):
        section = getattr(recipe.eval, name)
        if section is not None and getattr(section, "mode", "trained") != "cached":
            batches[f"eval.{name}.batch_size"] = section.batch_size
    for key, batch in batches.items():
        if batch > len(train):
            raise RecipeError(
                f"{key}={batch} is larger than the {len(train)} training images "
                "(incomplete batches are dropped)"
            )
    key = {
        "dataset": data.dataset,
        "root": str(Path(data.root).resolve()) if data.root else None,
        "splits": (data.train_split, data.val_split),
        "sizes": (len(train), len(val)),
        "subset_seed": recipe.seed,
    }
    normalization = Normalization(tuple(data.mean), tuple(data.std))
    return EvalData(train, val, normalization, len(train.classes), key)


def finished_checkpoint(recipe: Recipe, index: int) -> Path:
    """The last checkpoint of method ``index`` once pretraining is complete.

    Raises:
        RecipeError: If there is none, or it stopped before ``pretrain.epochs``.
    """
    checkpoint = checkpoint_path(recipe.method_dir(index))
    label = recipe.methods[index].label
    if not checkpoint.is_file():
        raise RecipeError(
            f"methods.{index} ({label}): no checkpoint at {checkpoint}; run `ssl-mae pretrain`"
        )
    epoch, _ = data_position(checkpoint)
    if epoch < recipe.pretrain.epochs:
        raise RecipeError(
            f"methods.{index} ({label}): pretrained for {epoch} of {recipe.pretrain.epochs} "
            "epochs; run `ssl-mae pretrain` to finish it"
        )
    return checkpoint


def pretrain_all(recipe: Recipe, data: EvalData, log: Callable[[str], None] = print) -> None:
    """Pretrain (or resume, or skip when finished) every method of the recipe."""
    for index, entry in enumerate(recipe.methods):
        if rank_zero_only.rank == 0:  # DDP's other ranks run this command too
            log(f"[{index + 1}/{len(recipe.methods)}] pretraining {entry.label}")
        pretrain(recipe, index, data.train)


def _release_process_group() -> bool:
    """After DDP pretraining: leave the process group; True on rank 0 (which goes on)."""
    rank = rank_zero_only.rank
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return rank == 0


def run_recipe(
    recipe: Recipe, do_pretrain: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any] | None:
    """Pretrain (unless ``do_pretrain`` is false), evaluate and report every method.

    Returns:
        The report (also written to ``report.json`` / ``report.md``), or ``None`` on the
        non-zero ranks of a multi-process run.
    """
    data = prepare_data(recipe)
    started = time.perf_counter()
    if do_pretrain:
        pretrain_all(recipe, data, log)
    for index in range(len(recipe.methods)):
        finished_checkpoint(recipe, index)
    if not _release_process_group():
        return None

    evaluator = Evaluator(recipe, data)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    figures: dict[str, str] = {}
    controls_done: set[str] = set()
    images = _figure_images(recipe, data)
    for index, entry in enumerate(recipe.methods):
        checkpoint = finished_checkpoint(recipe, index)
        module, _ = load_pretrained(checkpoint)
        log(f"evaluating {entry.label}")
        stat = checkpoint.stat()
        identity = {"checkpoint": str(checkpoint.resolve()), "mtime_ns": stat.st_mtime_ns,
                    "size": stat.st_size, "options": entry.options()}  # fmt: skip
        results = evaluator.evaluate(module, recipe.method_dir(index), identity)
        pretrained = summarize(recipe, index).as_dict()
        rows.append(make_row(entry.label, entry, module.backbone, pretrained, results))
        for stem, grid in module.report_images(images, data.normalization).items():
            name = f"{stem}.png" if f"{stem}.png" not in figures.values() else f"{stem}_{index}.png"
            figures[f"{stem.replace('_', ' ')} ({entry.label})"] = name
            save_image_grid(grid, recipe.run_dir / "figures" / name)
        backbone = describe_backbone(entry)
        if recipe.eval.random_init and backbone not in controls_done:
            controls_done.add(backbone)
            untrained = build_method(recipe, index, data.num_classes)
            log(f"evaluating random_init ({backbone})")
            identity = {"untrained": entry.options(), "seed": recipe.seed}
            folder = recipe.run_dir / "random_init" / digest(backbone)[:12]
            control = evaluator.evaluate(untrained, folder, identity)
            rows.append(make_row("random_init", entry, untrained.backbone, None, control))
        if recipe.eval.finetune is not None and results["finetune"] is None:
            notes.append(f"{entry.label}: fine-tuning skipped (it needs a ViT backbone)")

    bad_images = recipe.run_dir / "bad_images.txt"
    skipped = sorted(set(bad_images.read_text().split())) if bad_images.is_file() else []
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped: " + ", ".join(skipped[:20]))
    folder = recipe.run_dir / "figures"
    curves = {row["method"]: row["pretrain"]["losses"] for row in rows if row["pretrain"]}
    common = {}
    if plot_loss_curves(curves, folder / "loss_curves.png"):
        common["pretraining loss"] = "loss_curves.png"
    if plot_accuracy_bars(rows, folder / "accuracy.png"):
        common["accuracy"] = "accuracy.png"
    figures = {**common, **figures}
    report = {
        "name": recipe.name,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_description(),
        "dataset": {
            "name": recipe.data.dataset,
            "root": recipe.data.root,
            "train_images": len(data.train),
            "val_images": len(data.val),
            "classes": data.num_classes,
            "image_size": recipe.data.image_size,
        },
        "protocols": protocols(recipe),
        "rows": rows,
        "skipped_images": skipped,
        "notes": notes,
        "figures": figures,
        "recipe": recipe.model_dump(mode="json"),
    }
    json_path, md_path = write_report(recipe.run_dir, report)
    log(f"wrote {md_path} and {json_path}")
    return report


def _figure_images(recipe: Recipe, data: EvalData) -> torch.Tensor:
    """A few validation images, evenly spaced, transformed as for evaluation."""
    transform = eval_transform(recipe.data.image_size, data.normalization)
    step = max(len(data.val) // FIGURE_IMAGES, 1)
    picks = [i for i in range(0, step * FIGURE_IMAGES, step) if i < len(data.val)]
    return torch.stack([transform(data.val[i][0]) for i in picks])


def protocols(recipe: Recipe) -> dict[str, str]:
    """How k-NN and the linear probe were run, in words for the report."""
    knn, linear = recipe.eval.knn, recipe.eval.linear
    knn_text = "off" if knn is None else f"k={knn.k}, T={knn.temperature}, cosine similarity"
    if linear is None:
        return {"knn": knn_text, "linear": "off"}
    how = {
        "cached": "cached frozen features, SGD",
        "augmented": "the paper's protocol: RandomResizedCrop + flip, LARS",
    }[linear.mode]
    return {"knn": knn_text, "linear": f"{how}, {linear.epochs} epochs, BatchNorm + Linear head"}
