"""MAE as an SSL method: our MAE core, lightly's ``MAETransform`` and ``MultiViewCollate``.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
from lightly.transforms import MAETransform
from torch import Tensor

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.mae import MAE, MAE_FACTORIES, noise_from_seeds, num_kept
from ssl_mae_plugin.mae.visualize import ImageGrid, reconstruction_grid
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.training_recipe import Family, TrainingRecipe

Pool = Literal["cls", "mean"]


def mae_factory(backbone: str) -> Callable[..., MAE]:
    """The MAE factory of a named ViT size.

    Raises:
        ValueError: Naming the backbone when it is not one of our ViTs.
    """
    if backbone not in MAE_FACTORIES:
        raise ValueError(
            f"backbone: mae needs a ViT ({', '.join(MAE_FACTORIES)}), got {backbone!r}"
        )
    return MAE_FACTORIES[backbone]


class MAEMethod(SSLMethod):
    """Masked Autoencoder pretraining [0].

    Paper defaults: AdamW betas (0.9, 0.95), weight decay 0.05, base lr 1.5e-4, warmup 5%
    of the epochs (40 of 800), mask ratio 0.75, norm-pix loss, RandomResizedCrop with
    scale (0.2, 1) + flip. The decoder defaults to the factory's (512-d, 8 blocks for
    B/L/H).

    Args:
        mask_ratio: Fraction of patches removed.
        norm_pix_loss: Regress per-patch normalised pixels.
        decoder_embed_dim: Decoder width; the factory default when ``None``.
        decoder_depth: Decoder blocks; the factory default when ``None``.
        decoder_num_heads: Decoder heads; the factory default when ``None``.
        pool: Feature for evaluation: ``cls`` token (the paper's linear probe) or ``mean``.
        grad_checkpointing: Recompute the blocks in the backward pass (large ViTs: much
            less activation memory for about a third more compute).
        compile: ``torch.compile`` the training loss (static shapes, one graph); ``None``
            compiles on CUDA, where it pays off, and not on the CPU, where it gains little.
        **common: :class:`SSLMethod` arguments.
    """

    name: ClassVar[str] = "mae"
    device_crop_scale: ClassVar[tuple[float, float] | None] = (0.2, 1.0)
    feature_options: ClassVar[tuple[str, ...]] = ("pool",)
    exact_accumulation: ClassVar[bool] = True  # per-sample loss, layer norm only
    recipes: ClassVar[Mapping[Family, TrainingRecipe]] = {
        "vit": TrainingRecipe(
            source="MAE paper, App. A.1",
            optimizer="adamw",
            blr=1.5e-4,
            weight_decay=0.05,
            betas=(0.9, 0.95),
            warmup_fraction=40 / 800,
            notes="mask ratio 0.75, norm-pix loss, crops 0.2-1 + flip",
        )
    }

    def __init__(
        self,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_embed_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_num_heads: int | None = None,
        pool: Pool = "cls",
        grad_checkpointing: bool = False,
        compile: bool | None = None,
        **common: Any,
    ) -> None:
        super().__init__(**common)
        self.save_hyperparameters()
        decoder = {
            "decoder_embed_dim": decoder_embed_dim,
            "decoder_depth": decoder_depth,
            "decoder_num_heads": decoder_num_heads,
        }
        self.model = mae_factory(self.backbone_name)(
            img_size=self.image_size,
            patch_size=self.patch_size,
            mask_ratio=mask_ratio,
            norm_pix_loss=norm_pix_loss,
            **{
                key: value
                for key, value in {**decoder, **self.vit_overrides}.items()
                if value is not None
            },
        )
        self.backbone = self.model.encoder
        self.pool = pool
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.compile = compile
        self.training_loss = self.model.training_loss
        if compile:
            self.training_loss = torch.compile(self.model.training_loss)
        self.setup_online_probe()

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """A ViT backbone, and a mask ratio that keeps and removes at least one patch."""
        mae_factory(options["backbone"])
        super().check_options(options)
        grid = options["image_size"] // options["patch_size"]
        num_kept(grid * grid, options["mask_ratio"])

    def on_fit_start(self) -> None:
        """Compile the training loss on CUDA unless the recipe said otherwise."""
        super().on_fit_start()
        if self.compile is None and self.device.type == "cuda":
            self.training_loss = torch.compile(self.model.training_loss)

    def default_transform(self, normalization: Normalization) -> Callable:
        """The ``MAETransform`` of lightly: RandomResizedCrop(scale 0.2-1, bicubic) + flip."""
        return MAETransform(
            input_size=self.image_size, min_scale=0.2, normalize=normalization.as_lightly()
        )

    def ssl_step(self, views: list[Tensor], seeds: list[int]) -> tuple[Tensor, Tensor | None]:
        """Masked reconstruction loss; masks drawn from the per-sample seeds."""
        images = views[0]
        noise = noise_from_seeds(seeds, self.model.num_patches, images.device)
        loss = self.training_loss(images, noise=noise)
        features = None
        if self.online_classifier is not None:
            with torch.no_grad():
                features = self.model.forward_features(images, pool=self.pool)
        return loss, features

    def forward_features(self, images: Tensor) -> Tensor:
        """Encoder features of whole images (cls token or mean of patch tokens)."""
        return self.model.forward_features(images, pool=self.pool)

    def report_images(self, images: Tensor, normalization: Normalization) -> dict[str, ImageGrid]:
        """Reconstructions of validation images (seeded masks) as in the paper's figures."""
        noise = torch.rand(
            len(images), self.model.num_patches, generator=torch.Generator().manual_seed(0)
        )
        grid = reconstruction_grid(
            self.model,
            images.to(self.device),
            normalization.mean,
            normalization.std,
            noise=noise.to(self.device),
            title="validation images",
        )
        return {"mae_reconstructions": grid}
