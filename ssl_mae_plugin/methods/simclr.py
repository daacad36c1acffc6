"""SimCLR as an SSL method, built from lightly's head, loss and transform.

The recipe depends on the backbone family:

- ConvNets: lightly's ImageNet ResNet-50 benchmark [1]: LARS with momentum 0.9 and
  ``lr = 0.075 * sqrt(batch_size)`` (the square-root scaling the paper recommends for
  batches up to 2048 and short schedules, its App. B.1), weight decay 1e-6, 10 warmup
  epochs of 100.
- ViTs: SimCLR publishes none of its own; MoCo v3 [3] trains ViTs (its own and its
  contrastive baselines) with AdamW. We use MoCo v3's ViT setting (weight decay 0.1, 40
  of 300 epochs warmup) with the base learning rate chosen by a small sweep
  (benchmarks/VIT_RECIPES.md).

Both: a 2-layer projection head whose hidden layer is as wide as the backbone features
(2048-2048-128 for ResNet-50) and NT-Xent with temperature 0.1, negatives gathered from
all devices. For images of at
most 64 pixels the Gaussian blur is off, as in the paper's CIFAR-10 setup (Appendix B.9)
and lightly's CIFAR-10 benchmark [2], and the colour jitter strength is 0.5 (B.9).

- [0]: SimCLR, 2020, https://arxiv.org/abs/2002.05709
- [1]: lightly, benchmarks/imagenet/resnet50/simclr.py,
  https://github.com/lightly-ai/lightly/blob/master/benchmarks/imagenet/resnet50/simclr.py
- [2]: lightly, docs/source/getting_started/benchmarks/cifar10_benchmark.py,
  https://github.com/lightly-ai/lightly
- [3]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), 2021,
  https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import Tensor

from ssl_mae_plugin.backbones import CIFAR_STEM_MAX_SIZE
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE, Family, TrainingRecipe


class SimCLR(SSLMethod):
    """A Simple Framework for Contrastive Learning of Visual Representations [0].

    Args:
        hidden_dim: Width of the projection head's hidden layer; the backbone's feature
            width when ``None`` (as the paper: 2048 for ResNet-50).
        output_dim: Width of the projection (128 in the paper).
        temperature: NT-Xent temperature (0.1 for LARS with large batches [0]).
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "simclr"
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "convnet": TrainingRecipe(
            source="lightly's ResNet-50 benchmark; SimCLR App. B.1",
            optimizer="lars",
            blr=0.075,
            lr_scaling="sqrt",
            weight_decay=1e-6,
            warmup_fraction=10 / 100,
        ),
        "vit": SWEPT_VIT_RECIPE,
    }

    def __init__(
        self,
        hidden_dim: int | None = None,
        output_dim: int = 128,
        temperature: float = 0.1,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.save_hyperparameters()
        self.backbone = self.build_backbone()
        width = self.feature_dim
        self.projection_head = SimCLRProjectionHead(
            input_dim=width, hidden_dim=hidden_dim or width, output_dim=output_dim
        )
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self.setup_online_probe()

    def default_transform(self, normalization: Normalization) -> Callable:
        """Lightly's ``SimCLRTransform``; no blur and jitter strength 0.5 for small images."""
        image_size = self.image_size
        small = image_size <= CIFAR_STEM_MAX_SIZE
        return SimCLRTransform(
            input_size=image_size,
            cj_strength=0.5 if small else 1.0,
            gaussian_blur=0.0 if small else 0.5,
            normalize=normalization.as_lightly(),
        )

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """NT-Xent between the projections of the two views (one backbone pass for both)."""
        features = self.backbone(torch.cat(views[:2]))  # [2N, D]
        z0, z1 = self.projection_head(features).chunk(2)  # 2 x [N, output_dim]
        loss = self.criterion(z0, z1)
        return loss, features.chunk(2)[0].detach()
