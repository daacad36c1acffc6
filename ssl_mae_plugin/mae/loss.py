"""Reconstruction loss on the removed patches only.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import torch


def normalize_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalisation of the target ("norm-pix" in [0]).

    Each patch is shifted by its mean and divided by ``sqrt(var + eps)`` with the unbiased
    variance, as in facebookresearch/mae.

    Args:
        target: ``[N, L, P]`` patch pixels.
        eps: Added to the variance.

    Returns:
        The normalised target, same shape.
    """
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    norm_pix_loss: bool = False,
) -> torch.Tensor:
    """Mean squared error averaged over removed patches only [0].

    Args:
        pred: ``[N, L, P]`` predicted patch pixels.
        target: ``[N, L, P]`` true patch pixels (see :func:`patchify`).
        mask: ``[N, L]``, 1 for removed patches, 0 for visible ones.
        norm_pix_loss: Normalise each target patch by its own mean and variance.

    Returns:
        Scalar loss: per-patch MSE, weighted by the mask, summed and divided by the mask sum.
    """
    if norm_pix_loss:
        target = normalize_patches(target)
    per_patch = (pred - target).pow(2).mean(dim=-1)  # [N, L]
    return (per_patch * mask).sum() / mask.sum()
