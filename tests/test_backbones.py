import pytest
import torch

from ssl_mae_plugin.backbones import build_backbone


@pytest.mark.parametrize(("name", "dim"), [("vit_tiny", 192), ("vit_small", 384)])
def test_named_vit_sizes(name, dim):
    model = build_backbone(name, image_size=32, patch_size=8, depth=1)
    assert model.num_features == dim and len(model.blocks) == 1
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    assert model.blocks[0].norm1.eps == 1e-6


def test_vit_overrides_and_bad_heads():
    model = build_backbone("vit_base", image_size=32, patch_size=16, depth=2, embed_dim=None)
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (768, 2, 12)
    with pytest.raises(ValueError, match="num_heads=5"):
        build_backbone("vit_tiny", image_size=32, patch_size=8, num_heads=5)
    with pytest.raises(ValueError, match="patch_size=5"):
        build_backbone("vit_tiny", image_size=32, patch_size=5)


def test_resnet_has_cifar_stem_for_small_images():
    small = build_backbone("resnet18", image_size=32)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    large = build_backbone("resnet18", image_size=96)
    assert large.conv1.stride == (2, 2)
    with pytest.raises(ValueError, match="only apply to ViT"):
        build_backbone("resnet18", image_size=32, depth=3)


def test_timm_names_and_unknown_names():
    model = build_backbone("vit_tiny_patch16_224", image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 192)
    with pytest.raises(ValueError, match="unknown backbone 'vit_enormous'"):
        build_backbone("vit_enormous", image_size=32)
