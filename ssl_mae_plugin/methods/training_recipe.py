"""Published training recipes per backbone family: optimizer, learning rate, decay, warmup.

Each method declares one :class:`TrainingRecipe` per family it supports (ViTs, ConvNets),
citing its source; the report prints them beside the rows.

- [1]: Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour, 2017,
  https://arxiv.org/abs/1706.02677 (linear lr scaling and warmup)
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

from ssl_mae_plugin.backbones import is_convnet

Optimizer = Literal["adamw", "lars", "sgd"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)


Family = Literal["vit", "convnet"]
FAMILY_NAMES: dict[str, str] = {"vit": "ViTs", "convnet": "ConvNets (ResNets)"}
OPTIMIZER_NAMES = {"adamw": "AdamW", "lars": "LARS", "sgd": "SGD"}


def family_of(backbone: str) -> Family:
    """The recipe family of a backbone name: ``convnet`` for ResNets and kin, else ``vit``."""
    return "convnet" if is_convnet(backbone) else "vit"


@dataclass(frozen=True)
class TrainingRecipe:
    """How a method pretrains one backbone family, as a published source does it.

    Attributes:
        source: Where the numbers come from (paper section, reference code, config file).
        optimizer: ``adamw``, ``lars`` or ``sgd``.
        blr: Base learning rate (see ``lr_scaling``).
        lr_scaling: ``linear``: ``lr = blr * batch_size / 256`` [1]; ``sqrt``:
            ``lr = blr * sqrt(batch_size)`` (SimCLR's rule for small batches).
        weight_decay: Decoupled (AdamW) or L2 (LARS, SGD) weight decay.
        betas: AdamW betas.
        momentum: LARS / SGD momentum.
        warmup_fraction: Warmup length as a fraction of the epochs when the recipe does
            not give ``warmup_epochs`` (MAE: 40 of 800 = 0.05).
        notes: What else of the recipe the method's own arguments carry, in words.
    """

    source: str
    optimizer: Optimizer = "adamw"
    blr: float = 1.5e-4
    lr_scaling: Literal["linear", "sqrt"] = "linear"
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    notes: str = ""

    def peak_lr(self, blr: float, batch_size: int) -> float:
        """The learning rate of ``blr`` at a global batch under this recipe's scaling rule."""
        if self.lr_scaling == "sqrt":
            return blr * math.sqrt(batch_size)
        return blr * batch_size / 256

    def describe(self) -> str:
        """One line: optimizer, learning rate rule, weight decay, warmup, source."""
        rule = "sqrt(batch)" if self.lr_scaling == "sqrt" else "batch/256"
        optimizer = OPTIMIZER_NAMES[self.optimizer]
        if self.optimizer == "adamw":
            optimizer += f" (betas {self.betas[0]:g}, {self.betas[1]:g})"
        else:
            optimizer += f" (momentum {self.momentum})"
        notes = f"; {self.notes}" if self.notes else ""
        return (
            f"{optimizer}, lr = {self.blr:g} x {rule}, wd {self.weight_decay:g}, warmup "
            f"{100 * self.warmup_fraction:.3g} % of the epochs{notes} [{self.source}]"
        )


# The ViT recipe of the methods that publish none of their own (SimCLR, BYOL, VICReg):
# MoCo v3's ViT setting (MoCo v3 paper, Sec. 4: AdamW, weight decay 0.1, 40 of 300 epochs
# warmup) with the base learning rate chosen by our sweep (benchmarks/VIT_RECIPES.md).
SWEPT_VIT_RECIPE = TrainingRecipe(
    source="MoCo v3's ViT setting; lr from our sweep, benchmarks/VIT_RECIPES.md",
    optimizer="adamw",
    blr=1.5e-3,
    weight_decay=0.1,
    warmup_fraction=40 / 300,
)
