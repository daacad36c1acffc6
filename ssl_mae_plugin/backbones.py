"""Backbones for the SSL methods: timm ViTs of any size, image and patch size, and ResNets.

Every backbone maps ``[N, C, H, W]`` images to ``[N, D]`` features and has
``num_features`` (``D``).
"""

from __future__ import annotations

from typing import Any

import timm
import torchvision
from torch import nn

from ssl_mae_plugin.mae.encoder import VIT_SIZES, vit_encoder

RESNETS = ("resnet18", "resnet50")
CONVNET_PREFIXES = ("resne", "convnext", "regnet", "efficientnet", "mobilenet")
CIFAR_STEM_MAX_SIZE = 64


def is_vit(name: str) -> bool:
    """Whether ``name`` is one of our ViT sizes."""
    return name in VIT_SIZES


def is_convnet(name: str) -> bool:
    """Whether a backbone name is a ConvNet (some methods use other recipes for them)."""
    return name in RESNETS or name.startswith(CONVNET_PREFIXES)


def available_backbones() -> list[str]:
    """Our named backbones; any timm model name is accepted too."""
    return [*VIT_SIZES, *RESNETS]


def is_known_backbone(name: str) -> bool:
    """Whether :func:`build_backbone` knows ``name`` (ours or a timm model)."""
    return name in available_backbones() or timm.is_model(name)


def build_resnet(name: str, image_size: int) -> nn.Module:
    """A torchvision ResNet without its classifier; a CIFAR stem for small images.

    For images of at most 64 pixels the 7x7/2 stem and the max-pool are replaced by a
    3x3/1 convolution, as is usual for CIFAR.
    """
    model = getattr(torchvision.models, name)(weights=None)
    if image_size <= CIFAR_STEM_MAX_SIZE:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    model.num_features = model.fc.in_features
    model.fc = nn.Identity()
    return model


def build_backbone(
    name: str,
    image_size: int,
    patch_size: int = 16,
    in_chans: int = 3,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: ``vit_tiny|vit_small|vit_base|vit_large|vit_huge|resnet18|resnet50`` or a
            timm model name.
        image_size: Input size.
        patch_size: Patch size of our ViTs.
        in_chans: Input channels.
        embed_dim: Width of our ViTs; the named size's when ``None``.
        depth: Blocks of our ViTs; the named size's when ``None``.
        num_heads: Heads of our ViTs; the named size's when ``None``.
        **timm_kwargs: Options of timm's ``VisionTransformer`` for our ViTs (e.g.
            ``dynamic_img_size=True``, ``drop_path_rate=0.1``).

    Returns:
        A module mapping images to ``[N, num_features]`` features.

    Raises:
        ValueError: For an unknown name or an image size the backbone cannot take.
    """
    size = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    if is_vit(name):
        size = {**VIT_SIZES[name], **{k: v for k, v in size.items() if v is not None}}
        return vit_encoder(image_size, patch_size, in_chans=in_chans, **size, **timm_kwargs)
    if any(value is not None for value in size.values()):
        raise ValueError(f"embed_dim/depth/num_heads only apply to ViT backbones, not {name!r}")
    if name in RESNETS:
        return build_resnet(name, image_size)
    if not is_known_backbone(name):
        raise ValueError(
            f"unknown backbone {name!r}; choose from {available_backbones()} or a timm model name"
        )
    return create_timm_model(name, image_size, in_chans=in_chans)


def create_timm_model(name: str, image_size: int, num_classes: int = 0, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes, **kwargs)``, at ``image_size`` if it takes one."""
    try:  # ViT-like timm models take the input size, convolutional ones do not
        return timm.create_model(name, num_classes=num_classes, img_size=image_size, **kwargs)
    except TypeError:
        return timm.create_model(name, num_classes=num_classes, **kwargs)
