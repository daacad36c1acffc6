"""MoCo v3 as an SSL method, built from lightly's heads, transforms and utilities.

Hyperparameters follow the paper [0] and its reference code [1], per backbone family:

- ViTs: AdamW with base learning rate 1.5e-4 (``lr = 1.5e-4 * batch_size / 256``), weight
  decay 0.1, 40 warmup epochs of 300 (fraction 0.133), temperature 0.2, a 3-layer
  projection MLP, and the patch projection frozen at its random initialisation
  ("stop-grad-conv1", the paper's stability trick).
- ConvNets (ResNets): LARS with base learning rate 0.6, weight decay 1e-6, 10 warmup
  epochs of 100, temperature 1.0, a 2-layer projection MLP (the 100-epoch ResNet-50
  recipe of the reference code).

Both: hidden width 4096, output 256, batch norm in every layer of both MLPs (lightly's
``MoCoProjectionHead`` with ``batch_norm=True``; the reference code's last batch norm has
no affine parameters), a 2-layer prediction MLP, a symmetrised contrastive loss whose
negatives are the momentum encoder's keys of the other images of the global batch
(scaled by ``2 * temperature`` as the reference code), momentum encoder EMA following a
cosine from 0.99 to 1, and BYOL's asymmetric augmentations (lightly's ``BYOLTransform``,
crop scale from 0.08, the reference code's default) as the paper uses; for images of at
most 64 pixels the blur is off, as in lightly's CIFAR-10 benchmark [2].

lightly has no loss for MoCo v3's contrast of queries against in-batch momentum keys
(its ``NTXentLoss`` also uses the other views of the same branch as negatives), so
:func:`contrastive_loss` writes the paper's Algorithm 1 in a few lines, with lightly's
``gather`` for the keys of other devices.

- [0]: An Empirical Study of Training Self-Supervised Vision Transformers (MoCo v3),
  2021, https://arxiv.org/abs/2104.02057
- [1]: facebookresearch/moco-v3, main_moco.py, moco/builder.py and CONFIG.md,
  https://github.com/facebookresearch/moco-v3
- [2]: lightly, docs/source/getting_started/benchmarks/cifar10_benchmark.py,
  https://github.com/lightly-ai/lightly
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import MoCoProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils import dist
from torch import Tensor

from ssl_mae_plugin.backbones import is_convnet, is_vit
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.byol import byol_transform
from ssl_mae_plugin.methods.teacher import TeacherStudentMethod
from ssl_mae_plugin.methods.training_recipe import Family, TrainingRecipe


def contrastive_loss(query: Tensor, key: Tensor, temperature: float) -> Tensor:
    """MoCo v3's InfoNCE: each query's positive is its own key, the negatives all other keys.

    Args:
        query: ``[N, C]`` predictions of the online branch for one view.
        key: ``[N, C]`` momentum encoder projections of the other view (no gradient).
        temperature: Softmax temperature.

    Returns:
        The cross-entropy scaled by ``2 * temperature`` [1].
    """
    query = F.normalize(query, dim=1)
    key = F.normalize(key, dim=1)
    keys = torch.cat(dist.gather(key)) if dist.world_size() > 1 else key  # [N * devices, C]
    logits = query @ keys.T / temperature  # [N, N * devices]
    labels = torch.arange(len(query), device=query.device) + dist.rank() * len(query)
    return 2 * temperature * F.cross_entropy(logits, labels)


class MoCoV3(TeacherStudentMethod):
    """Momentum Contrast v3 [0]: queries of one view against momentum keys of the other.

    The momentum encoder (``teacher_backbone``, ``teacher_projection_head``) starts as a
    copy of the online networks, never requires gradients (so it is in no optimizer
    group) and is moved towards them before every training step.

    Args:
        backbone: Backbone name; ConvNets get the ResNet recipe (LARS), others AdamW.
        hidden_dim: Hidden width of the projection and prediction MLPs.
        output_dim: Width of the projections.
        temperature: Contrastive temperature; ``None``: 0.2 for ViTs, 1.0 for ConvNets.
        momentum_start: EMA momentum at the first step.
        momentum_end: EMA momentum at the last step (cosine schedule in between).
        freeze_patch_embed: Keep a ViT's patch projection at its random initialisation.
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "mocov3"
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "vit": TrainingRecipe(
            source="MoCo v3 paper, Sec. 4; moco-v3 CONFIG.md",
            optimizer="adamw",
            blr=1.5e-4,
            weight_decay=0.1,
            warmup_fraction=40 / 300,
            notes="temperature 0.2, patch projection frozen at its init, 3-layer projector",
        ),
        "convnet": TrainingRecipe(
            source="moco-v3 CONFIG.md, 100-epoch ResNet-50",
            optimizer="lars",
            blr=0.6,
            weight_decay=1e-6,
            warmup_fraction=10 / 100,
            notes="temperature 1.0, 2-layer projector",
        ),
    }

    def __init__(
        self,
        backbone: str = "vit_tiny",
        hidden_dim: int = 4096,
        output_dim: int = 256,
        temperature: float | None = None,
        momentum_start: float = 0.99,
        momentum_end: float = 1.0,
        freeze_patch_embed: bool = True,
        **common: Any,
    ) -> None:
        super().__init__(
            backbone=backbone, momentum_start=momentum_start, momentum_end=momentum_end, **common
        )
        self.save_hyperparameters()
        convnet = is_convnet(backbone)
        self.temperature = (1.0 if convnet else 0.2) if temperature is None else temperature

        self.backbone = self.build_backbone()
        if freeze_patch_embed and is_vit(backbone):
            deactivate_requires_grad(self.backbone.patch_embed)
        self.projection_head = MoCoProjectionHead(
            input_dim=self.feature_dim,
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            num_layers=2 if convnet else 3,
            batch_norm=True,
        )
        self.prediction_head = MoCoProjectionHead(
            input_dim=output_dim,
            hidden_dim=hidden_dim,
            output_dim=output_dim,
            num_layers=2,
            batch_norm=True,
        )
        self.init_teacher()
        self.setup_online_probe()

    def default_transform(self, normalization: Normalization) -> Callable:
        """BYOL's asymmetric augmentations (lightly's ``BYOLTransform``) [0]."""
        return byol_transform(self.image_size, normalization)

    # -- loss ---------------------------------------------------------------------------------

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """``ctr(q1, k2) + ctr(q2, k1)`` (the paper's Algorithm 1)."""
        features = [self.backbone(view) for view in views[:2]]  # 2 x [N, D]
        queries = [self.prediction_head(self.projection_head(f)) for f in features]
        with torch.no_grad():
            keys = [self.teacher_projection_head(self.teacher_backbone(view)) for view in views[:2]]
        loss = contrastive_loss(queries[0], keys[1], self.temperature) + contrastive_loss(
            queries[1], keys[0], self.temperature
        )
        return loss, features[0].detach()
