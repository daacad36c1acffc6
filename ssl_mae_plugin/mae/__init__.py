"""The MAE method's own parts: masking, patches, position tables, decoder, loss, model.

Pure torch + timm: no Lightning, no lightly, no matplotlib, nothing else of this package.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from ssl_mae_plugin.mae.decoder import MAEDecoder
from ssl_mae_plugin.mae.encoder import VIT_SIZES, vit_encoder
from ssl_mae_plugin.mae.factories import (
    MAE_FACTORIES,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch16,
    mae_vit_tiny_patch16,
)
from ssl_mae_plugin.mae.loss import masked_mse_loss, normalize_patches
from ssl_mae_plugin.mae.masking import noise_from_seeds, num_kept, random_masking
from ssl_mae_plugin.mae.model import MAE, MAEOutput
from ssl_mae_plugin.mae.patches import patchify, unpatchify
from ssl_mae_plugin.mae.pos_embed import sincos_2d

__all__ = [
    "MAE",
    "MAE_FACTORIES",
    "VIT_SIZES",
    "MAEDecoder",
    "MAEOutput",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch16",
    "mae_vit_tiny_patch16",
    "masked_mse_loss",
    "noise_from_seeds",
    "normalize_patches",
    "num_kept",
    "patchify",
    "random_masking",
    "sincos_2d",
    "unpatchify",
    "vit_encoder",
]
