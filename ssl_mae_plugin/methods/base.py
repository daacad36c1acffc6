"""What every SSL method shares: optimizer, learning-rate schedule, online probe, features.

Each method subclasses :class:`SSLMethod`, builds its networks, and implements
:meth:`SSLMethod.ssl_step` (and :meth:`SSLMethod.default_transform`).

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn
from torch.nn.utils import get_total_norm

from ssl_mae_plugin.backbones import (
    available_backbones,
    build_backbone,
    is_known_backbone,
    is_vit,
)
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.lars import LARS
from ssl_mae_plugin.mae.visualize import ImageGrid
from ssl_mae_plugin.methods.finite import NonFiniteWatch
from ssl_mae_plugin.methods.training_recipe import (
    FAMILY_NAMES,
    OPTIMIZERS,
    Family,
    Optimizer,
    TrainingRecipe,
    family_of,
)
from ssl_mae_plugin.schedules import clip_warmup, warmup_cosine_scheduler


class SSLMethod(pl.LightningModule, ABC):
    """Base LightningModule of the SSL methods.

    Args:
        backbone: Backbone name (see :mod:`ssl_mae_plugin.backbones`).
        image_size: Input size of the pretraining views.
        patch_size: ViT patch size.
        embed_dim: ViT width; the named size's when ``None``.
        depth: ViT blocks; the named size's when ``None``.
        num_heads: ViT heads; the named size's when ``None``.
        num_classes: Classes of the dataset (for the online probe).
        batch_size: Images per optimizer step (all devices, times gradient accumulation);
            scales the learning rate.
        blr: Base learning rate; the method's default when ``None``.
        weight_decay: Weight decay; the method's default when ``None``.
        warmup_epochs: Warmup epochs (fractional allowed); a fraction of the run, the
            method's default, when ``None``. Clipped to the run length.
        min_lr: Final learning rate of the cosine schedule.
        optimizer: ``adamw``, ``lars`` or ``sgd``; the method's default when ``None``.
        online_probe: Train a linear classifier on detached features during pretraining.
        seed: Run seed (masks and augmentations derive from it).
    """

    name: ClassVar[str] = ""
    # The published recipe of each backbone family the method supports.
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {}
    # Constructor arguments that change ``forward_features`` of the same weights (e.g. MAE's
    # pooling); with the backbone's weights they identify an untrained control.
    feature_options: ClassVar[tuple[str, ...]] = ()
    # Crop-scale range when the views are RandomResizedCrop + flip alone, which
    # ``data.in_memory`` can make on the device (``None``: not supported).
    device_crop_scale: ClassVar[tuple[float, float] | None] = None
    # Whether summing the gradients of k batches equals one step on their union: true for a
    # per-sample loss without batch statistics (MAE), false where the loss compares samples
    # within the batch (contrastive negatives) or uses a batch's statistics (batch norm,
    # DINO's centre).
    exact_accumulation: ClassVar[bool] = False

    def __init__(
        self,
        backbone: str = "vit_tiny",
        image_size: int = 224,
        patch_size: int = 16,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        num_classes: int = 10,
        batch_size: int = 256,
        blr: float | None = None,
        weight_decay: float | None = None,
        warmup_epochs: float | None = None,
        min_lr: float = 0.0,
        optimizer: Optimizer | None = None,
        online_probe: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.recipe = recipe = self.recipe_for(backbone)
        self.backbone_name = backbone
        self.image_size = image_size
        self.patch_size = patch_size
        self.vit_overrides = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.blr = recipe.blr if blr is None else blr
        self.weight_decay = recipe.weight_decay if weight_decay is None else weight_decay
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.optimizer_name = recipe.optimizer if optimizer is None else optimizer
        if self.optimizer_name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer_name!r}")
        self.online_probe = online_probe
        self.seed = seed
        self.online_classifier: OnlineLinearClassifier | None = None
        self.nonfinite = NonFiniteWatch()
        self._batches_done = 0

    # -- what a method provides ------------------------------------------------------------

    @classmethod
    def recipe_for(cls, backbone: str) -> TrainingRecipe:
        """The method's published recipe for the family of ``backbone``.

        Raises:
            ValueError: Naming the backbone when the method has no recipe for its family.
        """
        family = family_of(backbone)
        if family not in cls.recipes:
            supported = ", ".join(FAMILY_NAMES[f] for f in cls.recipes) or "none"
            raise ValueError(
                f"backbone: {cls.name} has no recipe for {FAMILY_NAMES[family]} such as "
                f"{backbone!r} (it supports: {supported})"
            )
        return cls.recipes[family]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for constructor arguments the method cannot take.

        Recipes call this with every argument (defaults included) before any work starts.
        A message starts with the name of the offending argument, so that the recipe can
        prefix its path (``methods.0.mask_ratio must ...``). Subclasses extend it with
        their own arguments, reusing the checks of the code that uses them.
        """
        backbone = options["backbone"]
        if not is_known_backbone(backbone):
            raise ValueError(
                f"backbone: unknown backbone {backbone!r}; choose from "
                f"{', '.join(available_backbones())} or a timm model name"
            )
        cls.recipe_for(backbone)
        patch_size, image_size = options["patch_size"], options["image_size"]
        if is_vit(backbone) and image_size % patch_size:
            raise ValueError(
                f"patch_size={patch_size} does not divide the image size {image_size} "
                "(data.image_size)"
            )

    @abstractmethod
    def default_transform(self, normalization: Normalization) -> Callable:
        """The lightly transform producing this method's views at ``self.image_size``."""

    @abstractmethod
    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """Compute the SSL loss of a batch.

        Args:
            views: The views of the batch, one ``[N, C, H, W]`` tensor per view.
            seeds: One seed per sample for any randomness in the step (e.g. MAE masks).

        Returns:
            The loss and, for the online probe, ``[N, D]`` features of the first view
            (``None`` when the method has none to offer cheaply).
        """

    def build_backbone(self) -> nn.Module:
        """The backbone named by the constructor arguments (see :func:`build_backbone`)."""
        return build_backbone(
            self.backbone_name, self.image_size, self.patch_size, **self.vit_overrides
        )

    def forward_features(self, images: Tensor) -> Tensor:
        """``[N, D]`` features of whole images for evaluation (no masking, no heads)."""
        return self.backbone(images)

    @property
    def feature_dim(self) -> int:
        """Width ``D`` of :meth:`forward_features`."""
        return int(self.backbone.num_features)

    def report_images(self, images: Tensor, normalization: Normalization) -> dict[str, ImageGrid]:
        """Method-specific figures for the report, by file stem (none by default).

        Args:
            images: ``[N, C, H, W]`` normalised validation images.
            normalization: How they were normalised.
        """
        return {}

    def setup_online_probe(self) -> None:
        """Create the online classifier; subclasses call this after building the backbone."""
        if self.online_probe:
            self.online_classifier = OnlineLinearClassifier(
                feature_dim=self.feature_dim, num_classes=self.num_classes
            )

    # -- training ---------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        """Start counting this epoch's batches (for mid-epoch resume)."""
        self._batches_done = 0

    def training_step(
        self, batch: tuple[list[Tensor], Tensor, list[int]], batch_idx: int
    ) -> Tensor:
        """SSL loss (+ online probe loss on detached features)."""
        views, labels, seeds = batch
        self._batches_done = batch_idx + 1
        loss, features = self.ssl_step(views, seeds)
        self.nonfinite.note("loss", loss)
        batch_size = len(labels)
        # No value leaves the device here, and none is sent to it: the epoch mean
        # accumulates on the device (reduced over ranks at the epoch's end); the per-step
        # loss and learning rate are logged at the logging interval, and read by Lightning
        # then. (A progress-bar metric would be read at every step's end, so there is none.)
        self.log(
            "train/loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size
        )
        if self.global_step % self.trainer.log_every_n_steps == 0:
            learning_rate = self.lr_schedulers().get_last_lr()[0]
            self.log_dict(
                {"train/loss_step": loss.detach(), "train/lr": learning_rate}, batch_size=batch_size
            )
        if self.online_classifier is not None and features is not None:
            probe_loss, probe_log = self.online_classifier.training_step(
                (features.detach(), labels), batch_idx
            )
            self.log_dict(
                probe_log, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size
            )
            loss = loss + probe_loss
        return loss

    def on_fit_start(self) -> None:
        """Start watching for non-finite losses and gradients on the device."""
        self.nonfinite.start(self.device, self.global_step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Note non-finite gradients (a finite loss can still have them), without a sync.

        Skipped under 16-bit mixed precision, whose gradient scaler skips such steps itself.
        """
        if str(self.trainer.precision).startswith("16"):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        self.nonfinite.note("gradients", get_total_norm([g for g in grads if g is not None]))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Count the step; every ``trainer.log_every_n_steps`` steps read the watch.

        Raises:
            NonFiniteLossError: Naming the first bad step.
        """
        self.nonfinite.advance()
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.nonfinite.check(self.trainer.num_training_batches)

    def optimizer_parameters(self) -> list[dict[str, Any]]:
        """Parameter groups: no weight decay for biases and 1-D parameters, the probe apart.

        The online probe gets neither weight decay nor LARS adaptation. The rest is timm's
        ``param_groups_weight_decay``, the grouping facebookresearch/mae pretrains with (cls
        and mask tokens are decayed there too).
        """
        groups = param_groups_weight_decay(self, self.weight_decay)
        probe = [] if self.online_classifier is None else list(self.online_classifier.parameters())
        probe_ids = {id(p) for p in probe}
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in probe_ids]
        groups.append({"params": probe, "weight_decay": 0.0, "lars_adaptation": False})
        return [group for group in groups if group["params"]]

    @property
    def fused_optimizer(self) -> bool:
        """Whether every parameter is on a device with a fused AdamW (CPU, CUDA)."""
        return all(p.device.type in ("cpu", "cuda") for p in self.parameters())

    @property
    def base_lr(self) -> float:
        """The peak learning rate: ``blr`` scaled to the global batch by the recipe's rule."""
        return self.recipe.peak_lr(self.blr, self.batch_size)

    def configure_optimizers(self) -> dict[str, Any]:
        """The method's optimizer with per-step linear warmup and half-cycle cosine [0]."""
        groups = self.optimizer_parameters()
        recipe = self.recipe
        if self.optimizer_name == "adamw":  # the fused kernel: one launch for all tensors
            optimizer = torch.optim.AdamW(
                groups, lr=self.base_lr, betas=recipe.betas, fused=self.fused_optimizer
            )
        elif self.optimizer_name == "lars":
            optimizer = LARS(groups, lr=self.base_lr, momentum=recipe.momentum)
        else:
            optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=recipe.momentum)

        total_steps = int(self.trainer.estimated_stepping_batches)
        max_epochs = max(int(self.trainer.max_epochs or 1), 1)
        steps_per_epoch = max(total_steps // max_epochs, 1)
        warmup_epochs = (
            recipe.warmup_fraction * max_epochs
            if self.warmup_epochs is None
            else self.warmup_epochs
        )
        warmup_steps = clip_warmup(round(warmup_epochs * steps_per_epoch), total_steps, "steps")
        scheduler = warmup_cosine_scheduler(
            optimizer,
            steps_per_epoch=1,  # in steps: warmup and cosine per optimizer step [0]
            epochs=total_steps,
            warmup_epochs=warmup_steps,
            min_lr_ratio=self.min_lr / self.base_lr if self.base_lr > 0 else 0.0,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    # -- checkpoints --------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the method name and where in the data the run stands.

        First the watch is read: a checkpoint after a non-finite step is never written.

        Raises:
            NonFiniteLossError: Naming the first bad step.
        """
        self.nonfinite.check(self.trainer.num_training_batches)
        checkpoint["ssl_method"] = self.name
        epoch, done = self.current_epoch, self._batches_done
        if done >= self.trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        checkpoint["data_position"] = {"epoch": int(epoch), "batches_done": int(done)}
