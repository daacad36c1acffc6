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
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.evaluation.metrics import Tally
from ssl_mae_plugin.schedules import clip_warmup, warmup_cosine_scheduler


@dataclass(frozen=True)
class Budget:
    """The training budget of a trained evaluation (probe or fine-tuning).

    Attributes:
        epochs: Training epochs, warmup included.
        warmup_epochs: Linear warmup epochs (clipped to ``epochs`` with a warning).
        batch_size: Global batch size (split over the processes).
        blr: Base learning rate; the peak is ``blr * effective_batch / 256`` [0].
        weight_decay: The optimizer's weight decay.
        min_lr: Floor of the cosine schedule.
    """

    epochs: int
    warmup_epochs: float
    batch_size: int
    blr: float
    weight_decay: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        check_training_options(
            self.epochs, self.warmup_epochs, self.batch_size, self.blr, self.weight_decay
        )
        object.__setattr__(self, "warmup_epochs", clip_warmup(self.warmup_epochs, self.epochs))


class ClassifierModule(pl.LightningModule, ABC):
    """Base for the augmented linear probe and fine-tuning.

    Subclasses implement :meth:`logits`, ``training_step`` and :meth:`build_optimizer`.

    Args:
        train_dataset: Yields ``(image tensor, label)``.
        val_dataset: Yields ``(image tensor, label)``.
        budget: Epochs, schedule, batch size and learning rate.
        num_workers: Loader workers per process.
        even_batches: Round the per-process batch down to an even number (mixup pairs).
    """

    def __init__(
        self,
        train_dataset: Dataset,
        val_dataset: Dataset,
        budget: Budget,
        num_workers: int = 0,
        even_batches: bool = False,
    ) -> None:
        super().__init__()
        if len(train_dataset) < budget.batch_size:
            raise ValueError(
                f"batch_size={budget.batch_size} is larger than the training set "
                f"({len(train_dataset)} samples); the last partial batch is dropped"
            )
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.budget = budget
        self.num_workers = num_workers
        self.even_batches = even_batches
        self.history: list[dict[str, float]] = []
        self._tally = Tally()

    # ---- data -----------------------------------------------------------------------------
    @property
    def per_device_batch_size(self) -> int:
        """Batch size of one process: the global batch over the world size."""
        world = self.trainer.world_size if self._trainer is not None else 1
        size = max(1, self.budget.batch_size // world)
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
        return self.budget.blr * self.effective_batch_size / 256

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
        budget = self.budget
        scheduler = warmup_cosine_scheduler(
            optimizer,
            steps_per_epoch=self.trainer.estimated_stepping_batches / budget.epochs,
            epochs=budget.epochs,
            warmup_epochs=budget.warmup_epochs,
            min_lr_ratio=budget.min_lr / self.peak_lr if self.peak_lr > 0 else 0.0,
        )
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ---- validation -----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        """Reset the accuracy counters."""
        self._tally = Tally()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Count top-1 / top-5 hits and keep the predictions."""
        images, labels = batch[0], batch[1]
        self._tally.add(self.logits(images).float(), labels)

    def on_validation_epoch_end(self) -> None:
        """Reduce the counts over processes and record this epoch's accuracies."""
        if self.trainer.sanity_checking:
            return
        tally = self._tally
        counts = torch.tensor(
            [tally.seen, tally.hits[1], tally.hits[5]], dtype=torch.float64, device=self.device
        )
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        seen = max(float(counts[0]), 1.0)
        top1, top5 = float(counts[1]) / seen, float(counts[2]) / seen
        fitting = self.trainer.state.fn == TrainerFn.FITTING
        epoch = self.trainer.current_epoch + 1 if fitting else self.trainer.current_epoch
        self.history.append({"epoch": epoch, "top1": top1, "top5": top5})
        self.log_dict({"val_top1": top1, "val_top5": top5}, sync_dist=False, rank_zero_only=True)


@dataclass(frozen=True)
class FitOptions:
    """How the trained evaluations run their ``pytorch_lightning.Trainer``.

    Attributes:
        accelerator: ``"cpu"``, ``"gpu"`` or ``"auto"``.
        devices: Lightning devices.
        precision: ``"32"``, ``"bf16-mixed"``, ``"16-mixed"``.
        strategy: ``"auto"`` or ``"ddp"``.
        eval_every: Validate every this many epochs (always after the last).
        progress: Show Lightning's progress bar.
        trainer_kwargs: Extra ``Trainer`` arguments.
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    precision: str | int = "32"
    strategy: str = "auto"
    eval_every: int = 1
    progress: bool = False
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)


def check_training_options(
    epochs: int,
    warmup_epochs: float,
    batch_size: int,
    blr: float,
    weight_decay: float = 0.0,
) -> None:
    """Raise ``ValueError``, naming the option, unless the training budget makes sense.

    The check of every trained evaluation (cached and augmented probes, fine-tuning);
    recipes call it before any work starts.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if blr <= 0:
        raise ValueError(f"blr must be > 0, got {blr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


def fit_classifier(module: ClassifierModule, options: FitOptions, seed: int = 0) -> dict[str, Any]:
    """Train ``module`` with a real ``pytorch_lightning.Trainer`` and summarise its accuracy.

    Validation runs every ``options.eval_every`` epochs and always after the last one.

    Returns:
        ``{"top1", "top5"}`` of the final model, ``"best_top1"`` / ``"best_epoch"`` over the
        evaluated epochs (selected on the validation set, so optimistic), ``"last_top1"``,
        ``"epochs"``, ``"seconds"`` (wall time of training + evaluation), ``"history"``
        (one ``{"epoch", "top1", "top5"}`` per evaluation, epochs counted from 1) and
        ``"predictions"`` (the final model's top-1 class of each validation sample).
    """
    pl.seed_everything(seed, verbose=False)
    epochs = module.budget.epochs
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=options.accelerator,
        devices=options.devices,
        precision=options.precision,
        strategy=options.strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=options.progress,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=options.eval_every,
        **options.trainer_kwargs,
    )
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
    return summarize_history(module.history, epochs, seconds, module._tally.predictions)


def summarize_history(
    history: list[dict[str, float]], epochs: int, seconds: float, predictions: list[int]
) -> dict[str, Any]:
    """The result dict of an evaluation from its per-epoch accuracies.

    ``predictions`` are the final model's top-1 classes of the validation samples, in order
    (of this process's samples under DDP).
    """
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
        "predictions": predictions,
    }
