"""What the official MAE demo shows, as tensors: original, masked, reconstruction, pasted.

Drawing needs matplotlib and lives outside the core:
``ssl_mae_plugin.mae.visualize.save_reconstruction_figure`` is re-exported lazily from
:mod:`ssl_mae_plugin.report.figures`.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from ssl_mae_plugin.mae.loss import denormalize_patches
from ssl_mae_plugin.mae.model import MAE
from ssl_mae_plugin.mae.patches import patchify, unpatchify

PANEL_TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
NORM_PIX_NOTE = "norm-pix: predictions un-normalised with each target patch's own mean/variance"


class Panels(NamedTuple):
    """The four panels, each ``[N, C, H, W]`` in normalised input space."""

    original: torch.Tensor
    masked: torch.Tensor
    reconstruction: torch.Tensor
    pasted: torch.Tensor


class ImageGrid(NamedTuple):
    """Images ready to draw: one row per image, one titled column per view.

    Attributes:
        title: The figure's title (lines separated by newlines).
        columns: Column title -> ``[N, H, W, C]`` float images in ``[0, 1]``.
    """

    title: str
    columns: dict[str, torch.Tensor]


@torch.no_grad()
def reconstruction_panels(
    model: MAE,
    images: torch.Tensor,
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
) -> Panels:
    """Run the model once (in eval mode) and assemble the four demo panels [0].

    Removed patches are zero in normalised space in the "masked" panel (the dataset mean
    colour once un-normalised). A norm-pix model's predictions are mapped back to pixels
    with each true patch's mean and variance, as its targets were built.
    """
    was_training = model.training
    model.eval()
    out = model(images, mask_ratio=mask_ratio, noise=noise)
    model.train(was_training)
    pred = out.pred.float()
    if model.norm_pix_loss:
        pred = denormalize_patches(pred, patchify(images, model.patch_size))
    shape = (model.patch_size, model.grid_size, model.in_chans)
    reconstruction = unpatchify(pred, *shape)
    pixel_mask = unpatchify(out.mask.unsqueeze(-1).expand(-1, -1, pred.shape[-1]), *shape)
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


def reconstruction_grid(
    model: MAE,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    mask_ratio: float | None = None,
    noise: torch.Tensor | None = None,
    title: str | None = None,
) -> ImageGrid:
    """The four panels of ``images`` (normalised with ``mean``/``std``) as an :class:`ImageGrid`.

    The title states the mask ratio and, for norm-pix models, how predictions were mapped
    back to pixels.
    """
    panels = reconstruction_panels(model, images, mask_ratio=mask_ratio, noise=noise)
    ratio = model.mask_ratio if mask_ratio is None else mask_ratio
    lines = [f"{title or 'MAE reconstructions'}: mask ratio {ratio:.2f}"]
    if model.norm_pix_loss:
        lines.append(NORM_PIX_NOTE)
    columns = {
        name: denormalize(panel, mean, std)
        for name, panel in zip(PANEL_TITLES, panels, strict=True)
    }
    return ImageGrid(title="\n".join(lines), columns=columns)


def __getattr__(name: str) -> Any:
    if name == "save_reconstruction_figure":  # needs matplotlib: imported on first use
        from ssl_mae_plugin.report.figures import save_reconstruction_figure

        return save_reconstruction_figure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
