"""Pretraining one method of a recipe with a PyTorch Lightning ``Trainer``.

CPU or GPU, one or many devices (DDP), 32/bf16/16-bit precision, checkpoints at
``<output_dir>/<name>/<label>/checkpoints/last.ckpt`` after every epoch (and optionally
every N steps), per-epoch metrics in ``<label>/metrics.csv``, and exact resume: the same
command continues from the last checkpoint and ends with the weights of an uninterrupted
run (see :mod:`ssl_mae_plugin.loading`).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.data import MultiViewCollate
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from ssl_mae_plugin.augment import DeviceCropFlip, load_uint8
from ssl_mae_plugin.callbacks import (
    RUN_INFO_KEY,
    EpochMetrics,
    GracefulInterrupt,
    RunInfo,
    read_metrics,
)
from ssl_mae_plugin.data import (
    Normalization,
    build_dataset,
    default_normalization,
    limit_dataset,
)
from ssl_mae_plugin.loading import EpochSampler, SeededIndices, SeededViews
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.registry import get_method
from ssl_mae_plugin.recipes import Recipe, RecipeError, TrainerConfig

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last"


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def normalization_of(recipe: Recipe) -> Normalization:
    """The recipe's input normalisation (its own or the dataset's usual one)."""
    default = default_normalization(recipe.data.dataset)
    mean = tuple(recipe.data.mean) if recipe.data.mean else default.mean
    std = tuple(recipe.data.std) if recipe.data.std else default.std
    return Normalization(mean, std)


def build_split(recipe: Recipe, split: str, max_images: int | None) -> Any:
    """One split of the recipe's dataset, limited to a balanced subset when asked."""
    dataset = build_dataset(
        recipe.data.dataset,
        split,
        root=recipe.data.root,
        download=recipe.data.download,
        on_bad_image=recipe.data.on_bad_image,
        bad_image_log=recipe.run_dir / "bad_images.txt",
    )
    return limit_dataset(dataset, max_images, seed=recipe.seed)


def build_method(recipe: Recipe, index: int, num_classes: int) -> SSLMethod:
    """Instantiate method ``index`` of the recipe (weights from ``recipe.seed``)."""
    entry = recipe.methods[index]
    method = get_method(entry["name"])
    options = {key: value for key, value in entry.items() if key not in ("name", "label")}
    pl.seed_everything(recipe.seed, verbose=False)
    return method(
        **options,
        image_size=recipe.data.image_size,
        num_classes=num_classes,
        batch_size=recipe.pretrain.batch_size,
        seed=recipe.seed,
    )


class PretrainData(pl.LightningDataModule):
    """Seeded, sharded, resumable loading of the training split.

    Args:
        dataset: Yields ``(image, label)``.
        transform: The method's lightly transform.
        batch_size: Global batch size.
        seed: Run seed.
        num_workers: Loader processes per device.
        start_epoch: Epoch to start in (resume).
        skip_batches: Batches of ``start_epoch`` already done (resume).
        device_transform: Keep the images in memory as uint8 and make the views with it on
            the training device instead of ``transform`` in the loader processes.
    """

    def __init__(
        self,
        dataset: Any,
        transform: Any,
        batch_size: int,
        seed: int,
        num_workers: int,
        start_epoch: int = 0,
        skip_batches: int = 0,
        device_transform: DeviceCropFlip | None = None,
    ) -> None:
        super().__init__()
        self.device_transform = device_transform
        if device_transform is None:
            self.items: Any = SeededViews(dataset, transform, seed=seed)
        else:
            self.items = SeededIndices(dataset.targets, seed=seed)
            self.images = load_uint8(dataset, num_workers)  # [N, 3, H, W], moved on first use
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.start_epoch = start_epoch
        self.skip_batches = skip_batches

    def train_dataloader(self) -> DataLoader:
        """Per-rank loader over the rank's shard of each epoch."""
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by {world} devices")
        per_rank = self.batch_size // world
        sampler = EpochSampler(
            len(self.items),
            batch_size=per_rank,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            start_epoch=self.start_epoch,
            skip_batches=self.skip_batches,
        )
        in_memory = self.device_transform is not None
        workers = 0 if in_memory else self.num_workers  # in memory: only indices to batch
        return DataLoader(
            self.items,
            batch_size=per_rank,
            sampler=sampler,
            collate_fn=None if in_memory else MultiViewCollate(),
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,  # the sampler already yields whole batches
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """In memory: turn ``(indices, labels, seeds)`` into views on the device."""
        if self.device_transform is None:
            return batch
        indices, labels, seeds = batch
        if self.images.device != indices.device:
            self.images = self.images.to(indices.device)
        seed_list = seeds.tolist()
        return [self.device_transform(self.images[indices], seed_list)], labels, seed_list


def load_pretrained(path: str | Path) -> tuple[SSLMethod, dict[str, Any]]:
    """A method and its run info from one of our Lightning checkpoints (CPU, eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if "ssl_method" not in state:
        raise ValueError(f"{path} is not an ssl-mae checkpoint (no 'ssl_method' entry)")
    method = get_method(state["ssl_method"])
    module = method.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return module.eval(), state.get(RUN_INFO_KEY, {})


def data_position(checkpoint: Path) -> tuple[int, int]:
    """``(epoch, batches done in it)`` recorded in one of our checkpoints."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    position = state.get("data_position", {"epoch": state.get("epoch", 0) + 1, "batches_done": 0})
    return int(position["epoch"]), int(position["batches_done"])


def summarize(recipe: Recipe, index: int) -> PretrainResult:
    """The result of method ``index`` as recorded in its folder."""
    method_dir = recipe.method_dir(index)
    rows = read_metrics(method_dir / "metrics.csv")
    speeds = [float(r["images_per_second"]) for r in rows if r["images_per_second"]]
    memory = [float(r["peak_memory_mb"]) for r in rows if r["peak_memory_mb"]]
    return PretrainResult(
        label=recipe.methods[index]["label"],
        checkpoint=str(method_dir / "checkpoints" / f"{CHECKPOINT_NAME}.ckpt"),
        epochs=len(rows),
        seconds=round(sum(float(r["seconds"]) for r in rows), 2),
        images_per_second=round(sorted(speeds)[len(speeds) // 2], 2) if speeds else None,
        final_loss=float(rows[-1]["loss"]) if rows and rows[-1]["loss"] else None,
        peak_memory_mb=max(memory) if memory else None,
        memory_kind=rows[-1].get("memory_kind", "") if rows else "",
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


def show_progress(recipe: Recipe) -> bool:
    """Progress bars when the recipe asks for them and a terminal is there to show them."""
    return recipe.trainer.progress_bar and sys.stderr.isatty()


def build_trainer(
    recipe: Recipe, method_dir: Path, steps_per_epoch: int, normalization: Normalization
) -> pl.Trainer:
    """A Lightning Trainer with our checkpoints, metrics and logging."""
    checkpoint_dir = method_dir / "checkpoints"
    checkpoint_options: dict[str, Any] = {
        "dirpath": checkpoint_dir,
        "filename": CHECKPOINT_NAME,
        "save_top_k": 1,
        "enable_version_counter": False,
    }
    callbacks: list[Callback] = [
        EpochMetrics(
            method_dir / "metrics.csv",
            recipe.pretrain.batch_size,
            announce=not show_progress(recipe),
        ),
        RunInfo(recipe, normalization),
        GracefulInterrupt(checkpoint_dir / f"{CHECKPOINT_NAME}.ckpt"),
        ModelCheckpoint(**checkpoint_options, every_n_epochs=1, save_on_train_epoch_end=True),
    ]
    if recipe.pretrain.checkpoint_every_n_steps:
        callbacks.append(
            ModelCheckpoint(
                **checkpoint_options, every_n_train_steps=recipe.pretrain.checkpoint_every_n_steps
            )
        )
    trainer_config = recipe.trainer
    return pl.Trainer(
        max_epochs=recipe.pretrain.epochs,
        accelerator=trainer_config.accelerator,
        devices=trainer_config.devices,
        num_nodes=trainer_config.num_nodes,
        precision=trainer_config.precision,
        strategy=trainer_config.strategy,
        logger=CSVLogger(method_dir, name="logs"),
        callbacks=callbacks,
        enable_progress_bar=show_progress(recipe),
        enable_model_summary=False,
        log_every_n_steps=max(1, min(trainer_config.log_every_n_steps, steps_per_epoch)),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=method_dir,
    )


def pretrain(recipe: Recipe, index: int) -> PretrainResult:
    """Pretrain method ``index`` of the recipe, resuming from its last checkpoint if any.

    Args:
        recipe: A validated recipe.
        index: Which entry of ``recipe.methods``.

    Returns:
        The recorded result (also when the run had already finished).
    """
    method_dir = recipe.method_dir(index)
    checkpoint = method_dir / "checkpoints" / f"{CHECKPOINT_NAME}.ckpt"
    start_epoch, skip_batches = data_position(checkpoint) if checkpoint.is_file() else (0, 0)
    if start_epoch >= recipe.pretrain.epochs:
        logger.info("%s: already pretrained for %d epochs", method_dir, recipe.pretrain.epochs)
        return summarize(recipe, index)

    dataset = build_split(recipe, recipe.data.train_split, recipe.data.max_train_images)
    module = build_method(recipe, index, num_classes=len(dataset.classes))
    normalization = normalization_of(recipe)
    transform = module.default_transform(normalization)
    device_transform = None
    if recipe.data.in_memory:
        device_transform = DeviceCropFlip(
            recipe.data.image_size, normalization, module.device_crop_scale
        )
    data = PretrainData(
        dataset,
        transform,
        batch_size=recipe.pretrain.batch_size,
        seed=recipe.seed,
        num_workers=recipe.data.num_workers,
        start_epoch=start_epoch,
        skip_batches=skip_batches,
        device_transform=device_transform,
    )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
    steps_per_epoch = max(len(dataset) // recipe.pretrain.batch_size, 1)
    trainer = build_trainer(recipe, method_dir, steps_per_epoch, normalization)
    trainer.fit(module, datamodule=data, ckpt_path=checkpoint if checkpoint.is_file() else None)
    return summarize(recipe, index)
