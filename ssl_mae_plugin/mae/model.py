"""Masked Autoencoder: a timm ViT encoder on the visible patches plus :class:`MAEDecoder`.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from functools import partial
from os import PathLike
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ssl_mae_plugin.backbones import VIT_SIZES
from ssl_mae_plugin.mae import checkpoints
from ssl_mae_plugin.mae.decoder import MAEDecoder, run_blocks
from ssl_mae_plugin.mae.loss import masked_mse_loss, removed_patches_mse
from ssl_mae_plugin.mae.masking import (
    check_mask_ratio,
    gather_tokens,
    num_kept,
    restore_mask,
    shuffle_ids,
)
from ssl_mae_plugin.mae.patches import patchify
from ssl_mae_plugin.mae.pos_embed import sincos_2d

POOLS = ("cls", "mean")


class MAEOutput(NamedTuple):
    """What :meth:`MAE.forward` returns.

    Attributes:
        loss: Scalar reconstruction loss on the removed patches.
        pred: ``[N, L, p*p*C]`` predicted pixels (normalised target space under norm-pix).
        mask: ``[N, L]``, 1 for removed patches, 0 for visible ones.
        ids_restore: ``[N, L]`` indices that undo the masking shuffle.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def _as_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


class MAE(nn.Module):
    """Masked Autoencoder with a timm ``VisionTransformer`` encoder [0].

    The encoder embeds all patches, adds fixed sine-cosine positions, keeps a random
    ``1 - mask_ratio`` of them per image, prepends the cls token and runs the transformer on
    the visible tokens only. The decoder reconstructs every patch; the loss is the MSE on
    the removed ones. Defaults are ViT-B/16 with the paper's 512-d, 8-block decoder.

    Args:
        img_size: Input size, an int or ``(H, W)``; divisible by ``patch_size``.
        patch_size: Side of a square patch in pixels.
        in_chans: Image channels.
        embed_dim: Encoder width.
        depth: Encoder blocks.
        num_heads: Encoder attention heads.
        decoder_embed_dim: Decoder width.
        decoder_depth: Decoder blocks.
        decoder_num_heads: Decoder attention heads.
        mlp_ratio: MLP hidden width relative to the block width (encoder and decoder).
        mask_ratio: Default fraction of patches to remove, in ``[0, 1)``.
        norm_pix_loss: Regress per-patch normalised pixels.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        img_size = _as_pair(img_size)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        check_mask_ratio(mask_ratio)
        self.config: dict[str, Any] = {
            "img_size": img_size,
            "patch_size": patch_size,
            "in_chans": in_chans,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "decoder_embed_dim": decoder_embed_dim,
            "decoder_depth": decoder_depth,
            "decoder_num_heads": decoder_num_heads,
            "mlp_ratio": mlp_ratio,
            "mask_ratio": mask_ratio,
            "norm_pix_loss": norm_pix_loss,
        }
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss

        self.encoder = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=0,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
            weight_init="skip",
        )
        self.encoder.pos_embed.requires_grad_(False)
        self.decoder = MAEDecoder(
            grid_size=self.grid_size,
            patch_size=patch_size,
            in_chans=in_chans,
            encoder_dim=embed_dim,
            embed_dim=decoder_embed_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
        )
        self.initialize_weights()

    @property
    def num_patches(self) -> int:
        """Patches per image, ``L``."""
        return self.grid_size[0] * self.grid_size[1]

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Initialise as facebookresearch/mae.

        Fixed sine-cosine position tables; patch projection xavier-uniform on the weight
        viewed as 2-D; cls and mask tokens normal(0.02); every Linear xavier-uniform with
        zero bias; LayerNorm weight 1, bias 0.
        """
        embed_dim = self.encoder.embed_dim
        self.encoder.pos_embed.copy_(sincos_2d(embed_dim, self.grid_size, cls_token=True)[None])
        self.decoder.pos_embed.copy_(
            sincos_2d(self.decoder.pos_embed.shape[-1], self.grid_size, cls_token=True)[None]
        )
        proj = self.encoder.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def check_images(self, images: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``[N, in_chans, *img_size]``."""
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise ValueError(
                f"images must have shape [N, {self.in_chans}, H, W] (in_chans={self.in_chans}), "
                f"got {tuple(images.shape)}"
            )
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the model's img_size is {self.img_size}"
            )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn gradient checkpointing of the encoder and decoder blocks on or off.

        Each block is recomputed in the backward pass instead of storing its activations
        (timm's ``checkpoint_seq``, non-reentrant). Saves most of the activation memory of
        large ViTs for about one more forward pass of the blocks; the loss and gradients
        are unchanged.

        Args:
            enable: Checkpoint (``True``) or store activations as usual (``False``).
        """
        self.encoder.set_grad_checkpointing(enable)
        self.decoder.grad_checkpointing = enable

    def encode_visible(self, patches: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode the visible patches of each image.

        Equivalent to the paper's patch embedding of all patches, adding positions and
        gathering the visible ones, but only the visible patches' pixels are gathered and
        projected: the convolution of the patch embedding is a linear map of each
        flattened patch.

        Args:
            patches: ``[N, L, p*p*C]`` from :func:`patchify` (channels last in a patch).
            ids_keep: ``[N, len_keep]`` indices of the visible patches.

        Returns:
            The latent ``[N, 1 + len_keep, D]``: cls first, then the visible tokens in the
            order of ``ids_keep``.
        """
        encoder = self.encoder
        proj = encoder.patch_embed.proj  # Conv2d, kernel = stride = patch
        # [D, C, p, p] -> [D, p*p*C], the layout of patchify's flattened patches.
        weight = proj.weight.permute(0, 2, 3, 1).flatten(1)
        x = F.linear(gather_tokens(patches, ids_keep), weight, proj.bias)  # [N, len_keep, D]
        x = x + F.embedding(ids_keep, encoder.pos_embed[0, 1:, :])  # positions of those patches
        cls = encoder.cls_token + encoder.pos_embed[:, :1, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)  # [N, 1 + len_keep, D]
        x = run_blocks(encoder.blocks, x, encoder.grad_checkpointing)
        return encoder.norm(x)

    def forward(
        self,
        images: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> MAEOutput:
        """Mask, encode, decode and score a batch.

        For training, :meth:`training_loss` gives the same loss faster.

        Args:
            images: ``[N, C, H, W]`` normalised images.
            mask_ratio: Fraction of patches to remove; the model's default when omitted.
            noise: Optional ``[N, L]`` noise deciding the mask (smallest values are kept).

        Returns:
            :class:`MAEOutput` ``(loss, pred, mask, ids_restore)``.
        """
        self.check_images(images)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        len_keep = num_kept(self.num_patches, mask_ratio)
        ids_shuffle = shuffle_ids(images.shape[0], self.num_patches, noise, images.device)
        ids_restore = torch.argsort(ids_shuffle, dim=1)  # [N, L]
        mask = restore_mask(ids_restore, len_keep)  # [N, L], 1 = removed
        target = patchify(images, self.patch_size)  # [N, L, p*p*C]
        latent = self.encode_visible(target, ids_shuffle[:, :len_keep])  # [N, 1 + K, D]
        pred = self.decoder(latent, ids_restore)  # [N, L, p*p*C]
        loss = masked_mse_loss(pred, target, mask, norm_pix_loss=self.norm_pix_loss)
        return MAEOutput(loss=loss, pred=pred, mask=mask, ids_restore=ids_restore)

    def training_loss(
        self,
        images: torch.Tensor,
        mask_ratio: float | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of :meth:`forward` for the same ``noise``, computed for training only.

        The pixel head and the loss run on the removed patches only, the decoder keeps the
        tokens in shuffled order (see :meth:`MAEDecoder.forward_removed`), the image is
        patchified once for the encoder input and the target, and only the removed
        patches' targets are normalised. Shapes are static for a given ``mask_ratio``, so
        the method compiles (``torch.compile``) into one graph.

        Args:
            images: ``[N, C, H, W]`` normalised images.
            mask_ratio: Fraction of patches to remove; the model's default when omitted.
            noise: Optional ``[N, L]`` noise deciding the mask (smallest values are kept).

        Returns:
            The scalar reconstruction loss.
        """
        self.check_images(images)
        mask_ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        len_keep = num_kept(self.num_patches, mask_ratio)
        ids_shuffle = shuffle_ids(images.shape[0], self.num_patches, noise, images.device)
        patches = patchify(images, self.patch_size)  # [N, L, p*p*C]
        latent = self.encode_visible(patches, ids_shuffle[:, :len_keep])  # [N, 1 + K, D]
        pred = self.decoder.forward_removed(latent, ids_shuffle)  # [N, L - K, p*p*C]
        target = gather_tokens(patches, ids_shuffle[:, len_keep:])  # [N, L - K, p*p*C]
        return removed_patches_mse(pred, target, norm_pix_loss=self.norm_pix_loss)

    def forward_features(self, images: torch.Tensor, pool: str = "cls") -> torch.Tensor:
        """Features of whole images (no masking) for evaluation.

        Args:
            images: ``[N, C, H, W]`` normalised images.
            pool: ``"cls"`` for the normalised cls token (the paper's linear probe) or
                ``"mean"`` for the mean of the normalised patch tokens.

        Returns:
            ``[N, D]`` features.
        """
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.check_images(images)
        tokens = self.encoder.forward_features(images)  # [N, 1 + L, D]
        return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under facebookresearch/mae's key names (``models_mae.py``)."""
        return checkpoints.to_official(self.state_dict())

    @classmethod
    def from_official(
        cls,
        source: str | PathLike | dict[str, Any],
        **overrides: Any,
    ) -> MAE:
        """Build a model from a facebookresearch/mae checkpoint.

        The architecture is inferred from the tensor shapes (and ``args.norm_pix_loss``
        when the file holds it). ``overrides`` replace inferred settings; a different
        ``img_size`` resizes the position tables. A file without decoder weights (the
        encoder-only releases) loads with a freshly initialised decoder and a warning.

        Args:
            source: A path, a state dict, or a ``{"model": state_dict, ...}`` checkpoint.
            **overrides: Constructor arguments to set explicitly.

        Returns:
            The model, with the checkpoint's weights.
        """
        state_dict, inferred = checkpoints.read_official(source)
        model = cls(**{**inferred, **overrides})
        checkpoints.load_official_into(model, state_dict)
        return model


def _factory(name: str, **arch: Any):
    def build(**overrides: Any) -> MAE:
        return MAE(**{**arch, **overrides})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"MAE with the {name.removeprefix('mae_')} architecture: "
        + ", ".join(f"{k}={v}" for k, v in arch.items())
        + ". Any :class:`MAE` argument can be overridden, e.g. ``img_size=32, patch_size=4``."
    )
    return build


# The paper defines B, L and H with a 512-d, 8-block decoder. Tiny and Small are ours: a
# 256-d, 4-block decoder keeps the decoder from costing many times the encoder.
SMALL_DECODER = {"decoder_embed_dim": 256, "decoder_depth": 4, "decoder_num_heads": 8}
mae_vit_tiny_patch16 = _factory(
    "mae_vit_tiny_patch16", patch_size=16, **VIT_SIZES["vit_tiny"], **SMALL_DECODER
)
mae_vit_small_patch16 = _factory(
    "mae_vit_small_patch16", patch_size=16, **VIT_SIZES["vit_small"], **SMALL_DECODER
)
mae_vit_base_patch16 = _factory("mae_vit_base_patch16", patch_size=16, **VIT_SIZES["vit_base"])
mae_vit_large_patch16 = _factory("mae_vit_large_patch16", patch_size=16, **VIT_SIZES["vit_large"])
mae_vit_huge_patch14 = _factory("mae_vit_huge_patch14", patch_size=14, **VIT_SIZES["vit_huge"])
