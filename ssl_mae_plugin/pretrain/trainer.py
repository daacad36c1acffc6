"""Pretraining one method of a recipe with a PyTorch Lightning ``Trainer``.

CPU or GPU, one or many devices (DDP), 32/bf16/16-bit precision, checkpoints at
``<output_dir>/<name>/<label>/checkpoints/last.ckpt`` after every epoch (and optionally
every N steps), per-epoch metrics in ``<label>/metrics.csv``, and exact resume: the same
command continues from the last checkpoint and ends with the weights of an uninterrupted
run (see :mod:`ssl_mae_plugin.pretrain.sampling`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import Dataset

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.pretrain.augment import DeviceCropFlip
from ssl_mae_plugin.pretrain.callbacks import (
    EpochMetrics,
    GracefulInterrupt,
    RunInfo,
    read_metrics,
)
from ssl_mae_plugin.pretrain.checkpoints import CHECKPOINT_NAME, checkpoint_path, data_position
from ssl_mae_plugin.pretrain.datamodule import PretrainData
from ssl_mae_plugin.recipes import Recipe, RecipeError, TrainerConfig

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


def build_method(recipe: Recipe, index: int, num_classes: int) -> SSLMethod:
    """Instantiate method ``index`` of the recipe (weights from ``recipe.seed``)."""
    entry = recipe.methods[index]
    pl.seed_everything(recipe.seed, verbose=False)
    return entry.method(
        **entry.options(),
        image_size=recipe.data.image_size,
        num_classes=num_classes,
        batch_size=recipe.pretrain.batch_size,
        seed=recipe.seed,
    )


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


def check_accelerator(trainer: TrainerConfig) -> None:
    """Fail before any work if ``trainer`` asks for GPUs this machine does not have.

    Raises:
        RecipeError: Naming ``trainer.accelerator`` or ``trainer.devices``.
    """
    if trainer.accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count()
    if available == 0:
        raise RecipeError(
            f"trainer.accelerator is {trainer.accelerator!r} but no CUDA GPU is visible; "
            "use trainer.accelerator=cpu (or auto)"
        )
    if isinstance(trainer.devices, int) and trainer.devices > available:
        raise RecipeError(
            f"trainer.devices={trainer.devices} but this machine has {available} CUDA GPU(s)"
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
        logger=CSVLogger(method_dir, name="logs"),
        callbacks=callbacks,
        enable_progress_bar=config.show_progress,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(config.log_every_n_steps, steps_per_epoch)),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=method_dir,
    )


def pretrain(recipe: Recipe, index: int, dataset: Dataset) -> PretrainResult:
    """Pretrain method ``index`` of the recipe, resuming from its last checkpoint if any.

    Args:
        recipe: A validated recipe.
        index: Which entry of ``recipe.methods``.
        dataset: The training split (``(image, label)`` items with ``classes``).

    Returns:
        The recorded result (also when the run had already finished).
    """
    checkpoint = checkpoint_path(recipe.method_dir(index))
    start_epoch, skip_batches = data_position(checkpoint) if checkpoint.is_file() else (0, 0)
    if start_epoch >= recipe.pretrain.epochs:
        logger.info("%s: already pretrained for %d epochs", checkpoint, recipe.pretrain.epochs)
        return summarize(recipe, index)

    module = build_method(recipe, index, num_classes=len(dataset.classes))
    normalization = Normalization(tuple(recipe.data.mean), tuple(recipe.data.std))
    device_transform = None
    if recipe.data.in_memory:
        device_transform = DeviceCropFlip(
            recipe.data.image_size, normalization, module.device_crop_scale
        )
    data = PretrainData(
        dataset,
        module.default_transform(normalization),
        batch_size=recipe.pretrain.batch_size,
        seed=recipe.seed,
        num_workers=recipe.data.num_workers,
        start_epoch=start_epoch,
        skip_batches=skip_batches,
        device_transform=device_transform,
    )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    run_info = {
        "recipe": recipe.name,
        "dataset": recipe.data.dataset,
        "image_size": recipe.data.image_size,
        "mean": list(normalization.mean),
        "std": list(normalization.std),
    }
    steps_per_epoch = max(len(dataset) // recipe.pretrain.batch_size, 1)
    trainer = build_trainer(recipe, index, steps_per_epoch, run_info)
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint if checkpoint.is_file() else None)
    return summarize(recipe, index)
