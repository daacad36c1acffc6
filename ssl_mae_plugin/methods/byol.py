"""BYOL as an SSL method, built from lightly's heads, loss, transform and EMA utilities.

The recipe depends on the backbone family. ConvNets: lightly's ImageNet ResNet-50
benchmark [1], which takes the settings of the BYOL reference code for 100 epochs [2]
(slightly different from the paper's 1000-epoch ones [0]): LARS with base learning rate
0.45 (``lr = 0.45 * batch_size / 256``), momentum 0.9, weight decay 1e-6, 10 warmup
epochs of 100. ViTs: BYOL publishes none of its own; we use MoCo v3's ViT setting [4]
(AdamW, weight decay 0.1, 40 of 300 epochs warmup) with the base learning rate chosen by
a small sweep (benchmarks/VIT_RECIPES.md). Both: teacher EMA momentum following a
cosine from 0.99 to 1 over all steps, projection and prediction MLPs 4096-256 with batch
norm, and the symmetrised loss ``2 - 2 cos`` per direction. Views come from lightly's
asymmetric ``BYOLTransform`` (blur 1.0 / 0.1, solarisation 0 / 0.2); for images of at
most 64 pixels the blur is off, as in lightly's CIFAR-10 benchmark [3].

- [0]: Bootstrap Your Own Latent, 2020, https://arxiv.org/abs/2006.07733
- [1]: lightly, benchmarks/imagenet/resnet50/byol.py,
  https://github.com/lightly-ai/lightly/blob/master/benchmarks/imagenet/resnet50/byol.py
- [2]: deepmind-research, byol/configs/byol.py,
  https://github.com/deepmind/deepmind-research/blob/master/byol/configs/byol.py
- [3]: lightly, docs/source/getting_started/benchmarks/cifar10_benchmark.py,
  https://github.com/lightly-ai/lightly
- [4]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3), 2021,
  https://arxiv.org/abs/2104.02057
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from torch import Tensor

from ssl_mae_plugin.backbones import CIFAR_STEM_MAX_SIZE
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.teacher import TeacherStudentMethod
from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE, Family, TrainingRecipe


def byol_transform(image_size: int, normalization: Normalization) -> Callable:
    """Lightly's asymmetric ``BYOLTransform`` (blur 1.0 / 0.1); no blur for small images."""
    small = image_size <= CIFAR_STEM_MAX_SIZE
    normalize = normalization.as_lightly()
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(
            input_size=image_size, gaussian_blur=0.0 if small else 1.0, normalize=normalize
        ),
        view_2_transform=BYOLView2Transform(
            input_size=image_size, gaussian_blur=0.0 if small else 0.1, normalize=normalize
        ),
    )


class BYOL(TeacherStudentMethod):
    """Bootstrap Your Own Latent [0]: an online network predicts an EMA teacher's projections.

    The teacher is updated before every step (see :class:`TeacherStudentMethod`).

    Args:
        hidden_dim: Hidden width of the projection and prediction MLPs (4096 [0]).
        output_dim: Projection width (256 [0]).
        momentum_start: Teacher EMA momentum at the first step.
        momentum_end: Teacher EMA momentum at the last step (cosine schedule in between).
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "byol"
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "convnet": TrainingRecipe(
            source="lightly's ResNet-50 benchmark, from the BYOL reference code",
            optimizer="lars",
            blr=0.45,
            weight_decay=1e-6,
            warmup_fraction=10 / 100,
        ),
        "vit": SWEPT_VIT_RECIPE,
    }

    def __init__(
        self,
        hidden_dim: int = 4096,
        output_dim: int = 256,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        **common: Any,
    ) -> None:
        super().__init__(momentum_start=momentum_start, momentum_end=momentum_end, **common)
        self.save_hyperparameters()
        self.backbone = self.build_backbone()
        self.projection_head = BYOLProjectionHead(
            input_dim=self.feature_dim, hidden_dim=hidden_dim, output_dim=output_dim
        )
        self.prediction_head = BYOLPredictionHead(
            input_dim=output_dim, hidden_dim=hidden_dim, output_dim=output_dim
        )
        self.init_teacher()
        self.criterion = NegativeCosineSimilarity()
        self.setup_online_probe()

    def default_transform(self, normalization: Normalization) -> Callable:
        """Lightly's asymmetric ``BYOLTransform``; no blur for small images."""
        return byol_transform(self.image_size, normalization)

    # -- loss ---------------------------------------------------------------------------------

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """Symmetrised ``2 - 2 cos(prediction of one view, teacher projection of the other)``."""
        features = [self.backbone(view) for view in views[:2]]  # 2 x [N, D]
        predictions = [self.prediction_head(self.projection_head(f)) for f in features]
        with torch.no_grad():
            targets = [
                self.teacher_projection_head(self.teacher_backbone(view)) for view in views[:2]
            ]
        # NegativeCosineSimilarity is -cos, so 2 - 2 cos = 2 + 2 * criterion
        loss = (2 + 2 * self.criterion(predictions[0], targets[1])) + (
            2 + 2 * self.criterion(predictions[1], targets[0])
        )
        return loss, features[0].detach()
