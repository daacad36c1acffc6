"""Reconstruction figures from checkpoints on disk (the ``ssl-mae visualize`` command)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from ssl_mae_plugin.data import IMAGENET_NORM, Normalization, eval_transform, to_rgb
from ssl_mae_plugin.mae.checkpoints import read_official
from ssl_mae_plugin.mae.masking import check_mask_ratio
from ssl_mae_plugin.mae.model import MAE
from ssl_mae_plugin.mae.visualize import save_reconstruction_figure
from ssl_mae_plugin.training import load_pretrained


def load_mae(checkpoint: str | Path) -> tuple[MAE, Normalization]:
    """An MAE and its input normalisation from an ssl-mae ``.ckpt`` or an official ``.pth``.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it holds no MAE.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".ckpt":
        method, info = load_pretrained(path)
        model = getattr(method, "model", None)
        if not isinstance(model, MAE):
            raise ValueError(f"{path} holds a {method.name!r} model, not an MAE")
        mean, std = info.get("mean"), info.get("std")
        normalization = Normalization(tuple(mean), tuple(std)) if mean and std else IMAGENET_NORM
        return model.eval(), normalization
    state_dict, config = read_official(path)
    return MAE.from_official(state_dict, **config).eval(), IMAGENET_NORM


def load_images(paths: list[str], image_size: int, normalization: Normalization) -> torch.Tensor:
    """Images resized and center-cropped to ``image_size`` and normalised, ``[N, 3, H, W]``.

    Raises:
        FileNotFoundError: Naming a missing file.
        ValueError: Naming a file that is not a readable image.
    """
    transform = eval_transform(image_size, normalization)
    tensors = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as image:
                image.load()
                tensors.append(transform(to_rgb(image)))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"not a readable image: {path} ({error})") from error
    return torch.stack(tensors)


def load_inputs(
    checkpoint: str | Path, images: list[str], mask_ratio: float | None = None
) -> tuple[MAE, Normalization, torch.Tensor]:
    """Check and load everything :func:`render` needs.

    Raises:
        FileNotFoundError: For a missing checkpoint or image.
        ValueError: For a bad mask ratio, a non-MAE checkpoint or an unreadable image.
    """
    if mask_ratio is not None:
        check_mask_ratio(mask_ratio)
    model, normalization = load_mae(checkpoint)
    if model.img_size[0] != model.img_size[1]:
        raise ValueError(f"visualize needs a square model, got img_size={model.img_size}")
    return model, normalization, load_images(images, model.img_size[0], normalization)


def render(
    model: MAE,
    normalization: Normalization,
    batch: torch.Tensor,
    out: str | Path,
    mask_ratio: float | None = None,
    seed: int = 0,
    title: str = "",
) -> Path:
    """Write the four-panel reconstruction figure of a normalised batch."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(batch.shape[0], model.num_patches, generator=generator)
    return save_reconstruction_figure(
        model,
        batch,
        out,
        mean=normalization.mean,
        std=normalization.std,
        mask_ratio=mask_ratio,
        noise=noise,
        title=f"{title}: mask ratio {mask_ratio or model.mask_ratio:.2f}",
    )
