from functools import partial

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import TensorDataset


def tiny_vit(**overrides) -> VisionTransformer:
    config = dict(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=3,
        num_heads=2,
        num_classes=0,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    return VisionTransformer(**{**config, **overrides})


class ClsBackbone(nn.Module):
    """The backbone protocol over a timm ViT: the normalised cls token."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.vit = vit

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(images)[:, 0]


@pytest.fixture
def image_dataset():
    """64 random 16x16 RGB images in [0, 1] with 2 labels, as a raw (untransformed) dataset."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(64, 3, 16, 16, generator=generator)
    labels = torch.arange(64) % 2
    return TensorDataset(images, labels)
