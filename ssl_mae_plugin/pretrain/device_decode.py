"""JPEG decoding on the training device (``data.decode: device``): nvJPEG on a GPU.

For views that are a random-resized crop and a flip (MAE's), the loader processes only
read each image's bytes and header; the main process hands a batch's JPEGs to
``torchvision.io.decode_jpeg`` on the training device (one batched nvJPEG call on a GPU),
and the views are made there: each sample's box drawn from its seed by the rule of
:func:`~ssl_mae_plugin.pretrain.augment.crop_boxes` on its own size, cut out, resized to the
output side (bicubic with antialiasing, as PIL resizes), flipped and normalised. A GPU then
gets its images without the CPU decoding them at full size.

What the device decoder does not take is decoded on the CPU, so no image is lost:

- by the header, in the loader processes: anything but an RGB (YCbCr) or grayscale JPEG,
  e.g. a CMYK JPEG or PNG data behind a ``.JPEG`` name, is decoded by PIL there;
- by the decoder, in the main process: when the batched call fails, each JPEG is decoded
  alone on the device, and one the device still rejects is decoded by PIL;
- an image PIL cannot decode either follows ``data.on_bad_image``: ``error`` stops the run
  naming it; ``skip`` records it as the loaders do and puts another view of the batch in
  its place (the batch keeps its size).

On a CPU run the same path decodes with libjpeg-turbo in the main process, between
training steps, where ``data.decode: full`` decodes in parallel loader processes: it is
meant for GPUs (and tests the same code on the CPU).

torchvision 0.29 deprecates its image decoders in favour of TorchCodec; this is the one
place that calls them.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

from ssl_mae_plugin.data import (
    EncodedImages,
    LabelledSubset,
    Normalization,
    encoded_source,
    to_rgb,
)
from ssl_mae_plugin.pretrain.augment import FlipNormalize, crop_boxes
from ssl_mae_plugin.pretrain.sampling import sample_seed

logger = logging.getLogger(__name__)

DEVICE_JPEG_MODES = ("RGB", "L")  # PIL's modes of the JPEGs handed to the device decoder

# One sample: (bytes or CHW uint8 pixels, whether they are JPEG bytes, label, seed, name).
Payload = tuple[torch.Tensor, bool, int, int, str]


def jpeg_bytes_or_pixels(image: Image.Image) -> tuple[torch.Tensor, bool]:
    """The file's bytes if the device decoder takes it (by its header), else its RGB pixels.

    Args:
        image: Opened by PIL, not decoded yet.

    Returns:
        ``(1-D uint8 bytes, True)`` or ``([3, H, W] uint8 pixels, False)``.
    """
    if image.format == "JPEG" and image.mode in DEVICE_JPEG_MODES:
        image.fp.seek(0)
        return torch.frombuffer(bytearray(image.fp.read()), dtype=torch.uint8), True
    image.load()
    return pil_to_tensor(to_rgb(image)), False


class EncodedSamples(Dataset):
    """:data:`Payload` per ``(index, epoch)`` key of the training sampler.

    Args:
        images: An image folder or shards, or a class-balanced subset of one.
        seed: Run seed (each sample's seed derives from it, its epoch and its index).
    """

    def __init__(self, images: EncodedImages | LabelledSubset, seed: int = 0) -> None:
        self.source, self.indices = encoded_source(images, "device decoding")
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> Payload:
        index, epoch = key
        (data, is_jpeg), label, name = self.source.read_named(
            self.indices[index], jpeg_bytes_or_pixels
        )
        return data, is_jpeg, label, sample_seed(self.seed, epoch, index), name


def collate_payloads(batch: list[Payload]) -> list[Payload]:
    """Keep the samples as they are: their sizes differ, the device makes them one batch."""
    return batch


class DeviceDecodeViews:
    """MAE's views of batches of ``samples``, decoded and cropped on the training device.

    Args:
        samples: What the loader reads; its images' bad-image policy applies to what no
            decoder reads.
        size: Output side in pixels.
        normalization: Input normalisation.
        scale: Area fraction range of the crops (MAE: ``(0.2, 1)``).
    """

    def __init__(
        self,
        samples: EncodedSamples,
        size: int,
        normalization: Normalization,
        scale: tuple[float, float],
    ) -> None:
        self.samples, self.size, self.scale = samples, size, scale
        self.flip_normalize = FlipNormalize(normalization)

    def __call__(
        self, batch: list[Payload], device: torch.device
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[int]]:
        """``([views [N, 3, size, size]], labels [N], seeds)`` on ``device``."""
        pixels = self.decode(batch, device)
        order = _fill_skipped([image is not None for image in pixels])
        if order is None:
            raise RuntimeError(f"no readable image in a batch of {self.samples.source.root}")
        seeds = [seed for _, _, _, seed, _ in batch]
        images = [pixels[j] for j in order]
        heights = np.array([image.shape[1] for image in images])
        widths = np.array([image.shape[2] for image in images])
        boxes, flips = crop_boxes(seeds, heights, widths, self.scale)
        crops = torch.cat(
            [
                F.interpolate(
                    image[None, :, int(y1) : int(y2), int(x1) : int(x2)].float(),
                    size=(self.size, self.size),
                    mode="bicubic",
                    antialias=True,
                    align_corners=False,
                )
                for image, (x1, y1, x2, y2) in zip(images, boxes, strict=True)
            ]
        ).clamp_(0, 255)
        views = self.flip_normalize(crops, flips)
        labels = torch.tensor([batch[j][2] for j in order], device=device)
        return [views], labels, seeds

    def decode(self, batch: list[Payload], device: torch.device) -> list[torch.Tensor | None]:
        """``[3, H, W]`` uint8 pixels on ``device`` per sample; ``None`` where skipped."""
        pixels: list[Any] = [
            None if is_jpeg else data.to(device, non_blocking=True) for data, is_jpeg, *_ in batch
        ]
        jpegs = [i for i, (_, is_jpeg, *_) in enumerate(batch) if is_jpeg]
        if not jpegs:
            return pixels
        try:
            decoded = _decode_on(device, [batch[i][0] for i in jpegs])
        except RuntimeError:  # nvJPEG names no file: find which, decode the rest
            decoded = [self._decode_alone(batch[i], device) for i in jpegs]
        for i, image in zip(jpegs, decoded, strict=True):
            pixels[i] = image
        return pixels

    def _decode_alone(self, sample: Payload, device: torch.device) -> torch.Tensor | None:
        data, _, _, _, name = sample
        try:
            return _decode_on(device, [data])[0]
        except RuntimeError as device_error:
            logger.debug("%s: the device decoder failed (%s); trying PIL", name, device_error)
        try:
            with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
                image.load()
                return pil_to_tensor(to_rgb(image)).to(device)
        except (OSError, SyntaxError, ValueError) as error:
            self.samples.source.reject(name, error)
            return None


def _fill_skipped(readable: list[bool]) -> list[int] | None:
    """Which sample fills each place of a batch; ``None`` if none is readable.

    A readable sample fills its own place, a skipped one's goes to the next readable one
    (wrapping around).
    """
    if all(readable):
        return list(range(len(readable)))
    if not any(readable):
        return None
    order, following = [0] * len(readable), readable.index(True)  # the first, for the end
    for i in reversed(range(len(readable))):
        following = i if readable[i] else following
        order[i] = following
    return order


def _decode_on(device: torch.device, data: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return decode_jpeg(list(data), mode=ImageReadMode.RGB, device=device)
