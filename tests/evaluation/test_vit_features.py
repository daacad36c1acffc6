import copy

import pytest
import torch
from torch import nn

from ssl_mae_plugin import MAE
from ssl_mae_plugin.backbones import build_backbone
from ssl_mae_plugin.evaluation.classifier import FitOptions
from ssl_mae_plugin.evaluation.linear import augmented_linear_probe
from ssl_mae_plugin.evaluation.vit_features import (
    OWN_FEATURES,
    EveryBlock,
    ViTFeatures,
    block_indices,
    feature_view,
)

from .conftest import tiny_vit


def _tokens_by_hand(vit, images, upto: int) -> torch.Tensor:
    """The normalised tokens after block ``upto`` of a ViT cut after that block."""
    truncated = copy.deepcopy(vit)
    truncated.blocks = nn.Sequential(*list(vit.blocks)[: upto + 1])
    return truncated.forward_features(images)  # patch embed, pos, blocks, final norm


@pytest.fixture
def vit_and_images():
    torch.manual_seed(0)
    vit = tiny_vit(depth=5).eval()
    return vit, torch.randn(4, 3, 16, 16)


def test_last_n_blocks_concatenate_each_blocks_normalised_cls_token(vit_and_images):
    vit, images = vit_and_images
    features = ViTFeatures(vit, pool="cls", blocks=4).forward_features(images)
    by_hand = torch.cat([_tokens_by_hand(vit, images, b)[:, 0] for b in range(1, 5)], dim=1)
    assert features.shape == (4, 4 * 32)
    torch.testing.assert_close(features, by_hand)


def test_listed_blocks_with_cls_and_mean_pooling(vit_and_images):
    vit, images = vit_and_images
    features = ViTFeatures(vit, pool="cls+mean", blocks=[0, -1]).forward_features(images)
    parts = []
    for block in (0, 4):
        tokens = _tokens_by_hand(vit, images, block)
        parts += [tokens[:, 0], tokens[:, 1:].mean(dim=1)]
    torch.testing.assert_close(features, torch.cat(parts, dim=1))


def test_every_block_selection_equals_a_truncated_forward(vit_and_images):
    vit, images = vit_and_images
    sweep = EveryBlock(vit)
    features = sweep.forward_features(images)
    assert features.shape == (4, 5 * 2 * 32)
    for block in range(5):
        tokens = _tokens_by_hand(vit, images, block)
        torch.testing.assert_close(sweep.select(features, block, "cls"), tokens[:, 0])
        torch.testing.assert_close(sweep.select(features, block, "mean"), tokens[:, 1:].mean(1))
        torch.testing.assert_close(
            sweep.select(features, block, "cls+mean"),
            torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1),
        )


def test_last_block_cls_and_mean_equal_the_mae_features():
    torch.manual_seed(0)
    mae = MAE(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
              decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2).eval()  # fmt: skip
    images = torch.randn(3, 3, 16, 16)
    for pool in ("cls", "mean"):
        view = ViTFeatures(mae.encoder, pool=pool)
        torch.testing.assert_close(
            view.forward_features(images), mae.forward_features(images, pool=pool)
        )


def test_feature_view_keeps_own_features_without_a_protocol_or_a_vit():
    class Model(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

    vit_model, resnet_model = Model(tiny_vit()), Model(build_backbone("resnet18", 32))
    assert feature_view(vit_model, None) == (vit_model, OWN_FEATURES)
    assert feature_view(resnet_model, "cls+mean", 4) == (resnet_model, OWN_FEATURES)
    view, described = feature_view(vit_model, "mean", 2)
    assert isinstance(view, ViTFeatures) and described == "mean, last 2 blocks of 3"
    assert feature_view(vit_model, "cls", [0, 2])[1] == "cls, blocks 0, 2 of 3"


@pytest.mark.parametrize("blocks", [0, 6, [5], [1, -4], []])
def test_blocks_the_vit_does_not_have_are_refused(blocks):
    with pytest.raises(ValueError, match="blocks="):
        block_indices(tiny_vit(depth=5), blocks)


def test_cls_pooling_needs_a_class_token():
    vit = tiny_vit(class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        ViTFeatures(vit, pool="cls")
    assert EveryBlock(vit).pools == ("mean",)


def test_the_augmented_linear_probe_trains_on_the_protocol_features(image_dataset):
    vit = tiny_vit(depth=3)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    view = ViTFeatures(vit, pool="cls+mean", blocks=2)
    out = augmented_linear_probe(
        view, image_dataset, image_dataset, num_classes=2, image_size=16, epochs=1,
        warmup_epochs=0, batch_size=16, fit=FitOptions(accelerator="cpu", devices=1),
    )  # fmt: skip
    assert 0.0 <= out["top1"] <= 1.0
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
