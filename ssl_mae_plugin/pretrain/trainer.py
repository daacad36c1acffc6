"""Pretraining one method of a recipe with a PyTorch Lightning ``Trainer``.

CPU or GPU, one or many devices (DDP), 32/bf16/16-bit precision, checkpoints at
``<output_dir>/<name>/<label>/checkpoints/last.ckpt`` after every epoch (and optionally
every N steps), per-epoch metrics in ``<label>/metrics.csv``, and exact resume: the same
command continues from the last checkpoint and ends with the weights of an uninterrupted
run (see :mod:`ssl_mae_plugin.pretrain.sampling`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from torch.utils.data import Dataset

from ssl_mae_plugin.data import Normalization, resolve_root
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.pretrain.augment import DeviceCropFlip
from ssl_mae_plugin.pretrain.callbacks import (
    RUN_INFO_KEY,
    EpochMetrics,
    GracefulInterrupt,
    RunInfo,
    read_metrics,
)
from ssl_mae_plugin.pretrain.checkpoints import (
    CHECKPOINT_NAME,
    checkpoint_path,
    data_position,
    read_checkpoint,
)
from ssl_mae_plugin.pretrain.datamodule import PretrainData
from ssl_mae_plugin.pretrain.decoding import ReducedDecodeCrops, flip_and_normalize
from ssl_mae_plugin.pretrain.device_decode import DeviceDecodeViews, EncodedSamples
from ssl_mae_plugin.pretrain.knn_monitor import KNNMonitor
from ssl_mae_plugin.pretrain.loggers import build_loggers
from ssl_mae_plugin.recipes import Recipe, RecipeError

logger = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What a pretraining run produced, as recorded in its folder."""

    label: str
    checkpoint: str
    epochs: int
    seconds: float
    images_per_second: float | None
    final_loss: float | None
    peak_memory_mb: float | None
    memory_kind: str
    losses: list[float] = field(default_factory=list)  # one per epoch

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def training_settings(recipe: Recipe, index: int) -> dict[str, Any]:
    """Everything that decides the weights method ``index`` trains to (JSON-friendly).

    Stored in each checkpoint; a checkpoint whose settings differ from the recipe's is
    stale (see :func:`check_checkpoint`). Devices, workers, logging and
    ``pretrain.knn_monitor`` do not change the weights and are not part of it.
    """
    entry, data = recipe.methods[index], recipe.data
    settings = {
        "method": entry.name,
        "options": entry.options(),
        "seed": recipe.seed,
        "epochs": recipe.pretrain.epochs,
        "batch_size": recipe.pretrain.batch_size,
        "precision": recipe.trainer.precision,
        "data": {
            "dataset": data.dataset,
            "root": resolve_root(data.root) if data.root else None,
            "train_split": data.train_split,
            "image_size": data.image_size,
            "max_train_images": data.max_train_images,
            "mean": data.mean,
            "std": data.std,
            "in_memory": data.in_memory,
        },
    }
    if data.decode != "full":  # absent means full: older checkpoints match
        settings["data"]["decode"] = data.decode
    if recipe.pretrain.accumulate_grad_batches > 1:  # absent means 1: older checkpoints match
        settings["accumulate_grad_batches"] = recipe.pretrain.accumulate_grad_batches
    return json.loads(json.dumps(settings))


def check_checkpoint(recipe: Recipe, index: int) -> None:
    """Refuse a checkpoint of method ``index`` trained with other settings than the recipe's.

    Raises:
        RecipeError: Naming each differing setting with both values and the ways forward.
    """
    checkpoint = checkpoint_path(recipe.method_dir(index))
    if not checkpoint.is_file() or recipe.pretrain.retrain:
        return
    state = read_checkpoint(checkpoint)
    saved = state.get(RUN_INFO_KEY, {}).get("settings")
    wanted = training_settings(recipe, index)
    if saved is None:  # an older checkpoint: only the method's own arguments can be compared
        logger.warning(
            "%s records no training settings; only its method options are checked", checkpoint
        )
        options = json.loads(json.dumps(state.get("hyper_parameters", {}), default=str))
        saved = {"options": {key: options.get(key) for key in wanted["options"]}}
        wanted = {"options": wanted["options"]}
    changes = [
        f"{key} {old!r} -> {new!r}" for key, (old, new) in _differences(saved, wanted).items()
    ]
    if changes:
        label = recipe.methods[index].label
        raise RecipeError(
            f"methods.{index} ({label}): {checkpoint} was trained with other settings "
            f"(checkpoint -> recipe: {'; '.join(changes)}); give the entry another label "
            f"to train a new model beside it, or set pretrain.retrain=true to move "
            f"{recipe.method_dir(index)} aside and train it again"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested mappings."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return {} if old == new else {prefix: (old, new)}
    changed: dict[str, tuple[Any, Any]] = {}
    for key in sorted(set(old) | set(new)):
        changed |= _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key)
    return changed


def set_aside(recipe: Recipe, index: int) -> Path | None:
    """With ``pretrain.retrain``: move a stale run of method ``index`` aside; its new path."""
    method_dir = recipe.method_dir(index)
    checkpoint = checkpoint_path(method_dir)
    if not (recipe.pretrain.retrain and checkpoint.is_file()):
        return None
    saved = read_checkpoint(checkpoint).get(RUN_INFO_KEY, {}).get("settings")
    if saved == training_settings(recipe, index):
        return None
    target = method_dir.with_name(f"{method_dir.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
    method_dir.rename(target)
    return target


def build_method(recipe: Recipe, index: int, num_classes: int) -> SSLMethod:
    """Instantiate method ``index`` of the recipe (weights from ``recipe.seed``)."""
    entry = recipe.methods[index]
    return seeded_method(
        entry.method,
        recipe.seed,
        **entry.options(),
        image_size=recipe.data.image_size,
        num_classes=num_classes,
        batch_size=recipe.pretrain.effective_batch_size,
    )


def seeded_method(method: type[SSLMethod], seed: int, **arguments: Any) -> SSLMethod:
    """``method(**arguments, seed=seed)`` with its initial weights drawn from ``seed``."""
    pl.seed_everything(seed, verbose=False)
    return method(**arguments, seed=seed)


def summarize(recipe: Recipe, index: int) -> PretrainResult:
    """The result of method ``index`` as recorded in its folder."""
    method_dir = recipe.method_dir(index)
    rows = read_metrics(method_dir / "metrics.csv")
    speeds = [float(r["images_per_second"]) for r in rows if r["images_per_second"]]
    memory = [float(r["peak_memory_mb"]) for r in rows if r["peak_memory_mb"]]
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    return PretrainResult(
        label=recipe.methods[index].label,
        checkpoint=str(checkpoint_path(method_dir)),
        epochs=len(rows),
        seconds=round(sum(float(r["seconds"]) for r in rows), 2),
        images_per_second=round(sorted(speeds)[len(speeds) // 2], 2) if speeds else None,
        final_loss=losses[-1] if losses else None,
        peak_memory_mb=max(memory) if memory else None,
        memory_kind=rows[-1].get("memory_kind", "") if rows else "",
        losses=losses,
    )


def build_trainer(
    recipe: Recipe, index: int, steps_per_epoch: int, run_info: dict[str, Any]
) -> pl.Trainer:
    """A Lightning Trainer with our checkpoints, metrics and logging for method ``index``."""
    method_dir = recipe.method_dir(index)
    checkpoint = checkpoint_path(method_dir)
    checkpoint_options: dict[str, Any] = {
        "dirpath": checkpoint.parent,
        "filename": CHECKPOINT_NAME,
        "save_top_k": 1,
        "enable_version_counter": False,
    }
    config = recipe.trainer
    callbacks: list[Callback] = [
        EpochMetrics(
            method_dir / "metrics.csv",
            recipe.pretrain.batch_size,
            announce=not config.show_progress,
        ),
        RunInfo(run_info),
        GracefulInterrupt(checkpoint),
        ModelCheckpoint(**checkpoint_options, every_n_epochs=1, save_on_train_epoch_end=True),
    ]
    if recipe.pretrain.checkpoint_every_n_steps:
        callbacks.append(
            ModelCheckpoint(
                **checkpoint_options, every_n_train_steps=recipe.pretrain.checkpoint_every_n_steps
            )
        )
    return pl.Trainer(
        max_epochs=recipe.pretrain.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        precision=config.precision,
        strategy=config.strategy,
        logger=build_loggers(recipe, index),
        callbacks=callbacks,
        enable_progress_bar=config.show_progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(config.log_every_n_steps, steps_per_epoch)),
        accumulate_grad_batches=recipe.pretrain.accumulate_grad_batches,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=method_dir,
    )


def warn_about_accumulation(recipe: Recipe, index: int, module: SSLMethod, num_images: int) -> None:
    """Warn where gradient accumulation is not one step on the effective batch.

    It is for MAE (per-sample loss, no batch statistics). For methods that compare the
    samples of a batch or use its statistics, k accumulated batches of b are a different
    method than one batch of k x b (fewer negatives, statistics over b). And where an epoch's
    batches are not a multiple of k, its last optimizer step sums fewer of them.
    """
    accumulate = recipe.pretrain.accumulate_grad_batches
    if accumulate == 1:
        return
    label = recipe.methods[index].label
    if not module.exact_accumulation:
        logger.warning(
            "%s: %s's loss or batch statistics see each batch of %d alone; accumulating %d of "
            "them is not the same as a batch of %d (the learning rate follows %d)",
            label,
            module.name,
            recipe.pretrain.batch_size,
            accumulate,
            recipe.pretrain.effective_batch_size,
            recipe.pretrain.effective_batch_size,
        )
    batches = num_images // recipe.pretrain.batch_size
    if batches % accumulate:
        logger.warning(
            "%s: %d batches an epoch are not a multiple of accumulate_grad_batches=%d; each "
            "epoch's last optimizer step sums %d of them",
            label,
            batches,
            accumulate,
            batches % accumulate,
        )


def pretrain(
    recipe: Recipe,
    index: int,
    dataset: Dataset,
    callbacks: Sequence[Callback] = (),
    val_dataset: Dataset | None = None,
) -> PretrainResult:
    """Pretrain method ``index`` of the recipe, resuming from its last checkpoint if any.

    Args:
        recipe: A validated recipe.
        index: Which entry of ``recipe.methods``.
        dataset: The training split (``(image, label)`` items with ``classes``).
        callbacks: More Lightning callbacks for the trainer.
        val_dataset: The validation split, the same; needed by ``pretrain.knn_monitor``.

    Returns:
        The recorded result (also when the run had already finished).

    Raises:
        ValueError: If ``pretrain.knn_monitor`` is set and ``val_dataset`` is not given.
    """
    monitor = recipe.pretrain.knn_monitor
    if monitor is not None and val_dataset is None:
        raise ValueError("pretrain.knn_monitor needs the validation split: pass val_dataset")
    checkpoint = checkpoint_path(recipe.method_dir(index))
    start_epoch, skip_batches = data_position(checkpoint) if checkpoint.is_file() else (0, 0)
    if start_epoch >= recipe.pretrain.epochs:
        logger.info("%s: already pretrained for %d epochs", checkpoint, recipe.pretrain.epochs)
        return summarize(recipe, index)

    module = build_method(recipe, index, num_classes=len(dataset.classes))
    if monitor is not None:  # before the training split is wrapped for reduced decoding
        callbacks = [KNNMonitor.from_recipe(recipe, index, dataset, val_dataset), *callbacks]
    warn_about_accumulation(recipe, index, module, len(dataset))
    normalization = Normalization(tuple(recipe.data.mean), tuple(recipe.data.std))
    device_transform = None
    if recipe.data.in_memory:
        device_transform = DeviceCropFlip(
            recipe.data.image_size, normalization, module.device_crop_scale
        )
    views = module.default_transform(normalization)
    device_decode = None
    if recipe.data.decode != "full" and module.device_crop_scale is None:
        logger.info("%s: its views are more than a crop and a flip; decoding fully", module.name)
    elif recipe.data.decode == "reduced":
        size, scale = recipe.data.image_size, module.device_crop_scale
        dataset, views = ReducedDecodeCrops(dataset, size, scale), flip_and_normalize(normalization)
    elif recipe.data.decode == "device":
        samples = EncodedSamples(dataset, seed=recipe.seed)
        device_decode = DeviceDecodeViews(
            samples, recipe.data.image_size, normalization, module.device_crop_scale
        )
    data = PretrainData(
        dataset,
        views,
        batch_size=recipe.pretrain.batch_size,
        seed=recipe.seed,
        num_workers=recipe.data.num_workers,
        start_epoch=start_epoch,
        skip_batches=skip_batches,
        device_transform=device_transform,
        device_decode=device_decode,
    )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    run_info = {
        "settings": training_settings(recipe, index),
        "recipe": recipe.name,
        "dataset": recipe.data.dataset,
        "image_size": recipe.data.image_size,
        "mean": list(normalization.mean),
        "std": list(normalization.std),
    }
    steps_per_epoch = max(len(dataset) // recipe.pretrain.batch_size, 1)
    trainer = build_trainer(recipe, index, steps_per_epoch, run_info)
    trainer.callbacks.extend(callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint if checkpoint.is_file() else None)
    return summarize(recipe, index)
