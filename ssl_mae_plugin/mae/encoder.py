"""The MAE encoder: a timm ``VisionTransformer`` of a named size, with MAE's conventions.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Training data-efficient image transformers (DeiT), 2021, https://arxiv.org/abs/2012.12877
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models.vision_transformer import VisionTransformer
from torch import nn

# The ViT sizes of the ViT and DeiT papers [1]; B, L and H are the encoders of [0].
VIT_SIZES: dict[str, dict[str, int]] = {
    "vit_tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "vit_small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
    "vit_base": {"embed_dim": 768, "depth": 12, "num_heads": 12},
    "vit_large": {"embed_dim": 1024, "depth": 24, "num_heads": 16},
    "vit_huge": {"embed_dim": 1280, "depth": 32, "num_heads": 16},
}

LAYER_NORM_EPS = 1e-6  # the eps of facebookresearch/mae
norm_layer = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)


def check_grid(img_size: tuple[int, int], patch_size: int) -> None:
    """Raise ``ValueError`` unless both sides of ``img_size`` are multiples of ``patch_size``."""
    if img_size[0] % patch_size or img_size[1] % patch_size:
        raise ValueError(f"img_size={img_size} is not divisible by patch_size={patch_size}")


def vit_encoder(
    img_size: int | tuple[int, int],
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    in_chans: int = 3,
    mlp_ratio: float = 4.0,
    norm_eps: float = LAYER_NORM_EPS,
    **timm_kwargs: Any,
) -> VisionTransformer:
    """A headless timm ViT as MAE builds it: qkv bias, LayerNorm eps 1e-6, cls token [0].

    ``norm_eps`` sets another LayerNorm eps (e.g. transformers' 1e-12 for converted weights).
    ``timm_kwargs`` go to timm's ``VisionTransformer`` (e.g. ``dynamic_img_size=True``,
    ``weight_init="skip"``). The result returns the normalised cls token as its feature.

    Raises:
        ValueError: If the image does not tile into patches or the width into heads.
    """
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    check_grid(size, patch_size)
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    return VisionTransformer(
        img_size=size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=0,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=norm_eps),
        **timm_kwargs,
    )
