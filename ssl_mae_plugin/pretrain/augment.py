"""MAE's augmentation on the training device, for small datasets kept in memory as uint8.

``RandomResizedCrop`` (scale ``(0.2, 1)``, ratio ``(3/4, 4/3)``) + horizontal flip +
normalisation, as lightly's ``MAETransform``, but for a whole batch at once: crop boxes
are drawn on the host from each sample's seed (vectorised, the same sampling rule as
torchvision's ``RandomResizedCrop.get_params``), the crops are resampled on the device by
``torchvision.ops.roi_align`` (bilinear, 2 x 2 samples per output pixel, where the PIL
pipeline is bicubic), then flipped and normalised. No decoding and no per-image Python on
the hot path, so a GPU is not kept waiting by the CPU.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import roi_align

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.mae.masking import MASK_STREAM, uniform_from_seeds

CROP_TRIES = 10  # as torchvision
CROP_STREAM = MASK_STREAM + 1  # independent of the sample's mask noise


def crop_boxes(
    seeds: Sequence[int],
    height: int | np.ndarray,
    width: int | np.ndarray,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[np.ndarray, np.ndarray]:
    """Random-resized-crop boxes and flips, one per seed.

    Ten tries of an area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``;
    the first crop that fits is placed uniformly, else the central crop of the clamped
    ratio (torchvision's rule).

    Args:
        seeds: One seed per image.
        height: The images' height in pixels: one for all, or one per seed.
        width: Their width, the same.
        scale: Area fraction range of the crops.
        ratio: Aspect ratio range of the crops.

    Returns:
        ``[N, 4]`` float boxes ``(x1, y1, x2, y2)`` in pixels and ``[N]`` bool flips.
    """
    u = uniform_from_seeds(
        seeds, 2 * CROP_TRIES + 3, stream=CROP_STREAM
    )  # area, ratio x 10; i, j, flip
    rows = np.arange(len(u))
    height = np.broadcast_to(np.asarray(height, dtype=np.float64), rows.shape)
    width = np.broadcast_to(np.asarray(width, dtype=np.float64), rows.shape)
    area = (height * width)[:, None]
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0 : 2 * CROP_TRIES : 2])
    aspect = np.exp(log_low + (log_high - log_low) * u[:, 1 : 2 * CROP_TRIES : 2])
    w = np.rint(np.sqrt(target * aspect))
    h = np.rint(np.sqrt(target / aspect))
    fits = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])  # [N, tries]
    first = np.argmax(fits, axis=1)
    found = fits[rows, first]
    w, h = w[rows, first], h[rows, first]
    top = np.floor(u[:, -3] * (height - h + 1))
    left = np.floor(u[:, -2] * (width - w + 1))

    in_ratio = width / height  # the fallback: a central crop of the clamped ratio
    fallback_w = np.where(in_ratio > ratio[1], np.rint(height * ratio[1]), width)
    fallback_h = np.where(in_ratio < ratio[0], np.rint(width / ratio[0]), height)
    w = np.where(found, w, fallback_w)
    h = np.where(found, h, fallback_h)
    top = np.where(found, top, (height - fallback_h) // 2)
    left = np.where(found, left, (width - fallback_w) // 2)
    boxes = np.stack([left, top, left + w, top + h], axis=1)
    return boxes, u[:, -1] < 0.5


class FlipNormalize:
    """The rest of MAE's view after the crop, on the crops' device: flip the chosen ones, normalise.

    Args:
        normalization: Input normalisation.
    """

    def __init__(self, normalization: Normalization) -> None:
        self.mean = torch.tensor(normalization.mean).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(normalization.std).view(1, -1, 1, 1) * 255
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, crops: torch.Tensor, flips: np.ndarray) -> torch.Tensor:
        """``crops`` ([N, C, H, W] float, 0..255) flipped where ``flips``, normalised in place."""
        device = crops.device
        if device not in self._on_device:  # copied to the device once, not every batch
            self._on_device[device] = (self.mean.to(device), self.std.to(device))
        mean, std = self._on_device[device]
        flipped = torch.from_numpy(np.flatnonzero(flips)).to(device)
        crops[flipped] = crops[flipped].flip(-1)
        return crops.sub_(mean).div_(std)


class DeviceCropFlip:
    """Batched ``RandomResizedCrop`` + flip + normalise of uint8 images on their device.

    Args:
        size: Output side in pixels.
        normalization: Input normalisation.
        scale: Area fraction range of the crops (MAE: ``(0.2, 1)``).
    """

    def __init__(
        self, size: int, normalization: Normalization, scale: tuple[float, float] = (0.2, 1.0)
    ) -> None:
        self.size = size
        self.scale = scale
        self.flip_normalize = FlipNormalize(normalization)

    def __call__(self, images: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """``[N, C, size, size]`` normalised views of ``[N, C, H, W]`` uint8 images."""
        n, _, height, width = images.shape
        boxes, flips = crop_boxes(seeds, height, width, self.scale)
        rois = torch.cat(
            [torch.arange(n, dtype=torch.float32)[:, None], torch.from_numpy(boxes).float()],
            dim=1,
        ).to(images.device)
        crops = roi_align(
            images.float(), rois, output_size=self.size, sampling_ratio=2, aligned=True
        )  # [N, C, size, size], 0..255
        return self.flip_normalize(crops, flips)


def _stack_uint8(batch: list[tuple[object, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = [np.asarray(image, dtype=np.uint8) for image, _ in batch]
    shapes = {p.shape for p in pixels}
    if len(shapes) != 1:
        raise ValueError(f"data.in_memory needs images of one size, found {sorted(shapes)}")
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)  # [B, 3, H, W]
    return images, torch.tensor([label for _, label in batch])


def load_uint8(dataset: Dataset, num_workers: int = 0) -> torch.Tensor:
    """Decode a whole dataset of RGB PIL images into one ``[N, 3, H, W]`` uint8 tensor.

    Raises:
        ValueError: If the images do not all have the same size.
    """
    loader = DataLoader(dataset, batch_size=256, num_workers=num_workers, collate_fn=_stack_uint8)
    parts = [images for images, _ in loader]
    sizes = {tuple(part.shape[1:]) for part in parts}
    if len(sizes) != 1:
        raise ValueError(f"data.in_memory needs images of one size, found {sorted(sizes)}")
    return torch.cat(parts)
