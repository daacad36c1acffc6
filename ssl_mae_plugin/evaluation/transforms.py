"""Image transforms of the MAE linear-probe and fine-tuning recipes, and a dataset wrapper.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: RandAugment, 2019, https://arxiv.org/abs/1909.13719
- [2]: Random Erasing Data Augmentation, 2017, https://arxiv.org/abs/1708.04896
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from timm.data import create_transform
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ssl_mae_plugin.data import IMAGENET_NORM, Normalization


def to_pil(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image or a ``[C, H, W]`` tensor (uint8, or float in [0, 1])."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    if isinstance(image, torch.Tensor):
        return TF.to_pil_image(image).convert("RGB")
    raise TypeError(f"expected a PIL image or a tensor, got {type(image).__name__}")


def probe_train_transform(
    image_size: int, normalization: Normalization = IMAGENET_NORM
) -> T.Compose:
    """The linear probe's weak augmentation: bicubic RandomResizedCrop + horizontal flip [0]."""
    return T.Compose(
        [
            T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean=normalization.mean, std=normalization.std),
        ]
    )


def finetune_train_transform(
    image_size: int,
    normalization: Normalization = IMAGENET_NORM,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    re_prob: float = 0.25,
) -> T.Compose:
    """Fine-tuning augmentation of facebookresearch/mae [0], built by timm.

    RandomResizedCrop (bicubic) + flip + RandAugment [1] + random erasing [2]
    (``re_mode="pixel"``), no colour jitter.
    """
    timm_transform = create_transform(
        input_size=image_size,
        is_training=True,
        color_jitter=None,
        auto_augment=auto_augment,
        interpolation="bicubic",
        re_prob=re_prob,
        re_mode="pixel",
        re_count=1,
        mean=normalization.mean,
        std=normalization.std,
    )
    return timm_transform


class TransformedDataset(Dataset):
    """``(transform(image), int(label))`` for each ``(image, label, ...)`` of a dataset.

    Pass datasets that return raw images (PIL, or tensors in [0, 1] / uint8), without their
    own normalising transform; images reach ``transform`` as PIL RGB images.

    Args:
        dataset: A torchvision-style dataset.
        transform: Applied to the image.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.dataset[index]
        return self.transform(to_pil(sample[0])), int(sample[1])
