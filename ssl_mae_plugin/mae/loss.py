"""Reconstruction loss on the removed patches only.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _patch_moments(target: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    # Two reductions: faster than torch.var_mean (Welford) on the CPU, and the same numbers.
    mean = target.mean(dim=-1, keepdim=True)
    return mean, (target.var(dim=-1, keepdim=True) + eps) ** 0.5


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
    mean, scale = _patch_moments(target, eps)
    return (target - mean) / scale


def denormalize_patches(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Map norm-pix predictions back to pixels with each true patch's mean and scale.

    The inverse of :func:`normalize_patches` for the patches of ``target``; used to show
    what a norm-pix model predicts.
    """
    mean, scale = _patch_moments(target, eps)
    return pred * scale + mean


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


def removed_patches_mse(
    pred: torch.Tensor,
    target: torch.Tensor,
    norm_pix_loss: bool = False,
) -> torch.Tensor:
    """:func:`masked_mse_loss` when only the removed patches are given.

    Every patch has the same number of values, so the mean of the per-patch MSEs over the
    removed patches is the mean over all their values: with ``pred`` and ``target``
    restricted to the removed patches (in any common order) this equals
    ``masked_mse_loss`` on the full tensors and the mask [0].

    Args:
        pred: ``[N, K, P]`` predictions for the ``K`` removed patches of each image.
        target: ``[N, K, P]`` their true pixels (see :func:`patchify`).
        norm_pix_loss: Normalise each target patch by its own mean and variance.

    Returns:
        Scalar loss.
    """
    if norm_pix_loss:
        target = normalize_patches(target)
    return F.mse_loss(pred, target)  # one fused kernel; computed in the promoted dtype
