"""Reduced-size JPEG decoding for views that are a random-resized crop and a flip (MAE's).

A baseline JPEG decodes at 1/2, 1/4 or 1/8 of its size for a fraction of the work (the
inverse DCT is scaled: PIL's draft mode). A random-resized crop whose box on the source is
at least twice the output in both sides needs only the source at a reduced size. So the
box is drawn first, from the file's header size (torchvision's sampling rule, from the
sample's seeded RNG, exactly as ``RandomResizedCrop`` draws it), the file is then decoded
at the largest reduction that keeps the box at least the output size, and the box is
resampled (bicubic) from the reduced image. Where no reduction applies (small images,
small boxes, non-JPEG files), the view equals lightly's ``MAETransform``'s pixel for pixel.
Low-resolution pretraining on large photos (ImageNet at 128 px, or 224 px from 1000 px
photos) gains most; benchmarks/DECODING.md has the measured ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision.transforms as T
import torchvision.transforms.functional as F
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as LT
from PIL import Image
from torch.utils.data import Dataset

from ssl_mae_plugin.data import (
    EncodedImages,
    LabelledSubset,
    Normalization,
    encoded_source,
    to_rgb,
)

REDUCTIONS = (8, 4, 2)  # the scales a JPEG decoder offers, largest first


def reduction(box_side: float, output_size: int) -> int:
    """The largest JPEG reduction (8, 4, 2, else 1) that keeps ``box_side`` >= the output."""
    return next((k for k in REDUCTIONS if box_side / k >= output_size), 1)


class ReducedDecodeCrops(Dataset):
    """``(crop resized to output_size, label)`` of encoded images, decoding only what is needed.

    Args:
        images: An image folder or shards, or a class-balanced subset of one.
        output_size: Side of the square crops.
        scale: Area fraction range of the crop box (MAE: 0.2 to 1).
        ratio: Aspect ratio range of the box.
    """

    def __init__(
        self,
        images: EncodedImages | LabelledSubset,
        output_size: int,
        scale: tuple[float, float],
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.files, self.indices = encoded_source(images, "reduced decoding")
        self.classes, self.targets = list(images.classes), list(images.targets)
        self.output_size, self.scale, self.ratio = output_size, scale, ratio

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.files.read(self.indices[index], self.crop)

    def crop(self, image: Image.Image) -> Image.Image:
        """Draw the box on the header's size, decode as small as it allows, resample it."""
        width, height = image.size
        top, left, box_height, box_width = T.RandomResizedCrop.get_params(
            image, list(self.scale), list(self.ratio)
        )
        size = [self.output_size, self.output_size]
        factor = reduction(min(box_height, box_width), self.output_size)
        if factor > 1:  # PIL picks the largest scale whose size is >= the one asked for
            image.draft(None, (width // factor, height // factor))
        image.load()
        rgb = to_rgb(image)
        if rgb.size == (width, height):  # not reduced: torchvision's own crop + resize
            return F.resized_crop(
                rgb, top, left, box_height, box_width, size, T.InterpolationMode.BICUBIC
            )
        x, y = rgb.width / width, rgb.height / height
        box = (left * x, top * y, (left + box_width) * x, (top + box_height) * y)
        return rgb.resize((self.output_size, self.output_size), Image.Resampling.BICUBIC, box=box)


def flip_and_normalize(normalization: Normalization) -> Callable[[Image.Image], object]:
    """The rest of ``MAETransform`` after its crop: flip, to tensor, normalise.

    Built from lightly's torchvision compatibility layer, as ``MAETransform`` is, so that
    the tensors are the same to the bit.
    """
    return LT.Compose(
        [
            LT.RandomHorizontalFlip(),
            LT.ToTensor(),
            LT.Normalize(mean=list(normalization.mean), std=list(normalization.std)),
        ]
    )
