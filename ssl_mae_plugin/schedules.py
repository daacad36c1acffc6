"""Linear warmup then half-cycle cosine, per step, as the MAE recipes.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import math
import warnings

import torch


def clip_warmup(warmup: float, total: float, unit: str = "epochs") -> float:
    """``warmup`` capped at the run length ``total``, with a warning when it is longer."""
    if warmup <= total:
        return warmup
    warnings.warn(
        f"warmup_epochs: a warmup of {warmup} {unit} is longer than the run ({total} {unit}); "
        "clipped to the run length",
        stacklevel=3,
    )
    return total


def warmup_cosine_lr(
    epoch: float, base_lr: float, epochs: float, warmup_epochs: float, min_lr: float = 0.0
) -> float:
    """The learning rate at a fractional ``epoch`` (``step / steps_per_epoch``).

    Linear from 0 to ``base_lr`` over ``warmup_epochs``, then a half cosine from ``base_lr``
    to ``min_lr`` at ``epochs``. ``epochs`` counts the warmup, as in facebookresearch/mae
    (``--epochs 90 --warmup_epochs 10`` is 90 epochs in all) [0].
    """
    if epoch < warmup_epochs:
        return base_lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1e-12)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: float,
    epochs: float,
    warmup_epochs: float,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` following :func:`warmup_cosine_lr`.

    Each group's initial ``lr`` is its peak (already multiplied by any ``lr_scale``, e.g. a
    layer-decay factor) and is multiplied by the schedule's factor; the floor is
    ``min_lr_ratio`` times the peak, so a ``min_lr`` is scaled per group as in
    facebookresearch/mae. The first step runs at lr 0.

    Args:
        optimizer: The optimizer whose groups hold their peak ``lr``.
        steps_per_epoch: Optimizer steps per epoch.
        epochs: Total epochs, warmup included.
        warmup_epochs: Warmup epochs.
        min_lr_ratio: ``min_lr / peak_lr``.

    Returns:
        The scheduler; call ``step()`` after every optimizer step.
    """

    def factor(step: int) -> float:
        return warmup_cosine_lr(step / steps_per_epoch, 1.0, epochs, warmup_epochs, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
