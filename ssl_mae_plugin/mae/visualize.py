"""Reconstruction figures as in the official MAE demo.

Four panels per image: original, masked, reconstruction, and the reconstruction with the
visible patches pasted back.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from matplotlib.figure import Figure

from ssl_mae_plugin.mae.model import MAE
from ssl_mae_plugin.mae.patches import patchify, unpatchify

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PANEL_TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
NORM_PIX_NOTE = "norm-pix: predictions un-normalised with each target patch's own mean/variance"


class Panels(NamedTuple):
    """The four panels, each ``[N, C, H, W]`` in normalised input space."""

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pasted: torch.Tensor


@torch.no_grad()
def reconstruction_panels(
    model: MAE,
    images: torch.Tensor,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
) -> Panels:
    """Run the model once and assemble the four demo panels.

    Removed patches are zero in normalised space in the "masked" panel (the dataset mean
    colour once un-normalised). For a norm-pix model each predicted patch is mapped back to
    pixels with the mean and unbiased variance of the true patch, as the targets were built.

    Args:
        model: A trained (or untrained) :class:`MAE`.
        images: ``[N, C, H, W]`` normalised images.
        mask_ratio: Fraction of patches to remove; the model's default when omitted.
        noise: Optional ``[N, L]`` masking noise.

    Returns:
        :class:`Panels` in normalised input space.
    """
    was_training = model.training
    model.eval()
    out = model(images, mask_ratio=mask_ratio, noise=noise)
    model.train(was_training)

    pred = out.pred.float()
    if model.norm_pix_loss:
        target = patchify(images, model.patch_size)
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1e-6) ** 0.5 + mean
    reconstruction = unpatchify(pred, model.patch_size, model.grid_size, model.in_chans)
    pixel_mask = out.mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1])  # [N, L, p*p*C]
    pixel_mask = unpatchify(pixel_mask, model.patch_size, model.grid_size, model.in_chans)
    return Panels(
        original=images,
        masked=images * (1 - pixel_mask),
        reconstruction=reconstruction,
        pasted=images * (1 - pixel_mask) + reconstruction * pixel_mask,
    )


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize(mean, std)`` and clip to ``[0, 1]``; returns ``[N, H, W, C]``."""
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images.cpu() * std_t + mean_t).clamp(0, 1).permute(0, 2, 3, 1)


def save_reconstruction_figure(
    model: MAE,
    images: torch.Tensor,
    path: str | Path,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Save a grid with one row per image and the four demo panels as columns.

    Args:
        model: The MAE to visualise.
        images: ``[N, C, H, W]`` images normalised with ``mean`` and ``std``.
        path: Where to write the PNG; parent folders are created.
        mean: Per-channel mean of the input normalisation.
        std: Per-channel standard deviation of the input normalisation.
        mask_ratio: Fraction of patches to remove; the model's default when omitted.
        noise: Optional ``[N, L]`` masking noise.
        title: Figure title; the norm-pix note is appended for norm-pix models.

    Returns:
        The path written.
    """
    panels = reconstruction_panels(model, images, mask_ratio=mask_ratio, noise=noise)
    columns = [denormalize(panel, mean, std) for panel in panels]
    rows = images.shape[0]
    fig = Figure(figsize=(8, 2 * rows + 0.6))
    axes = fig.subplots(rows, 4, squeeze=False)
    for row in range(rows):
        for col, column in enumerate(columns):
            ax = axes[row][col]
            picture = column[row].numpy()
            if picture.shape[-1] == 1:
                ax.imshow(picture[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(PANEL_TITLES[col], fontsize=9)
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    lines = [title or f"MAE reconstructions, mask ratio {ratio:.2f}"]
    if model.norm_pix_loss:
        lines.append(NORM_PIX_NOTE)
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
