"""MAE factories by ViT size: ``mae_vit_base_patch16(img_size=32, patch_size=4)`` and kin.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ssl_mae_plugin.mae.encoder import VIT_SIZES
from ssl_mae_plugin.mae.model import MAE

# The paper defines B, L and H with a 512-d, 8-block decoder [0]. Tiny and Small are ours:
# a 256-d, 4-block decoder keeps the decoder from costing many times the encoder.
SMALL_DECODER = {"decoder_embed_dim": 256, "decoder_depth": 4, "decoder_num_heads": 8}
PAPER_DECODER = {"decoder_embed_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16}


def _factory(name: str, **arch: Any) -> Callable[..., MAE]:
    def build(**overrides: Any) -> MAE:
        return MAE(**{**arch, **overrides})

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"MAE with the {name.removeprefix('mae_')} architecture: "
        + ", ".join(f"{k}={v}" for k, v in arch.items())
        + ". Any :class:`MAE` argument can be overridden, e.g. ``img_size=32, patch_size=4``."
    )
    return build


mae_vit_tiny_patch16 = _factory(
    "mae_vit_tiny_patch16", patch_size=16, **VIT_SIZES["vit_tiny"], **SMALL_DECODER
)
mae_vit_small_patch16 = _factory(
    "mae_vit_small_patch16", patch_size=16, **VIT_SIZES["vit_small"], **SMALL_DECODER
)
mae_vit_base_patch16 = _factory(
    "mae_vit_base_patch16", patch_size=16, **VIT_SIZES["vit_base"], **PAPER_DECODER
)
mae_vit_large_patch16 = _factory(
    "mae_vit_large_patch16", patch_size=16, **VIT_SIZES["vit_large"], **PAPER_DECODER
)
mae_vit_huge_patch14 = _factory(
    "mae_vit_huge_patch14", patch_size=14, **VIT_SIZES["vit_huge"], **PAPER_DECODER
)

# The factory of each ViT size, by the backbone names of recipes.
MAE_FACTORIES: dict[str, Callable[..., MAE]] = {
    "vit_tiny": mae_vit_tiny_patch16,
    "vit_small": mae_vit_small_patch16,
    "vit_base": mae_vit_base_patch16,
    "vit_large": mae_vit_large_patch16,
    "vit_huge": mae_vit_huge_patch14,
}
