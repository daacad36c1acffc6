"""Pretrain -> evaluate -> report, for every method of a recipe.

Everything a run produces lives under ``<output_dir>/<name>/``; a re-run reuses finished
checkpoints, cached features and cached evaluation results, and only redoes what is
missing or what a changed setting invalidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only

from ssl_mae_plugin.data import eval_transform
from ssl_mae_plugin.evaluation.features import FlattenedPixels
from ssl_mae_plugin.evaluation.protocols import EvalData, Evaluator, prepare_data
from ssl_mae_plugin.pretrain import (
    build_method,
    check_checkpoint,
    check_loggers,
    checkpoint_path,
    load_pretrained,
    pretrain,
    set_aside,
    summarize,
)
from ssl_mae_plugin.pretrain.checkpoints import data_position
from ssl_mae_plugin.pretrain.cluster import check_launch, launch_rank
from ssl_mae_plugin.recipes import Recipe, RecipeError
from ssl_mae_plugin.report import (
    combine_seeds,
    compose_report,
    make_row,
    paired_table,
    save_image_grid,
    summary_figures,
    write_report,
)
from ssl_mae_plugin.storage import digest, tensor_digest

FIGURE_IMAGES = 6  # validation images in method-specific figures
PIXELS_MAX_SIZE = 64  # the raw-pixels row for images up to this size


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


def check_plan(recipe: Recipe, do_pretrain: bool = True) -> EvalData:
    """Everything that can be checked before any work: data, checkpoints, their settings.

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
        RecipeError: For a batch larger than the training split, a checkpoint trained
            with other settings than the recipe's, or (``do_pretrain=False``) a method
            that is not pretrained yet.
    """
    check_loggers(recipe.trainer)
    check_launch(recipe.trainer)
    data = prepare_data(recipe)
    for seeded in map(recipe.with_seed, recipe.all_seeds):
        for index in range(len(recipe.methods)):
            check_checkpoint(seeded, index)
            if not do_pretrain:
                finished_checkpoint(seeded, index)
    return data


def pretrain_all(recipe: Recipe, data: EvalData, log: Callable[[str], None] = print) -> None:
    """Pretrain (or resume, or skip when finished) every method of the recipe, every seed."""
    rank_zero_only.rank = launch_rank(recipe.trainer)  # before Lightning knows it
    seeds = recipe.all_seeds
    for seeded in map(recipe.with_seed, seeds):
        for index, entry in enumerate(seeded.methods):
            moved = set_aside(seeded, index) if rank_zero_only.rank == 0 else None
            if rank_zero_only.rank == 0:  # DDP's other ranks run this command too
                if moved:
                    log(f"moved the stale run of {entry.label} to {moved}")
                which = f", seed {seeded.seed}" if len(seeds) > 1 else ""
                log(f"[{index + 1}/{len(seeded.methods)}] pretraining {entry.label}{which}")
            pretrain(seeded, index, data.train)


def _release_process_group() -> bool:
    """After DDP pretraining: leave the process group; True on rank 0 (which goes on)."""
    rank = rank_zero_only.rank
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return rank == 0


def run_recipe(
    recipe: Recipe,
    do_pretrain: bool = True,
    log: Callable[[str], None] = print,
    data: EvalData | None = None,
) -> dict[str, Any] | None:
    """Pretrain (unless ``do_pretrain`` is false), evaluate and report every method.

    Args:
        recipe: A validated recipe.
        do_pretrain: Train what is missing (else only evaluate finished checkpoints).
        log: Where progress lines go.
        data: What :func:`check_plan` returned, when the caller checked already.

    Returns:
        The report (also written to ``report.json`` / ``report.md``), or ``None`` on the
        non-zero ranks of a multi-process run.
    """
    data = data or check_plan(recipe, do_pretrain)
    started = time.perf_counter()
    if do_pretrain:
        pretrain_all(recipe, data, log)
    if not _release_process_group():
        return None
    rows_by_seed, figures = [], {}
    for seeded in map(recipe.with_seed, recipe.all_seeds):
        rows, seed_figures = evaluate_rows(seeded, data, Evaluator(seeded, data), log)
        rows_by_seed.append(rows)
        figures = figures or seed_figures  # the method figures of the first seed
    labels = list(data.val.targets)
    rows = combine_seeds(rows_by_seed, labels)
    paired = paired_table(rows_by_seed, labels, recipe.eval.reference or rows[0]["label"])
    figures = {**summary_figures(rows, recipe.run_dir / "figures"), **figures}
    seconds = time.perf_counter() - started
    report = compose_report(recipe, data, rows, paired, figures, seconds)
    json_path, md_path = write_report(recipe.run_dir, report)
    log(f"wrote {md_path} and {json_path}")
    return report


def evaluate_rows(
    recipe: Recipe, data: EvalData, evaluator: Evaluator, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A row per trained method, one per distinct untrained control, the pixels row.

    Trained rows come first, in recipe order, each naming its control; a control is the
    same method built with the same seed and not trained (the trained model's step 0),
    computed once for all rows whose untrained models are identical.
    """
    rows: list[dict[str, Any]] = []
    controls: dict[str, dict[str, Any]] = {}
    figures: dict[str, str] = {}
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
        row = make_row(entry.label, entry.name, entry, module.backbone, pretrained, results)
        row["sweep_point"] = entry.sweep_point and entry.sweep_point.model_dump(mode="json")
        rows.append(row)
        for stem, grid in module.report_images(images, data.normalization).items():
            name = f"{stem}.png" if f"{stem}.png" not in figures.values() else f"{stem}_{index}.png"
            figures[f"{stem.replace('_', ' ')} ({entry.label})"] = name
            save_image_grid(grid, recipe.run_dir / "figures" / name)
        if recipe.eval.random_init:
            row["control"] = _control(recipe, index, data, evaluator, controls, log)["label"]
    rows.extend(controls.values())
    if recipe.eval.pixels and recipe.data.image_size <= PIXELS_MAX_SIZE:
        log("evaluating raw pixels")
        identity = {"pixels": recipe.data.image_size}
        folder = recipe.run_dir / "pixels" / f"seed-{recipe.seed}"
        results = evaluator.evaluate(FlattenedPixels(), folder, identity, frozen_only=True)
        size = recipe.data.image_size
        rows.append({**make_row("pixels", "pixels", None, None, None, results),
                     "backbone": f"raw pixels (3x{size}x{size})"})  # fmt: skip
    return rows, figures


def _control(
    recipe: Recipe,
    index: int,
    data: EvalData,
    evaluator: Evaluator,
    controls: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The control row of method ``index``, evaluated unless an identical one was.

    Two untrained models are the same control when the same ``forward_features`` runs on
    the same backbone weights with the same feature options (e.g. SimCLR and BYOL on one
    ViT and seed; two MAEs that differ only in mask ratio).
    """
    entry = recipe.methods[index]
    untrained = build_method(recipe, index, data.num_classes)
    options = entry.options()
    features = type(untrained).forward_features  # what the evaluation runs on the weights
    identity = {
        "features_of": f"{features.__module__}.{features.__qualname__}",
        "backbone": tensor_digest(untrained.backbone.state_dict()),
        "features": {key: options[key] for key in untrained.feature_options},
    }
    key = digest(identity)[:16]
    if key not in controls:
        # a sweep's points share the control of the entry they came from, named after it
        label = f"{entry.sweep_point.of if entry.sweep_point else entry.label} (untrained)"
        if any(row["label"] == label for row in controls.values()):
            label = f"{entry.label} (untrained)"  # the points' untrained models differ
        log(f"evaluating {label}")
        folder = recipe.run_dir / "controls" / f"{key}-seed-{recipe.seed}"
        results = evaluator.evaluate(untrained, folder, identity)
        controls[key] = make_row(label, "random_init", entry, untrained.backbone, None, results)
        controls[key]["controls"] = []
    controls[key]["controls"].append(entry.label)
    return controls[key]


def _figure_images(recipe: Recipe, data: EvalData) -> torch.Tensor:
    """A few validation images, evenly spaced, transformed as for evaluation."""
    transform = eval_transform(recipe.data.image_size, data.normalization)
    step = max(len(data.val) // FIGURE_IMAGES, 1)
    picks = [i for i in range(0, step * FIGURE_IMAGES, step) if i < len(data.val)]
    return torch.stack([transform(data.val[i][0]) for i in picks])
