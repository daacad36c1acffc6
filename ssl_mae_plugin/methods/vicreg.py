"""VICReg as an SSL method, built from lightly's head, loss and transform.

The recipe depends on the backbone family. ConvNets: the paper [0] and lightly's
ImageNet ResNet-50 benchmark [1]: LARS with base learning rate 0.2 (``lr = 0.2 *
batch_size / 256``; the paper's App. C.4 raises it for small batches and 100 epochs),
momentum 0.9, weight decay 1e-6, 10 warmup epochs of 100. ViTs: there is no published
VICReg ViT recipe; we use MoCo v3's ViT setting [3] (AdamW, weight decay 0.1, 40 of 300
epochs warmup) with the base learning rate chosen by a small sweep
(benchmarks/VIT_RECIPES.md). Both: a 3-layer expander 8192-8192-8192 with batch norm,
and the loss weights invariance 25, variance 25, covariance 1, statistics gathered from
all devices. Views come from lightly's ``VICRegTransform``; for images of at most 64
pixels the blur is off, as in lightly's CIFAR-10 benchmark [2]. (The paper ends the
cosine schedule at 1% of the base rate; set ``min_lr`` for that.)

- [0]: VICReg: Variance-Invariance-Covariance Regularization, 2022,
  https://arxiv.org/abs/2105.04906
- [1]: lightly, benchmarks/imagenet/resnet50/vicreg.py,
  https://github.com/lightly-ai/lightly/blob/master/benchmarks/imagenet/resnet50/vicreg.py
- [2]: lightly, docs/source/getting_started/benchmarks/cifar10_benchmark.py,
  https://github.com/lightly-ai/lightly
- [3]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), 2021,
  https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.transforms import VICRegTransform
from torch import Tensor

from ssl_mae_plugin.backbones import CIFAR_STEM_MAX_SIZE
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE, Family, TrainingRecipe


class VICReg(SSLMethod):
    """Variance-Invariance-Covariance Regularization [0].

    Args:
        hidden_dim: Hidden width of the expander (8192 [0]).
        output_dim: Output width of the expander (8192 [0]).
        num_layers: Linear layers of the expander (3 [0]).
        lambda_param: Weight of the invariance term.
        mu_param: Weight of the variance term.
        nu_param: Weight of the covariance term.
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "vicreg"
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "convnet": TrainingRecipe(
            source="VICReg paper, Sec. 4.1 and App. C",
            optimizer="lars",
            blr=0.2,
            weight_decay=1e-6,
            warmup_fraction=10 / 100,
        ),
        "vit": SWEPT_VIT_RECIPE,
    }

    def __init__(
        self,
        hidden_dim: int = 8192,
        output_dim: int = 8192,
        num_layers: int = 3,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.save_hyperparameters()
        self.backbone = self.build_backbone()
        self.projection_head = VICRegProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            num_layers=num_layers,
        )
        self.criterion = VICRegLoss(
            lambda_param=lambda_param,
            mu_param=mu_param,
            nu_param=nu_param,
            gather_distributed=True,
        )
        self.setup_online_probe()

    def default_transform(self, normalization: Normalization) -> Callable:
        """The ``VICRegTransform``; no blur for small images."""
        image_size = self.image_size
        small = image_size <= CIFAR_STEM_MAX_SIZE
        return VICRegTransform(
            input_size=image_size,
            gaussian_blur=0.0 if small else 0.5,
            normalize=normalization.as_lightly(),
        )

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """VICReg loss between the expanded views (one backbone pass for both)."""
        features = self.backbone(torch.cat(views[:2]))  # [2N, D]
        z_a, z_b = self.projection_head(features).chunk(2)
        loss = self.criterion(z_a=z_a, z_b=z_b)
        return loss, features.chunk(2)[0].detach()
