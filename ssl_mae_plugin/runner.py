"""Pretrain -> evaluate -> report, for every method of a recipe.

Everything a run produces lives under ``<output_dir>/<name>/``; a re-run reuses finished
checkpoints, cached features and cached evaluation results, and only redoes what is
missing or what a changed setting invalidates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from ssl_mae_plugin.data import Normalization, eval_transform
from ssl_mae_plugin.evaluation.features import FlattenedPixels
from ssl_mae_plugin.evaluation.protocols import EvalData, Evaluator, prepare_data
from ssl_mae_plugin.evaluation.vit_features import feature_view
from ssl_mae_plugin.model_rows import entry_normalization, load_entry, model_dir, weights_identity
from ssl_mae_plugin.pretrain import (
    build_method,
    check_checkpoint,
    check_loggers,
    checkpoint_path,
    knn_curve,
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
    describe_backbone,
    make_row,
    paired_table,
    save_image_grid,
    summary_figures,
    write_report,
)
from ssl_mae_plugin.report.figures import plot_knn_curves
from ssl_mae_plugin.report.layer_sweep import add_layer_sweeps
from ssl_mae_plugin.report.transfer import transfer_section
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
            with other settings than the recipe's, (``do_pretrain=False``) a method
            that is not pretrained yet, a ``models`` entry whose weights do not load, or
            ``eval.features`` asking a ViT for blocks it does not have.
    """
    check_loggers(recipe.trainer)
    check_launch(recipe.trainer)
    data = prepare_data(recipe)
    for seeded in map(recipe.with_seed, recipe.all_seeds):
        for index in range(len(recipe.methods)):
            check_checkpoint(seeded, index)
            if not do_pretrain:
                finished_checkpoint(seeded, index)
    models = [load_entry(recipe, index).model for index in range(len(recipe.models))]
    protocol = recipe.eval.features
    if protocol is not None:  # blocks the ViTs have, a class token where cls is asked for
        methods = [build_method(recipe, i, data.num_classes) for i in range(len(recipe.methods))]
        labels = [entry.label for entry in [*recipe.methods, *recipe.models]]
        for label, model in zip(labels, [*methods, *models], strict=True):
            try:
                feature_view(model, protocol.pool, protocol.blocks)
            except ValueError as error:
                raise RecipeError(f"eval.features ({label}): {error}") from error
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
            pretrain(seeded, index, data.train, val_dataset=data.val)


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
        rows, seed_figures = evaluate_rows(seeded, data, Evaluators(seeded, data), log)
        rows_by_seed.append(rows)
        figures = figures or seed_figures  # the method figures of the first seed
    labels = list(data.val.targets)
    rows = combine_seeds(rows_by_seed, labels)
    reference = recipe.eval.reference or rows[0]["label"]
    paired = paired_table(rows_by_seed, labels, reference)
    transfer = transfer_section(rows, rows_by_seed, data, reference)
    figures = {
        **summary_figures(rows, recipe.run_dir / "figures"),
        **_knn_curves(recipe, rows),
        **add_layer_sweeps(rows, rows_by_seed, labels, recipe.run_dir / "figures"),
        **figures,
    }
    seconds = time.perf_counter() - started
    report = compose_report(recipe, data, rows, paired, figures, seconds, transfer)
    json_path, md_path = write_report(recipe.run_dir, report)
    log(f"wrote {md_path} and {json_path}")
    return report


class Evaluators:
    """Evaluates a model on the recipe's data and on each of its ``eval.datasets``.

    Args:
        recipe: The recipe of one seed.
        data: Its splits, with the transfer datasets (see :func:`prepare_data`).
    """

    def __init__(self, recipe: Recipe, data: EvalData) -> None:
        self.recipe, self.data = recipe, data
        self.main = Evaluator(recipe, data)
        self.transfer = {
            name: Evaluator(transferred.with_seed(recipe.seed), splits)
            for name, (transferred, splits) in data.transfer.items()
        }

    def with_normalization(self, normalization: Normalization) -> Evaluators:
        """The same evaluations of images normalised otherwise (what other weights expect)."""
        if normalization == self.data.normalization:
            return self
        transfer = {
            name: (transferred, replace(splits, normalization=normalization))
            for name, (transferred, splits) in self.data.transfer.items()
        }
        data = replace(self.data, normalization=normalization, transfer=transfer)
        return Evaluators(self.recipe, data)

    def evaluate(
        self, model: nn.Module, folder: Path, identity: dict[str, Any], frozen_only: bool = False
    ) -> dict[str, Any]:
        """:meth:`Evaluator.evaluate` on the main data, with ``"transfer"``: {name: results}."""
        results = self.main.evaluate(model, folder, identity, frozen_only)
        results["transfer"] = {
            name: evaluator.evaluate(model, folder / "transfer" / name, identity, frozen_only)
            for name, evaluator in self.transfer.items()
        }
        return results


def evaluate_rows(
    recipe: Recipe, data: EvalData, evaluator: Evaluators, log: Callable[[str], None]
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
            untrained = build_method(recipe, index, data.num_classes)
            options = entry.options()
            named = entry.sweep_point.of if entry.sweep_point else entry.label
            control = _control(
                recipe,
                untrained,
                [f"{named} (untrained)", f"{entry.label} (untrained)"],
                entry.label,
                {key: options[key] for key in untrained.feature_options},
                evaluator,
                controls,
                log,
            )
            control["backbone"] = describe_backbone(entry)
            row["control"] = control["label"]
    for index in range(len(recipe.models)):
        rows.append(_model_row(recipe, index, data, evaluator, controls, log))
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


def _model_row(
    recipe: Recipe,
    index: int,
    data: EvalData,
    evaluators: Evaluators,
    controls: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The row of ``models`` entry ``index`` (and its control, when its source builds one)."""
    entry = recipe.models[index]
    loaded = load_entry(recipe, index)
    normalization = entry_normalization(entry, loaded, data.normalization)
    evaluators = evaluators.with_normalization(normalization)
    log(f"evaluating {entry.label}")
    identity = weights_identity(entry, recipe.data.image_size)
    results = evaluators.evaluate(loaded.model, model_dir(recipe, index), identity)
    row = make_row(entry.label, "weights", None, loaded.model, None, results)
    row["backbone"] = loaded.architecture
    row["weights"] = {
        "path": entry.weights,
        "format": identity["format"],
        "architecture": entry.architecture,
        "mean": list(normalization.mean),
        "std": list(normalization.std),
    }
    if recipe.eval.random_init and loaded.untrained is not None:
        untrained = loaded.untrained(recipe.seed if loaded.seed is None else loaded.seed)
        options = {"normalization": [normalization.mean, normalization.std]}
        labels = [f"{entry.label} (untrained)"]
        control = _control(recipe, untrained, labels, entry.label, options, evaluators,
                           controls, log)  # fmt: skip
        control["backbone"] = loaded.architecture
        row["control"] = control["label"]
    return row


def _control(
    recipe: Recipe,
    untrained: nn.Module,
    labels: list[str],
    owner: str,
    options: dict[str, Any],
    evaluator: Evaluators,
    controls: dict[str, dict[str, Any]],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """The control row of ``owner``, evaluated unless an identical one was.

    Two untrained models are the same control when the same ``forward_features`` runs on
    the same backbone weights with the same feature ``options`` (e.g. SimCLR and BYOL on
    one ViT and seed; two MAEs that differ only in mask ratio). A new control takes the
    first of ``labels`` that no other control has (a sweep's points share the control of
    the entry they came from, named after it).
    """
    features = type(untrained).forward_features  # what the evaluation runs on the weights
    identity = {
        "features_of": f"{features.__module__}.{features.__qualname__}",
        "backbone": tensor_digest(untrained.backbone.state_dict()),
        "features": options,
    }
    key = digest(identity)[:16]
    if key not in controls:
        taken = {row["label"] for row in controls.values()}
        label = next((label for label in labels if label not in taken), labels[-1])
        log(f"evaluating {label}")
        folder = recipe.run_dir / "controls" / f"{key}-seed-{recipe.seed}"
        results = evaluator.evaluate(untrained, folder, identity)
        controls[key] = make_row(label, "random_init", None, untrained.backbone, None, results)
        controls[key]["controls"] = []
    controls[key]["controls"].append(owner)
    return controls[key]


def _knn_curves(recipe: Recipe, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each trained row's k-NN monitor curve (first seed) into its row and one figure."""
    curves = {}
    for index, entry in enumerate(recipe.methods):
        curve = knn_curve(recipe.method_dir(index) / "metrics.csv")
        next(row for row in rows if row["label"] == entry.label)["knn_monitor"] = curve or None
        curves[entry.label] = curve
    path = plot_knn_curves(curves, recipe.run_dir / "figures" / "knn_curves.png")
    return {"k-NN during pretraining": path.name} if path else {}


def _figure_images(recipe: Recipe, data: EvalData) -> torch.Tensor:
    """A few validation images, evenly spaced, transformed as for evaluation."""
    transform = eval_transform(recipe.data.image_size, data.normalization)
    step = max(len(data.val) // FIGURE_IMAGES, 1)
    picks = [i for i in range(0, step * FIGURE_IMAGES, step) if i < len(data.val)]
    return torch.stack([transform(data.val[i][0]) for i in picks])
