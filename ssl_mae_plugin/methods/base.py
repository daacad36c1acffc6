"""What every SSL method shares: optimizer, learning-rate schedule, online probe, features.

Each method subclasses :class:`SSLMethod`, builds its networks, and implements
:meth:`SSLMethod.ssl_step` (and :meth:`SSLMethod.default_transform`).

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour, 2017,
  https://arxiv.org/abs/1706.02677 (linear lr scaling and warmup)
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from lightly.utils.benchmarking import OnlineLinearClassifier
from lightly.utils.lars import LARS
from timm.optim import param_groups_weight_decay
from torch import Tensor, nn

from ssl_mae_plugin.backbones import (
    available_backbones,
    build_backbone,
    is_convnet,
    is_known_backbone,
    is_vit,
)
from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.mae.visualize import ImageGrid
from ssl_mae_plugin.schedules import clip_warmup, warmup_cosine_scheduler

Optimizer = Literal["adamw", "lars", "sgd"]
OPTIMIZERS: tuple[str, ...] = typing.get_args(Optimizer)


class NonFiniteLossError(RuntimeError):
    """The loss or its gradients became NaN or infinite (training stops before a step)."""


@dataclass(frozen=True)
class OptimizerDefaults:
    """A method's optimisation recipe, as its paper (or lightly's benchmarks) use it.

    Attributes:
        optimizer: ``adamw``, ``lars`` or ``sgd``.
        blr: Base learning rate; the actual one is ``blr * batch_size / 256``.
        weight_decay: Decoupled (AdamW) or L2 (LARS, SGD) weight decay.
        betas: AdamW betas.
        momentum: LARS / SGD momentum.
        warmup_fraction: Warmup length as a fraction of the epochs when the recipe does
            not give ``warmup_epochs`` (MAE: 40 of 800 = 0.05).
    """

    optimizer: str = "adamw"
    blr: float = 1.5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    warmup_fraction: float = 0.05


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
        batch_size: Global batch size (all devices); scales the learning rate.
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
    optimizer_defaults: ClassVar[OptimizerDefaults] = OptimizerDefaults()
    # A different recipe for ConvNet backbones (``None``: the same for every backbone).
    convnet_optimizer_defaults: ClassVar[OptimizerDefaults | None] = None
    # Crop-scale range when the views are RandomResizedCrop + flip alone, which
    # ``data.in_memory`` can make on the device (``None``: not supported).
    device_crop_scale: ClassVar[tuple[float, float] | None] = None

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
        self.defaults = defaults = self.defaults_for(backbone)
        self.backbone_name = backbone
        self.image_size = image_size
        self.patch_size = patch_size
        self.vit_overrides = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.blr = defaults.blr if blr is None else blr
        self.weight_decay = defaults.weight_decay if weight_decay is None else weight_decay
        self.warmup_epochs = warmup_epochs
        self.min_lr = min_lr
        self.optimizer_name = defaults.optimizer if optimizer is None else optimizer
        if self.optimizer_name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer_name!r}")
        self.online_probe = online_probe
        self.seed = seed
        self.online_classifier: OnlineLinearClassifier | None = None
        self._batches_done = 0

    # -- what a method provides ------------------------------------------------------------

    @classmethod
    def defaults_for(cls, backbone: str) -> OptimizerDefaults:
        """The optimisation recipe for a backbone (some methods differ for ConvNets)."""
        if cls.convnet_optimizer_defaults is not None and is_convnet(backbone):
            return cls.convnet_optimizer_defaults
        return cls.optimizer_defaults

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
        self.check_finite(loss, batch_idx)
        batch_size = len(labels)
        self.log(
            "train/loss", loss, prog_bar=True, on_epoch=True, sync_dist=True, batch_size=batch_size
        )
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=batch_size)
        if self.online_classifier is not None and features is not None:
            probe_loss, probe_log = self.online_classifier.training_step(
                (features.detach(), labels), batch_idx
            )
            self.log_dict(
                probe_log, on_step=False, on_epoch=True, sync_dist=True, batch_size=batch_size
            )
            loss = loss + probe_loss
        return loss

    def check_finite(self, loss: Tensor, batch_idx: int) -> None:
        """Stop every rank before the optimizer step if any rank's loss is not finite.

        Like facebookresearch/mae, which checks every step; the weights, and the last
        checkpoint, are still those of the last good step.

        Raises:
            NonFiniteLossError: Naming the step.
        """
        finite = bool(torch.isfinite(loss.detach()).all())
        if self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            return
        raise NonFiniteLossError(
            f"non-finite loss ({loss.item()}) at step {self.global_step} (epoch "
            f"{self.current_epoch}, batch {batch_idx}); stopped before updating the weights, "
            "the last checkpoint is kept. Lower the learning rate or use precision 32"
        )

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Stop before a step with non-finite gradients (a finite loss can still have them).

        Skipped under 16-bit mixed precision, whose gradient scaler skips such steps itself.
        After DDP's all-reduce every rank holds the same gradients and decides alike.

        Raises:
            NonFiniteLossError: Naming the step.
        """
        if str(self.trainer.precision).startswith("16"):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.get_total_norm([g for g in grads if g is not None])
        if not torch.isfinite(norm):
            raise NonFiniteLossError(
                f"non-finite gradients at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {self._batches_done - 1}); stopped before updating the weights, the "
                "last checkpoint is kept. Lower the learning rate or use precision 32"
            )

    def optimizer_parameters(self) -> list[dict[str, Any]]:
        """Parameter groups: no weight decay for biases, 1-D parameters and the online probe.

        timm's ``param_groups_weight_decay``, the grouping facebookresearch/mae pretrains
        with (cls and mask tokens are decayed there too).
        """
        probe = self.online_classifier
        names = [name for name, _ in probe.named_parameters("online_classifier")] if probe else []
        groups = param_groups_weight_decay(self, self.weight_decay, no_weight_decay_list=names)
        return [group for group in groups if group["params"]]

    @property
    def fused_optimizer(self) -> bool:
        """Whether every parameter is on a device with a fused AdamW (CPU, CUDA)."""
        return all(p.device.type in ("cpu", "cuda") for p in self.parameters())

    @property
    def base_lr(self) -> float:
        """``blr * batch_size / 256``, the linear scaling rule [1]."""
        return self.blr * self.batch_size / 256

    def configure_optimizers(self) -> dict[str, Any]:
        """The method's optimizer with per-step linear warmup and half-cycle cosine [0]."""
        groups = self.optimizer_parameters()
        defaults = self.defaults
        if self.optimizer_name == "adamw":  # the fused kernel: one launch for all tensors
            optimizer = torch.optim.AdamW(
                groups, lr=self.base_lr, betas=defaults.betas, fused=self.fused_optimizer
            )
        elif self.optimizer_name == "lars":
            optimizer = LARS(groups, lr=self.base_lr, momentum=defaults.momentum)
        else:
            optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=defaults.momentum)

        total_steps = int(self.trainer.estimated_stepping_batches)
        max_epochs = max(int(self.trainer.max_epochs or 1), 1)
        steps_per_epoch = max(total_steps // max_epochs, 1)
        warmup_epochs = (
            defaults.warmup_fraction * max_epochs
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
        """Record the method name and where in the data the run stands."""
        checkpoint["ssl_method"] = self.name
        epoch, done = self.current_epoch, self._batches_done
        if done >= self.trainer.num_training_batches:
            epoch, done = epoch + 1, 0
        checkpoint["data_position"] = {"epoch": int(epoch), "batches_done": int(done)}
