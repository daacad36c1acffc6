"""Linear probing: on cached features (fast) or the paper's augmented protocol (Lightning).

Both use the MAE head: ``BatchNorm1d(D, affine=False, eps=1e-6)`` then ``Linear(D, C)``
with weight ``trunc_normal(std=0.01)`` and zero bias [0]. The normalisation without affine
parameters keeps the classifier linear while making the optimisation insensitive to the
very different feature scales of different models.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), 2021,
  https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ssl_mae_plugin.data import IMAGENET_NORM, Normalization, eval_transform
from ssl_mae_plugin.evaluation.classifier import (
    Budget,
    ClassifierModule,
    FitOptions,
    fit_classifier,
    summarize_history,
)
from ssl_mae_plugin.evaluation.features import frozen_eval
from ssl_mae_plugin.evaluation.metrics import Tally
from ssl_mae_plugin.evaluation.transforms import (
    TransformedDataset,
    probe_train_transform,
)
from ssl_mae_plugin.lars import LARS
from ssl_mae_plugin.schedules import warmup_cosine_lr

PROBE_OPTIMIZERS = ("sgd", "lars", "adamw")


class LinearHead(nn.Sequential):
    """``BatchNorm1d(affine=False, eps=1e-6)`` + ``Linear``, initialised as the MAE probe [0].

    Args:
        dim: Feature dimension ``D``.
        num_classes: Classes ``C``.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(
            nn.BatchNorm1d(dim, affine=False, eps=1e-6),
            nn.Linear(dim, num_classes),
        )
        nn.init.trunc_normal_(self[1].weight, std=0.01)
        nn.init.zeros_(self[1].bias)


def _make_optimizer(
    name: str, params: Any, lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be one of {PROBE_OPTIMIZERS}, got {name!r}")


@torch.no_grad()
def _evaluate(head: nn.Module, features: torch.Tensor, labels: torch.Tensor, chunk: int) -> dict:
    head.eval()
    tally = Tally()
    for start in range(0, len(features), chunk):
        tally.add(head(features[start : start + chunk]), labels[start : start + chunk])
    return tally.result()


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 100,
    batch_size: int = 1024,
    optimizer: str = "sgd",
    blr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_epochs: float = 5,
    eval_every: int = 1,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the MAE probe head on cached features; no data loader, no Lightning.

    The features go to ``device`` once; each epoch draws a ``randperm`` and takes
    ``batch_size`` slices of it (the last partial batch is dropped when there is more than
    one batch); the learning rate ``blr * batch_size / 256`` follows a per-step linear
    warmup and half-cycle cosine to 0.

    The default optimizer is SGD with momentum 0.9 at batch 1024: on CIFAR-10-scale
    features (50,000 x 192, 10 classes) it matches a converged logistic regression within
    0.2 points in 100 epochs (see ``benchmarks/EVAL_SPEED.md``). ``optimizer="lars"`` is
    the paper's choice [0, 1], tuned for ImageNet at batch 16,384; with the trust
    coefficient 0.001 a weight matrix moves by ``lr * 1e-3`` of its norm per step (before
    momentum), which leaves the head under-trained at CIFAR scale (16 points below in that
    benchmark).

    Args:
        train_features: ``[N, D]`` training features.
        train_labels: ``[N]`` integer labels.
        val_features: ``[M, D]`` validation features.
        val_labels: ``[M]`` integer labels.
        num_classes: Classes; ``max label + 1`` when omitted.
        epochs: Epochs, warmup included.
        batch_size: Samples per step (capped at ``N``).
        optimizer: ``"sgd"``, ``"lars"`` (trust ratio on the weight) or ``"adamw"``.
        blr: Base learning rate, ``lr = blr * batch_size / 256``.
        momentum: Momentum of SGD / LARS.
        weight_decay: Weight decay (0 as the paper's probe).
        warmup_epochs: Linear warmup epochs.
        eval_every: Validate every this many epochs (and always after the last one).
        device: Where to train; the features' device when omitted.
        seed: Seed of the head's initialisation and the batch order.

    Returns:
        ``{"top1", "top5"}`` of the final head, ``"best_top1"`` and ``"best_epoch"``
        (epochs from 1; chosen on the validation set, so optimistic), ``"last_top1"``,
        ``"epochs"``, ``"seconds"``, ``"history"`` and ``"optimizer"``. Accuracies are
        fractions in ``[0, 1]``.
    """
    if train_features.ndim != 2 or val_features.ndim != 2:
        raise ValueError("features must be 2-D [N, D]")
    if len(train_features) != len(train_labels) or len(val_features) != len(val_labels):
        raise ValueError("features and labels must have the same number of rows")
    warmup_epochs = Budget(epochs, warmup_epochs, batch_size, blr, weight_decay).warmup_epochs
    if optimizer not in PROBE_OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {PROBE_OPTIMIZERS}, got {optimizer!r}")
    if num_classes is None:
        num_classes = int(max(int(train_labels.max()), int(val_labels.max()))) + 1
    device = torch.device(device) if device is not None else train_features.device
    generator = torch.Generator().manual_seed(seed)
    start_time = time.perf_counter()

    x_train = train_features.to(device, torch.float32)
    y_train = train_labels.to(device, torch.int64)
    x_val = val_features.to(device, torch.float32)
    y_val = val_labels.to(device, torch.int64)
    num_train, dim = x_train.shape
    batch_size = min(batch_size, num_train)
    steps_per_epoch = max(num_train // batch_size, 1)
    peak_lr = blr * batch_size / 256

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = LinearHead(dim, num_classes).to(device)
    opt = _make_optimizer(optimizer, head.parameters(), peak_lr, weight_decay, momentum)
    history = []
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(num_train, generator=generator).to(device)
        for step in range(steps_per_epoch):
            lr = warmup_cosine_lr(epoch + step / steps_per_epoch, peak_lr, epochs, warmup_epochs)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(head(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if (epoch + 1) % eval_every == 0 or epoch + 1 == epochs:
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"linear probe loss is {loss.item()} at epoch {epoch + 1}")
            evaluation = _evaluate(head, x_val, y_val, chunk=65536)
            predictions = evaluation.pop("predictions")
            history.append({"epoch": epoch + 1, **evaluation})
    seconds = time.perf_counter() - start_time
    result = summarize_history(history, epochs, seconds, predictions)
    result["optimizer"] = optimizer
    return result


class AugmentedLinearProbe(ClassifierModule):
    """The MAE linear probe [0] as a LightningModule: frozen backbone, trained BN + Linear.

    The backbone stays in eval mode whatever the trainer does (``train()`` is overridden)
    and its features are computed under ``no_grad``. Optimizer: LARS (momentum 0.9, trust
    coefficient 0.001, trust ratio on the weight even at weight decay 0) at
    ``lr = blr * batch / 256``, warmup then per-step cosine.

    Args:
        backbone: Module with ``forward_features(images) -> [N, D]`` (cls token for MAE).
        feature_dim: ``D``.
        num_classes: ``C``.
        train_dataset: Yields ``(augmented image tensor, label)``.
        val_dataset: Yields ``(image tensor, label)``.
        budget: Epochs, schedule, batch size, learning rate and LARS weight decay.
        num_workers: Loader workers per process.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        train_dataset: Dataset,
        val_dataset: Dataset,
        budget: Budget,
        num_workers: int = 0,
    ) -> None:
        super().__init__(train_dataset, val_dataset, budget, num_workers)
        self.backbone = backbone
        self.head = LinearHead(feature_dim, num_classes)

    def train(self, mode: bool = True) -> AugmentedLinearProbe:
        """Set the head's mode; the backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def on_train_epoch_start(self) -> None:
        """Re-assert the frozen backbone's eval mode (loops may restore saved modes)."""
        self.backbone.eval()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` scores of the head on the backbone's frozen features."""
        with torch.no_grad():
            features = self.backbone.forward_features(images)  # [N, D]
        return self.head(features.detach())

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Cross-entropy of the head on one augmented batch."""
        images, labels = batch[0], batch[1]
        loss = F.cross_entropy(self.logits(images), labels)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def build_optimizer(self) -> torch.optim.Optimizer:
        """LARS over the head only (BN has no parameters; the bias gets no trust ratio)."""
        return LARS(self.head.parameters(), lr=self.peak_lr, weight_decay=self.budget.weight_decay)


@torch.no_grad()
def _feature_dim(backbone: nn.Module, dataset: Dataset) -> int:
    image = dataset[0][0]
    device = next(backbone.parameters()).device
    with frozen_eval(backbone):
        out = backbone.forward_features(image[None].to(device))
    if out.ndim != 2:
        raise ValueError(f"backbone.forward_features must return [N, D], got {tuple(out.shape)}")
    return int(out.shape[1])


def augmented_linear_probe(
    backbone: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    image_size: int = 224,
    normalization: Normalization = IMAGENET_NORM,
    epochs: int = 90,
    warmup_epochs: float = 10,
    batch_size: int = 16384,
    blr: float = 0.1,
    weight_decay: float = 0.0,
    crop_pct: float | None = None,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
    num_workers: int = 0,
    fit: FitOptions | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The MAE paper's linear probe end to end, trained by a ``pytorch_lightning.Trainer`` [0].

    Every step augments raw images (bicubic RandomResizedCrop + flip), runs the frozen
    backbone in eval mode under ``no_grad`` and trains ``BatchNorm1d(affine=False)`` +
    ``Linear`` with LARS (momentum 0.9, wd 0, ``lr = blr * batch / 256``), warmup then
    per-step cosine. Validation uses Resize(``image_size / crop_pct``) + CenterCrop. The
    paper's setting is batch 16,384 and 90 epochs of which 10 are warmup (facebookresearch/mae
    ``main_linprobe.py``: ``--epochs 90``, ``--warmup_epochs 10`` inside them).

    The backbone is not changed: its parameters' ``requires_grad`` flags, every
    submodule's train/eval mode and its device (Lightning moves modules to the CPU at
    teardown) are restored afterwards.

    Args:
        backbone: Module with ``forward_features(images) -> [N, D]``; for an MAE use
            ``PooledBackbone(mae, pool="cls")`` (the paper's feature).
        train_dataset: Raw ``(image, label)`` pairs (PIL, or tensors in [0, 1]), no transform.
        val_dataset: Same for validation.
        num_classes: ``C``.
        image_size: Network input size.
        normalization: Input normalisation.
        epochs: Epochs, warmup included.
        warmup_epochs: Warmup epochs.
        batch_size: Global batch size; the training set must hold at least one batch.
        blr: Base learning rate.
        weight_decay: LARS weight decay.
        crop_pct: Centre-crop fraction at evaluation (see ``data.eval_transform``).
        train_transform: Replaces the default training transform.
        val_transform: Replaces the default evaluation transform.
        num_workers: Loader workers per process.
        fit: How the Trainer runs (device, precision, strategy, ...).
        seed: Seed for the head and the data order.

    Returns:
        ``{"top1", "top5", "best_top1", "best_epoch", "last_top1", "epochs", "seconds",
        "history"}``, accuracies as fractions in ``[0, 1]``.
    """
    budget = Budget(epochs, warmup_epochs, batch_size, blr, weight_decay)
    train = TransformedDataset(
        train_dataset, train_transform or probe_train_transform(image_size, normalization)
    )
    val = TransformedDataset(
        val_dataset, val_transform or eval_transform(image_size, normalization, crop_pct)
    )
    grad_flags = [(p, p.requires_grad) for p in backbone.parameters()]
    first = next(backbone.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    with frozen_eval(backbone):
        try:
            backbone.requires_grad_(False)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                module = AugmentedLinearProbe(
                    backbone,
                    feature_dim=_feature_dim(backbone, val),
                    num_classes=num_classes,
                    train_dataset=train,
                    val_dataset=val,
                    budget=budget,
                    num_workers=num_workers,
                )
            return fit_classifier(module, options=fit or FitOptions(), seed=seed)
        finally:
            backbone.to(device)
            for param, flag in grad_flags:
                param.requires_grad_(flag)
