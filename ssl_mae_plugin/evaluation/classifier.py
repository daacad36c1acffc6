"""What the Lightning-trained evaluations share: loaders, per-epoch accuracy, the trainer.

A :class:`ClassifierModule` owns its datasets and builds its loaders once the trainer
knows the world size, so ``batch_size`` is always the global batch and the learning rate
follows ``lr = blr * batch_size / 256`` [0] on any number of devices.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.evaluation.metrics import topk_correct
from ssl_mae_plugin.schedules import warmup_cosine_scheduler


class ClassifierModule(pl.LightningModule, ABC):
    """Base for the augmented linear probe and fine-tuning.

    Subclasses implement :meth:`logits`, ``training_step`` and :meth:`build_optimizer`.

    Args:
        train_dataset: Yields ``(image tensor, label)``.
        val_dataset: Yields ``(image tensor, label)``.
        batch_size: Global batch size (split over the processes).
        epochs: Training epochs, warmup included.
        warmup_epochs: Linear warmup epochs.
        blr: Base learning rate; the peak is ``blr * effective_batch / 256``.
        min_lr: Floor of the cosine schedule.
        num_workers: Loader workers per process.
        even_batches: Round the per-process batch down to an even number (mixup pairs).
    """

    def __init__(
        self,
        train_dataset: Dataset,
        val_dataset: Dataset,
        batch_size: int,
        epochs: int,
        warmup_epochs: float,
        blr: float,
        min_lr: float = 0.0,
        num_workers: int = 0,
        even_batches: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(train_dataset) < batch_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than the training set "
                f"({len(train_dataset)} samples); the last partial batch is dropped"
            )
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.batch_size = batch_size
        self.epochs = epochs
        self.warmup_epochs = warmup_epochs
        self.blr = blr
        self.min_lr = min_lr
        self.num_workers = num_workers
        self.even_batches = even_batches
        self.history: list[dict[str, float]] = []
        self._val_counts = torch.zeros(3, dtype=torch.float64)  # [seen, top1, top5]

    # ---- data -----------------------------------------------------------------------------
    @property
    def per_device_batch_size(self) -> int:
        """Batch size of one process: the global batch over the world size."""
        world = self.trainer.world_size if self._trainer is not None else 1
        size = max(1, self.batch_size // world)
        if self.even_batches:
            size = max(2, size - size % 2)
        return size

    @property
    def effective_batch_size(self) -> int:
        """Samples per optimizer step over all processes."""
        world = self.trainer.world_size if self._trainer is not None else 1
        return self.per_device_batch_size * world

    @property
    def peak_lr(self) -> float:
        """``blr * effective_batch / 256``."""
        return self.blr * self.effective_batch_size / 256

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.per_device_batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, last partial batch dropped (as facebookresearch/mae)."""
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        """In order, every sample."""
        return self._loader(self.val_dataset, train=False)

    # ---- model ----------------------------------------------------------------------------
    @abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` class scores."""

    @abstractmethod
    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, its groups' ``lr`` set to their peak."""

    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer with a per-step warmup + half-cycle cosine schedule [0]."""
        optimizer = self.build_optimizer()
        steps_per_epoch = self.trainer.estimated_stepping_batches / max(self.epochs, 1)
        scheduler = warmup_cosine_scheduler(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            epochs=self.epochs,
            warmup_epochs=self.warmup_epochs,
            min_lr_ratio=self.min_lr / self.peak_lr if self.peak_lr > 0 else 0.0,
        )
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ---- validation -----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        """Reset the accuracy counters."""
        self._val_counts = torch.zeros(3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Count top-1 / top-5 hits."""
        images, labels = batch[0], batch[1]
        counts = topk_correct(self.logits(images).float(), labels)
        self._val_counts += torch.tensor(
            [len(labels), counts[1], counts[5]], dtype=torch.float64, device=self.device
        )

    def on_validation_epoch_end(self) -> None:
        """Reduce the counts over processes and record this epoch's accuracies."""
        if self.trainer.sanity_checking:
            return
        counts = self.trainer.strategy.reduce(self._val_counts, reduce_op="sum")
        seen = max(float(counts[0]), 1.0)
        top1, top5 = float(counts[1]) / seen, float(counts[2]) / seen
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        epoch = self.trainer.current_epoch + 1 if fitting else self.trainer.current_epoch
        self.history.append({"epoch": epoch, "top1": top1, "top5": top5})
        self.log_dict({"val_top1": top1, "val_top5": top5}, sync_dist=False, rank_zero_only=True)


def fit_classifier(
    module: ClassifierModule,
    epochs: int,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    precision: str | int = "32",
    strategy: str = "auto",
    eval_every: int = 1,
    seed: int = 0,
    progress: bool = False,
    trainer_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``module`` with a real ``pytorch_lightning.Trainer`` and summarise its accuracy.

    Validation runs every ``eval_every`` epochs and always after the last one.

    Returns:
        ``{"top1", "top5"}`` of the final model, ``"best_top1"`` / ``"best_epoch"`` over the
        evaluated epochs (selected on the validation set, so optimistic), ``"last_top1"``,
        ``"epochs"``, ``"seconds"`` (wall time of training + evaluation) and ``"history"``
        (one ``{"epoch", "top1", "top5"}`` per evaluation, epochs counted from 1).
    """
    pl.seed_everything(seed, verbose=False)
    kwargs = {
        "max_epochs": epochs,
        "accelerator": accelerator,
        "devices": devices,
        "precision": precision,
        "strategy": strategy,
        "logger": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": progress,
        "num_sanity_val_steps": 0,
        "check_val_every_n_epoch": eval_every,
        **(trainer_kwargs or {}),
    }
    trainer = pl.Trainer(**kwargs)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A frozen backbone in eval mode is intended; so are small datasets in the tests.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")
        trainer.fit(module)
        if not module.history or module.history[-1]["epoch"] != epochs:
            trainer.validate(module, verbose=False)
    seconds = time.perf_counter() - start
    return summarize_history(module.history, epochs=epochs, seconds=seconds)


def summarize_history(
    history: list[dict[str, float]], epochs: int, seconds: float
) -> dict[str, Any]:
    """The result dict of an evaluation from its per-epoch accuracies."""
    if not history:
        raise RuntimeError("no validation epoch was recorded")
    last = history[-1]
    best = max(history, key=lambda row: row["top1"])  # first of equals: earliest epoch
    return {
        "top1": last["top1"],
        "top5": last["top5"],
        "best_top1": best["top1"],
        "best_epoch": int(best["epoch"]),
        "last_top1": last["top1"],
        "epochs": epochs,
        "seconds": seconds,
        "history": list(history),
    }
