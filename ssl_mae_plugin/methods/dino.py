"""DINO as an SSL method, built from lightly's head, loss, multi-crop transform and utilities.

Hyperparameters follow the paper [0], its reference code [1] and lightly's benchmarks
[2, 3], per backbone family:

- ViTs (the paper's main setting, lightly's ViT benchmark [3]): AdamW with base learning
  rate 5e-4 (``lr = 5e-4 * batch_size / 256``), weight decay following a cosine from 0.04
  to 0.4, 10 warmup epochs of 100, crops scales (0.4, 1) global / (0.05, 0.4) local,
  stochastic depth 0.1 in the student (none in the teacher).
- ConvNets (ResNets): SGD with base learning rate 0.03, momentum 0.9 and constant weight
  decay 1e-4, global crop scale (0.14, 1) and local crop scale (0.05, 0.14), as the
  reference code recommends for ResNet-50 [1] and lightly's ResNet-50 benchmark uses
  [2] (that benchmark multiplies 0.03 by the batch size without dividing by 256; we
  keep the reference code's ``/ 256`` scaling).

Both: each parameter's gradient norm clipped to 3.0 (the reference code's default), a
3-layer projection MLP (hidden 2048, bottleneck 256) with a weight-normalised
last layer of ``output_dim`` = 65536 prototypes (smaller values suit small data), the
last layer frozen during the first epoch, teacher temperature warmed up linearly from
0.04 to 0.07 over 30 epochs [0], student temperature 0.1, centre momentum 0.9, teacher
EMA momentum following a cosine from 0.996 to 1, and multi-crop: 2 global crops at the
image size plus ``n_local_views`` local crops (6, as lightly's ``DINOTransform``). For
images of at most 64 pixels the Gaussian blur is off, as in lightly's CIFAR-10
benchmark [4].

Local crops and ViTs: the local crop size is the paper's 96/224 of the image size,
rounded to a whole number of patches for ViTs (32 px with patch 8 -> 16 px; 224 px with
patch 16 -> 96 px). The ViT is built with timm's ``dynamic_img_size=True``, which
resamples the position table to the grid of each input (as lightly's ViT benchmark
does [3]); at the pretraining image size the table is used unchanged, so features,
checkpoints and evaluation are those of an ordinary ViT of that size.

- [0]: Emerging Properties in Self-Supervised Vision Transformers (DINO), 2021,
  https://arxiv.org/abs/2104.14294
- [1]: facebookresearch/dino, main_dino.py and README,
  https://github.com/facebookresearch/dino
- [2]: lightly, benchmarks/imagenet/resnet50/dino.py,
  https://github.com/lightly-ai/lightly/blob/master/benchmarks/imagenet/resnet50/dino.py
- [3]: lightly, benchmarks/imagenet/vitb16/dino.py,
  https://github.com/lightly-ai/lightly/blob/master/benchmarks/imagenet/vitb16/dino.py
- [4]: lightly, docs/source/getting_started/benchmarks/cifar10_benchmark.py,
  https://github.com/lightly-ai/lightly
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from lightly.loss import DINOLoss
from lightly.models.modules.heads import DINOProjectionHead
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from ssl_mae_plugin.backbones import CIFAR_STEM_MAX_SIZE, build_backbone, is_convnet, is_vit
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.methods.teacher import TeacherStudentMethod
from ssl_mae_plugin.methods.training_recipe import Family, TrainingRecipe


def scaled_local_crop_size(image_size: int, patch_size: int | None = None) -> int:
    """DINO's local crop size (96 of 224) scaled to ``image_size``.

    At least 8 pixels; for ViTs (``patch_size`` given) the nearest whole number of
    patches, at least one, so that the crop tiles into patches exactly.
    """
    size = max(image_size * 96 // 224, 8)
    if patch_size:
        size = max(round(size / patch_size), 1) * patch_size
    return min(size, image_size)


class DINO(TeacherStudentMethod):
    """Self-distillation with no labels [0]: a student matches an EMA teacher across crops.

    The teacher (``teacher_backbone``, ``teacher_projection_head``) sees the two global
    crops, the student all crops; the teacher starts as a copy of the student, never
    requires gradients (so it is in no optimizer group) and is moved towards the student
    before every training step.

    Args:
        backbone: Backbone name; ConvNets get the ResNet recipe (SGD), others AdamW.
        hidden_dim: Hidden width of the projection MLP.
        bottleneck_dim: Width before the weight-normalised last layer.
        output_dim: Number of prototypes ``K`` (65536 [0]; e.g. 1024-4096 on small data).
        batch_norm: Batch norm in the projection MLP (off in the reference code).
        norm_last_layer: Fix the norm of the last layer's weights (more stable [1]).
        freeze_last_layer: Epochs during which the last layer is not updated.
        warmup_teacher_temp: Teacher temperature at the first epoch.
        teacher_temp: Teacher temperature after the warmup.
        warmup_teacher_temp_epochs: Epochs of linear teacher temperature warmup.
        student_temp: Student temperature.
        center_momentum: EMA momentum of the teacher output centre.
        momentum_start: Teacher EMA momentum at the first step.
        momentum_end: Teacher EMA momentum at the last step (cosine schedule in between).
        weight_decay_end: Weight decay at the last step (cosine from ``weight_decay``);
            ``None``: 0.4 for ViTs [0], constant for ConvNets [1].
        n_local_views: Number of local crops.
        local_crop_size: Local crop size; ``None``: see :func:`scaled_local_crop_size`.
        drop_path_rate: Stochastic depth of a ViT student (0.1 [1]); the teacher has none.
        clip_grad: Per-parameter gradient norm clip (3.0 [1]); ``None`` or 0 disables it.
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "dino"
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "vit": TrainingRecipe(
            source="DINO paper, Sec. 4 and App.; main_dino.py defaults",
            optimizer="adamw",
            blr=5e-4,
            weight_decay=0.04,
            warmup_fraction=10 / 100,
            notes="wd cosine to 0.4, per-parameter gradient clip 3.0, student drop path 0.1",
        ),
        "convnet": TrainingRecipe(
            source="facebookresearch/dino README, ResNet-50 command",
            optimizer="sgd",
            blr=0.03,
            weight_decay=1e-4,
            warmup_fraction=10 / 100,
            notes="constant wd, per-parameter gradient clip 3.0, crops 0.14-1 / 0.05-0.14",
        ),
    }

    def __init__(
        self,
        backbone: str = "vit_tiny",
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        output_dim: int = 65536,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        freeze_last_layer: int = 1,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_teacher_temp_epochs: int = 30,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        momentum_start: float = 0.996,
        momentum_end: float = 1.0,
        weight_decay_end: float | None = None,
        n_local_views: int = 6,
        local_crop_size: int | None = None,
        drop_path_rate: float = 0.1,
        clip_grad: float | None = 3.0,
        **common: Any,
    ) -> None:
        super().__init__(
            backbone=backbone, momentum_start=momentum_start, momentum_end=momentum_end, **common
        )
        self.save_hyperparameters()
        convnet = is_convnet(backbone)
        if local_crop_size is not None and is_vit(backbone) and local_crop_size % self.patch_size:
            raise ValueError(
                f"local_crop_size={local_crop_size} is not divisible by patch_size="
                f"{self.patch_size}"
            )
        self.n_local_views = n_local_views
        self.local_crop_size = local_crop_size
        self.drop_path_rate = drop_path_rate
        self.clip_grad = clip_grad
        if weight_decay_end is None:
            weight_decay_end = self.weight_decay if convnet else 0.4
        self.weight_decay_end = weight_decay_end

        self.backbone = self.build_backbone(drop_path_rate)
        head = {
            "input_dim": self.feature_dim,
            "hidden_dim": hidden_dim,
            "bottleneck_dim": bottleneck_dim,
            "output_dim": output_dim,
            "batch_norm": batch_norm,
            "norm_last_layer": norm_last_layer,
        }
        self.projection_head = DINOProjectionHead(**head, freeze_last_layer=freeze_last_layer)
        # A weight-normalised layer cannot be deep-copied; the teacher has no stochastic
        # depth [1]: both are built anew and given the student's weights.
        self.init_teacher(DINOProjectionHead(**head), teacher_backbone=self.build_backbone(0.0))
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=warmup_teacher_temp,
            teacher_temp=teacher_temp,
            warmup_teacher_temp_epochs=warmup_teacher_temp_epochs,
            student_temp=student_temp,
            center_momentum=center_momentum,
        )
        self.setup_online_probe()

    def default_transform(self, normalization: Normalization) -> Callable:
        """The multi-crop ``DINOTransform``: 2 global crops + ``n_local_views`` local crops."""
        image_size, convnet = self.image_size, is_convnet(self.backbone_name)
        local_crop_size = self.local_crop_size or scaled_local_crop_size(
            image_size, None if convnet else self.patch_size
        )
        small = image_size <= CIFAR_STEM_MAX_SIZE
        return DINOTransform(
            global_crop_size=image_size,
            global_crop_scale=(0.14, 1.0) if convnet else (0.4, 1.0),
            local_crop_size=local_crop_size,
            local_crop_scale=(0.05, 0.14) if convnet else (0.05, 0.4),
            n_local_views=self.n_local_views,
            gaussian_blur=(0.0, 0.0, 0.0) if small else (1.0, 0.1, 0.5),
            normalize=normalization.as_lightly(),
        )

    def build_backbone(self, drop_path_rate: float = 0.0) -> nn.Module:
        """The named backbone; a ViT with stochastic depth ``drop_path_rate``.

        The ViT resamples its position table for the smaller local crops; its drop path
        rate rises linearly over the blocks (timm's rule).
        """
        if is_vit(self.backbone_name):
            return build_backbone(
                self.backbone_name,
                self.image_size,
                self.patch_size,
                dynamic_img_size=True,
                drop_path_rate=drop_path_rate,
                **self.vit_overrides,
            )
        return super().build_backbone()

    # -- loss and optimisation ------------------------------------------------------------------

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """Cross-entropy between teacher (global crops) and student (all crops) outputs."""
        global_views = torch.cat(views[:2])  # [2N, C, H, W]
        with torch.no_grad():
            teacher_out = self.teacher_projection_head(self.teacher_backbone(global_views))
        student_features = self.backbone(global_views)  # [2N, D]
        student_out = list(self.projection_head(student_features).chunk(2))
        if len(views) > 2:  # local crops share one size: one pass for all of them
            local_out = self.projection_head(self.backbone(torch.cat(views[2:])))
            student_out.extend(local_out.chunk(len(views) - 2))
        loss = self.criterion(
            teacher_out=list(teacher_out.chunk(2)),
            student_out=student_out,
            epoch=self.current_epoch,
        )
        return loss, student_features.chunk(2)[0].detach()

    def optimizer_parameters(self) -> list[dict[str, Any]]:
        """The base groups; the weight-decayed one is marked for the decay schedule."""
        groups = super().optimizer_parameters()
        for group in groups:
            group["scheduled_weight_decay"] = group["weight_decay"] > 0
        return groups

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip each parameter's gradient norm to ``clip_grad``, as DINO's reference code [1].

        Per parameter, not the global norm: ``g *= clip / (||g|| + 1e-6)`` where that is
        below 1. Lightning calls this after unscaling 16-bit gradients.
        """
        if not self.clip_grad:
            return
        student = [*self.backbone.parameters(), *self.projection_head.parameters()]
        grads = [p.grad for p in student if p.grad is not None]
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        scales = (self.clip_grad / (norms + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(grads, list(scales.unbind()))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Keep the last layer fixed in the first epoch(s); follow the weight decay schedule."""
        super().on_before_optimizer_step(optimizer)
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)
        weight_decay = cosine_schedule(
            step=self.global_step,
            max_steps=int(self.trainer.estimated_stepping_batches),
            start_value=self.weight_decay,
            end_value=self.weight_decay_end,
        )
        for group in optimizer.param_groups:
            if group.get("scheduled_weight_decay"):
                group["weight_decay"] = weight_decay
