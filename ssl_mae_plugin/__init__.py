"""ssl-mae-plugin: Masked Autoencoders (He et al., 2021) as a method for lightly.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

import os
import sys

if "torch" not in sys.modules:
    # Waiting OpenMP threads sleep instead of spinning, so that data-loader workers sharing
    # the cores are not starved (measured: +30 % MAE images/s on 2 cores, see the README).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ssl_mae_plugin.mae import (
    MAE,
    MAEOutput,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch16,
    mae_vit_tiny_patch16,
    masked_mse_loss,
    patchify,
    random_masking,
    unpatchify,
)
from ssl_mae_plugin.methods.registry import get_method, list_methods, register_method

__version__ = "0.1.0"

__all__ = [
    "MAE",
    "MAEOutput",
    "get_method",
    "list_methods",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch16",
    "mae_vit_tiny_patch16",
    "masked_mse_loss",
    "patchify",
    "random_masking",
    "register_method",
    "unpatchify",
]
