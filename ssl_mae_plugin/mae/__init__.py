"""The MAE method's own parts: masking, patches, position tables, decoder, loss, model.

Pure torch + timm; no Lightning.
"""

from ssl_mae_plugin.mae.decoder import MAEDecoder
from ssl_mae_plugin.mae.loss import masked_mse_loss, normalize_patches
from ssl_mae_plugin.mae.masking import random_masking
from ssl_mae_plugin.mae.model import (
    MAE,
    MAEOutput,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch16,
    mae_vit_tiny_patch16,
)
from ssl_mae_plugin.mae.patches import patchify, unpatchify
from ssl_mae_plugin.mae.pos_embed import sincos_2d

__all__ = [
    "MAE",
    "MAEDecoder",
    "MAEOutput",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch16",
    "mae_vit_tiny_patch16",
    "masked_mse_loss",
    "normalize_patches",
    "patchify",
    "random_masking",
    "sincos_2d",
    "unpatchify",
]
