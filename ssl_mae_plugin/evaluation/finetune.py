"""End-to-end fine-tuning of a timm ViT (e.g. an MAE encoder) with the MAE recipe.

AdamW (0.9, 0.999), weight decay 0.05 except 1-D parameters and the position / class
tokens, ``lr = blr * batch / 256`` with layer-wise decay, drop path, mixup 0.8 + cutmix 1.0
with label smoothing 0.1, RandAugment m9-mstd0.5-inc1, random erasing 0.25, global average
pooling with ``fc_norm``, 5 warmup epochs then per-step cosine to ``min_lr`` [0].

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: BEiT: BERT Pre-Training of Image Transformers, 2021, https://arxiv.org/abs/2106.08254
- [2]: Deep Networks with Stochastic Depth, 2016, https://arxiv.org/abs/1603.09382
- [3]: mixup: Beyond Empirical Risk Minimization, 2017, https://arxiv.org/abs/1710.09412
- [4]: CutMix, 2019, https://arxiv.org/abs/1905.04899
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from timm.data import Mixup
from timm.layers import DropPath
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import Dataset

from ssl_mae_plugin.data import IMAGENET_NORM, Normalization, eval_transform
from ssl_mae_plugin.evaluation.classifier import (
    Budget,
    ClassifierModule,
    FitOptions,
    fit_classifier,
)
from ssl_mae_plugin.evaluation.transforms import (
    TransformedDataset,
    finetune_train_transform,
)

# Parameters before the first block share layer id 0 (facebookresearch/mae util/lr_decay.py).
_STEM_TOKENS = ("cls_token", "pos_embed", "reg_token", "dist_token")
_STEM_PREFIXES = ("patch_embed.", "norm_pre.")


def vit_layer_id(name: str, depth: int) -> int:
    """Layer id of a ViT parameter for layer-wise lr decay [0, 1].

    0 for the cls / position / register tokens, the patch embedding (and a pre-norm);
    ``i + 1`` for ``blocks.i``; ``depth + 1`` for everything after the blocks (final norm,
    ``fc_norm``, head).
    """
    if name in _STEM_TOKENS or name.startswith(_STEM_PREFIXES):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def layer_decay_param_groups(
    vit: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise lr decay, as facebookresearch/mae [0, 1].

    A parameter of layer ``i`` (:func:`vit_layer_id`) gets ``lr_scale = layer_decay **
    (depth + 1 - i)``: the head 1, the last block ``layer_decay``, the patch embedding
    ``layer_decay ** (depth + 1)``. 1-D parameters (biases, norm scales) and the model's
    ``no_weight_decay()`` names (position embedding, cls token) get no weight decay.
    Parameters with ``requires_grad=False`` are left out.

    timm's ``param_groups_layer_decay`` differs for a ViT with a final ``norm`` (it puts it
    with the last block), hence this function.

    Args:
        vit: A timm ``VisionTransformer`` (anything with ``blocks``).
        lr: Peak learning rate before scaling.
        weight_decay: Decay of the weight matrices.
        layer_decay: Per-layer lr factor.

    Returns:
        Groups with ``params``, ``lr`` (``lr * lr_scale``), ``lr_scale``, ``weight_decay``,
        ``layer_id`` and ``names``, ordered by layer id then decay.
    """
    depth = len(vit.blocks)
    skip = set(vit.no_weight_decay()) if hasattr(vit, "no_weight_decay") else set()
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in vit.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim == 1 or name in skip
        layer_id = vit_layer_id(name, depth)
        key = (layer_id, no_decay)
        if key not in groups:
            scale = layer_decay ** (depth + 1 - layer_id)
            groups[key] = {
                "params": [],
                "names": [],
                "lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "layer_id": layer_id,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[key] for key in sorted(groups)]


def vit_classifier(
    vit: VisionTransformer,
    num_classes: int,
    global_pool: bool = True,
    drop_path_rate: float = 0.1,
    head_init_std: float = 2e-5,
) -> VisionTransformer:
    """A classification copy of a timm ViT, as MAE's ``models_vit`` [0].

    The input is deep-copied (the caller's model is untouched) and every parameter made
    trainable (the MAE encoder's fixed sin-cos position table too, as in the official
    fine-tuning). Blocks get stochastic depth [2] rising linearly from 0 to
    ``drop_path_rate``. With ``global_pool`` the patch tokens (not the cls token) are
    averaged and normalised by a new ``fc_norm`` LayerNorm, the final ``norm`` is dropped;
    otherwise the normalised cls token is used. The new head is ``trunc_normal(std=2e-5)``
    with zero bias.

    Args:
        vit: A timm ``VisionTransformer``.
        num_classes: Classes.
        global_pool: Average pooling + ``fc_norm`` (the paper) or the cls token.
        drop_path_rate: Stochastic depth of the last block.
        head_init_std: Std of the head's weight.

    Returns:
        The classifier.
    """
    model = copy.deepcopy(vit)
    model.requires_grad_(True)
    depth = len(model.blocks)
    rates = torch.linspace(0, drop_path_rate, depth).tolist()
    for block, rate in zip(model.blocks, rates, strict=True):
        block.drop_path1 = DropPath(rate) if rate > 0 else nn.Identity()
        block.drop_path2 = DropPath(rate) if rate > 0 else nn.Identity()
    if global_pool:
        eps = getattr(model.norm, "eps", 1e-6)
        model.fc_norm = nn.LayerNorm(model.embed_dim, eps=eps)
        model.norm = nn.Identity()
        model.reset_classifier(num_classes, global_pool="avg")
    else:
        model.reset_classifier(num_classes, global_pool="token")
    nn.init.trunc_normal_(model.head.weight, std=head_init_std)
    nn.init.zeros_(model.head.bias)
    return model


class FineTuneClassifier(ClassifierModule):
    """A ViT classifier trained with the MAE fine-tuning recipe [0] as a LightningModule.

    Args:
        model: The classifier (see :func:`vit_classifier`).
        num_classes: Classes.
        train_dataset: Yields ``(augmented image tensor, label)``.
        val_dataset: Yields ``(image tensor, label)``.
        budget: Epochs, schedule, batch size, learning rate, AdamW weight decay, cosine floor.
        layer_decay: Layer-wise lr decay.
        mixup: Mixup alpha (0 disables).
        cutmix: CutMix alpha (0 disables).
        label_smoothing: Label smoothing.
        num_workers: Loader workers per process.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        train_dataset: Dataset,
        val_dataset: Dataset,
        budget: Budget,
        layer_decay: float = 0.75,
        mixup: float = 0.8,
        cutmix: float = 1.0,
        label_smoothing: float = 0.1,
        num_workers: int = 0,
    ) -> None:
        mixing = mixup > 0 or cutmix > 0
        super().__init__(train_dataset, val_dataset, budget, num_workers, even_batches=mixing)
        self.model = model
        self.layer_decay = layer_decay
        self.mixup_fn = (
            Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            if mixing
            else None
        )
        if mixing:  # smoothing is inside the soft mixed targets
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` class scores."""
        return self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Mixup / CutMix, then the (soft-target) cross-entropy."""
        images, targets = batch[0], batch[1]
        if self.mixup_fn is not None:
            images, targets = self.mixup_fn(images, targets)  # targets: [N, C] soft
        loss = self.criterion(self.model(images), targets)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def build_optimizer(self) -> torch.optim.Optimizer:
        """AdamW (0.9, 0.999) over layer-decayed groups."""
        groups = layer_decay_param_groups(
            self.model,
            self.peak_lr,
            weight_decay=self.budget.weight_decay,
            layer_decay=self.layer_decay,
        )
        return torch.optim.AdamW(groups, lr=self.peak_lr, betas=(0.9, 0.999))


def check_finetune_options(
    layer_decay: float,
    drop_path: float,
    mixup: float,
    cutmix: float,
    label_smoothing: float,
    re_prob: float,
    min_lr: float = 0.0,
    auto_augment: str | None = None,
    global_pool: bool = True,
    **budget: Any,
) -> None:
    """Raise ``ValueError``, naming the option, for settings :func:`finetune` cannot take.

    ``budget`` holds the training budget, checked by :class:`Budget` when given.
    """
    if budget:
        Budget(**budget, min_lr=min_lr)
    if not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    for name, value in (("drop_path", drop_path), ("re_prob", re_prob)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if mixup < 0 or cutmix < 0 or min_lr < 0:
        raise ValueError(f"mixup, cutmix and min_lr must be >= 0, got {mixup}, {cutmix}, {min_lr}")


def finetune(
    vit: VisionTransformer,
    train_dataset: Dataset,
    val_dataset: Dataset,
    num_classes: int,
    image_size: int = 224,
    normalization: Normalization = IMAGENET_NORM,
    epochs: int = 100,
    warmup_epochs: float = 5,
    batch_size: int = 1024,
    blr: float = 5e-4,
    min_lr: float = 1e-6,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    drop_path: float = 0.1,
    mixup: float = 0.8,
    cutmix: float = 1.0,
    label_smoothing: float = 0.1,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
    global_pool: bool = True,
    crop_pct: float | None = None,
    train_transform: Callable | None = None,
    val_transform: Callable | None = None,
    num_workers: int = 0,
    fit: FitOptions | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune a copy of ``vit`` with the MAE recipe through a ``pytorch_lightning.Trainer``.

    Defaults follow the paper's ViT-B/16 setting (blr 5e-4, drop path 0.1, 100 epochs with
    5 warmup, batch 1024) except ``layer_decay``, which keeps the official code's default
    0.75 (the ViT-L/H value; the paper uses 0.65 for ViT-B). ViT-L/H use blr 1e-3, 50 epochs
    and drop path 0.1 / 0.2 [0]. ``vit`` itself is not modified.

    Args:
        vit: A timm ``VisionTransformer``, e.g. ``MAE.encoder``.
        train_dataset: Raw ``(image, label)`` pairs (PIL, or tensors in [0, 1]), no transform.
        val_dataset: Same for validation.
        num_classes: Classes.
        image_size: Input size (must match ``vit``).
        normalization: Input normalisation.
        epochs: Epochs, warmup included.
        warmup_epochs: Warmup epochs.
        batch_size: Global batch size (even per process when mixing).
        blr: Base learning rate, ``lr = blr * batch / 256``.
        min_lr: Floor of the cosine.
        weight_decay: AdamW weight decay.
        layer_decay: Layer-wise lr decay.
        drop_path: Stochastic depth of the last block.
        mixup: Mixup alpha.
        cutmix: CutMix alpha.
        label_smoothing: Label smoothing.
        auto_augment: timm RandAugment policy (``None`` to disable).
        re_prob: Random-erasing probability.
        global_pool: Average pooling + ``fc_norm`` (else the cls token).
        crop_pct: Centre-crop fraction at evaluation (see ``data.eval_transform``).
        train_transform: Replaces the default training transform.
        val_transform: Replaces the default evaluation transform.
        num_workers: Loader workers per process.
        fit: How the Trainer runs (device, precision, strategy, ...).
        seed: Seed for the head, drop path, augmentation and data order.

    Returns:
        ``{"top1", "top5", "best_top1", "best_epoch", "last_top1", "epochs", "seconds",
        "history"}``, accuracies as fractions in ``[0, 1]``.
    """
    budget = Budget(epochs, warmup_epochs, batch_size, blr, weight_decay, min_lr)
    check_finetune_options(layer_decay, drop_path, mixup, cutmix, label_smoothing, re_prob)
    if train_transform is None:
        train_transform = finetune_train_transform(
            image_size, normalization, auto_augment=auto_augment, re_prob=re_prob
        )
    train = TransformedDataset(train_dataset, train_transform)
    val = TransformedDataset(
        val_dataset, val_transform or eval_transform(image_size, normalization, crop_pct)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = vit_classifier(vit, num_classes, global_pool=global_pool, drop_path_rate=drop_path)
    module = FineTuneClassifier(
        model,
        num_classes=num_classes,
        train_dataset=train,
        val_dataset=val,
        budget=budget,
        layer_decay=layer_decay,
        mixup=mixup,
        cutmix=cutmix,
        label_smoothing=label_smoothing,
        num_workers=num_workers,
    )
    return fit_classifier(module, options=fit or FitOptions(), seed=seed)
