import pytest
import timm
import torch

from ssl_mae_plugin import (
    MAE,
    MAEOutput,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch16,
    mae_vit_tiny_patch16,
)


def test_forward_returns_loss_pred_mask_ids_restore(tiny_mae):
    out = tiny_mae(torch.randn(3, 3, 32, 32))
    assert isinstance(out, MAEOutput)
    loss, pred, mask, ids_restore = out
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert pred.shape == (3, 64, 4 * 4 * 3)
    assert mask.shape == ids_restore.shape == (3, 64)
    assert torch.equal(mask.sum(1), torch.full((3,), 48.0))


def test_mask_ratio_and_noise_arguments_decide_the_mask(tiny_mae):
    images = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    a = tiny_mae(images, mask_ratio=0.5, noise=noise)
    b = tiny_mae(images, mask_ratio=0.5, noise=noise)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
    assert a.mask.sum().item() == 64
    assert torch.equal(a.mask[0], (torch.argsort(torch.argsort(noise[0])) >= 32).float())


def test_cls_token_is_never_masked(tiny_mae):
    seen = []
    tiny_mae.encoder.blocks.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    tiny_mae(torch.randn(4, 3, 32, 32), mask_ratio=0.9)
    tokens = seen[0]
    assert tokens.shape == (4, 1 + int(64 * 0.1), 64)
    cls = tiny_mae.encoder.cls_token + tiny_mae.encoder.pos_embed[:, :1]
    torch.testing.assert_close(tokens[:, 0], cls[0].expand(4, -1))


def test_gradients_reach_encoder_and_decoder_but_not_fixed_tables(tiny_mae):
    tiny_mae(torch.randn(2, 3, 32, 32)).loss.backward()
    for name in [
        "encoder.patch_embed.proj.weight",
        "encoder.cls_token",
        "encoder.blocks.0.attn.qkv.weight",
        "encoder.norm.weight",
        "decoder.embed.weight",
        "decoder.mask_token",
        "decoder.blocks.1.mlp.fc2.weight",
        "decoder.pred.weight",
    ]:
        grad = tiny_mae.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    for name in ["encoder.pos_embed", "decoder.pos_embed"]:
        param = tiny_mae.get_parameter(name)
        assert not param.requires_grad and param.grad is None


def test_initialisation_follows_the_official_code(tiny_mae):
    assert torch.all(tiny_mae.encoder.pos_embed[0, 0] == 0)
    block = tiny_mae.encoder.blocks[0]
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.norm1.weight == 1)
    bound = (6 / (64 + 3 * 64)) ** 0.5  # xavier-uniform on the 3D x D qkv matrix
    assert block.attn.qkv.weight.abs().max() <= bound
    assert 0.005 < tiny_mae.decoder.mask_token.std() < 0.05


def test_non_square_images(tiny_config):
    model = MAE(**{**tiny_config, "img_size": (16, 40)})
    out = model(torch.randn(2, 3, 16, 40))
    assert out.pred.shape == (2, 4 * 10, 48)
    assert model.forward_features(torch.randn(2, 3, 16, 40)).shape == (2, 64)


def test_grayscale_and_other_patch_sizes(tiny_config):
    model = MAE(**{**tiny_config, "img_size": 28, "patch_size": 7, "in_chans": 1})
    assert model(torch.randn(2, 1, 28, 28)).pred.shape == (2, 16, 49)


def test_forward_features_pools_cls_or_mean_without_masking(tiny_mae):
    tiny_mae.eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = tiny_mae.encoder.forward_features(images)
    assert tokens.shape == (2, 65, 64)
    torch.testing.assert_close(tiny_mae.forward_features(images), tokens[:, 0])
    torch.testing.assert_close(
        tiny_mae.forward_features(images, pool="mean"), tokens[:, 1:].mean(1)
    )
    with pytest.raises(ValueError, match="pool"):
        tiny_mae.forward_features(images, pool="max")


@pytest.mark.parametrize(
    ("factory", "dim", "depth", "patch"),
    [
        (mae_vit_tiny_patch16, 192, 12, 16),
        (mae_vit_small_patch16, 384, 12, 16),
        (mae_vit_base_patch16, 768, 12, 16),
        (mae_vit_large_patch16, 1024, 24, 16),
        (mae_vit_huge_patch14, 1280, 32, 14),
    ],
)
def test_factories_build_each_size_on_meta(factory, dim, depth, patch):
    with torch.device("meta"):
        model = factory()
    assert model.encoder.embed_dim == dim and len(model.encoder.blocks) == depth
    assert model.patch_size == patch


def test_factory_overrides():
    model = mae_vit_tiny_patch16(img_size=32, patch_size=4, mask_ratio=0.6, norm_pix_loss=True)
    assert model.grid_size == (8, 8) and model.mask_ratio == 0.6 and model.norm_pix_loss
    assert model(torch.randn(1, 3, 32, 32)).mask.sum() == 64 - int(64 * 0.4)


def test_paper_parameter_counts_for_vit_base():
    model = mae_vit_base_patch16()
    trainable = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert round(trainable(model.encoder) / 1e6, 2) == 85.65
    assert round(trainable(model.decoder) / 1e6, 2) == 26.01
    assert isinstance(model.encoder, timm.models.vision_transformer.VisionTransformer)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"img_size": 30}, "img_size"),
        ({"img_size": (32, 30)}, "img_size"),
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"mask_ratio": -0.5}, "mask_ratio"),
        ({"num_heads": 5}, "num_heads"),
        ({"decoder_num_heads": 5}, "decoder_num_heads"),
    ],
)
def test_bad_constructor_arguments_name_the_argument(tiny_config, overrides, name):
    with pytest.raises(ValueError, match=name):
        MAE(**{**tiny_config, **overrides})


def test_bad_forward_arguments_name_the_argument(tiny_mae):
    with pytest.raises(ValueError, match="in_chans"):
        tiny_mae(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="img_size"):
        tiny_mae(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_mae(torch.randn(2, 3, 32, 32), mask_ratio=1.2)
    with pytest.raises(ValueError, match="noise"):
        tiny_mae(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 63))
