import argparse
import warnings

import pytest
import timm
import torch
import torch.nn.functional as F

from ssl_mae_plugin import MAE, mae_vit_base_patch16


def official_vit_b_shapes():
    """facebookresearch/mae `mae_vit_base_patch16` (512-d, 8-block decoder), by hand."""
    shapes = {
        "cls_token": (1, 1, 768),
        "pos_embed": (1, 197, 768),
        "mask_token": (1, 1, 512),
        "decoder_pos_embed": (1, 197, 512),
        "patch_embed.proj.weight": (768, 3, 16, 16),
        "patch_embed.proj.bias": (768,),
        "norm.weight": (768,),
        "norm.bias": (768,),
        "decoder_embed.weight": (512, 768),
        "decoder_embed.bias": (512,),
        "decoder_norm.weight": (512,),
        "decoder_norm.bias": (512,),
        "decoder_pred.weight": (768, 512),
        "decoder_pred.bias": (768,),
    }
    for prefix, dim, depth in [("blocks", 768, 12), ("decoder_blocks", 512, 8)]:
        for i in range(depth):
            b = f"{prefix}.{i}"
            shapes |= {
                f"{b}.norm1.weight": (dim,),
                f"{b}.norm1.bias": (dim,),
                f"{b}.attn.qkv.weight": (3 * dim, dim),
                f"{b}.attn.qkv.bias": (3 * dim,),
                f"{b}.attn.proj.weight": (dim, dim),
                f"{b}.attn.proj.bias": (dim,),
                f"{b}.norm2.weight": (dim,),
                f"{b}.norm2.bias": (dim,),
                f"{b}.mlp.fc1.weight": (4 * dim, dim),
                f"{b}.mlp.fc1.bias": (4 * dim,),
                f"{b}.mlp.fc2.weight": (dim, 4 * dim),
                f"{b}.mlp.fc2.bias": (dim,),
            }
    return shapes


@pytest.fixture(scope="module")
def vit_b():
    return mae_vit_base_patch16()


def test_official_state_dict_has_exact_keys_and_shapes_for_vit_b(vit_b):
    official = vit_b.official_state_dict()
    assert len(official) == 254
    assert {k: tuple(v.shape) for k, v in official.items()} == official_vit_b_shapes()


def test_encoder_loads_strictly_into_timm_vit_base(vit_b):
    reference = timm.create_model("vit_base_patch16_224", num_classes=0)
    reference.load_state_dict(vit_b.encoder.state_dict(), strict=True)
    reference.eval()
    vit_b.eval()
    images = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(reference(images), vit_b.forward_features(images))


def test_heads_of_published_widths_are_inferred(vit_b):
    loaded = MAE.from_official({"model": vit_b.official_state_dict()})
    assert loaded.config == vit_b.config


def test_official_round_trip_through_a_file(tmp_path, tiny_mae):
    path = tmp_path / "checkpoint-799.pth"
    args = argparse.Namespace(model="mae_tiny", norm_pix_loss=True, mask_ratio=0.75)
    torch.save({"model": tiny_mae.official_state_dict(), "epoch": 799, "args": args}, path)
    loaded = MAE.from_official(path, num_heads=4, decoder_num_heads=4)  # shapes hide heads
    assert loaded.norm_pix_loss
    assert loaded.config | {"norm_pix_loss": False} == tiny_mae.config
    for key, value in tiny_mae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    loaded.norm_pix_loss = False
    torch.testing.assert_close(loaded(images, noise=noise).pred, tiny_mae(images, noise=noise).pred)


def test_from_official_accepts_plain_and_wrapped_state_dicts(tiny_mae):
    official = tiny_mae.official_state_dict()
    for source in (official, {"model": official}):
        loaded = MAE.from_official(source, num_heads=4, decoder_num_heads=4)
        assert torch.equal(loaded.decoder.pred.weight, tiny_mae.decoder.pred.weight)


def test_encoder_only_file_loads_with_fresh_decoder_and_a_warning(tiny_mae):
    encoder_only = {
        k: v
        for k, v in tiny_mae.official_state_dict().items()
        if not (k.startswith("decoder_") or k == "mask_token")
    }
    with pytest.warns(UserWarning, match="no decoder weights") as record:
        loaded = MAE.from_official(
            encoder_only, num_heads=4, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4
        )
    message = str(record[0].message)
    assert "mask_token" in message and "decoder_pred.weight" in message
    assert "decoder_blocks.0.attn.qkv.weight" in message
    assert torch.equal(
        loaded.encoder.blocks[1].mlp.fc1.weight, tiny_mae.encoder.blocks[1].mlp.fc1.weight
    )


def test_unexpected_key_is_an_error_naming_it(tiny_mae):
    official = tiny_mae.official_state_dict() | {"head.weight": torch.zeros(10, 64)}
    with pytest.raises(ValueError, match="'head.weight'"):
        MAE.from_official(official)


def test_missing_encoder_key_is_an_error_naming_it(tiny_mae):
    official = tiny_mae.official_state_dict()
    del official["blocks.1.norm2.bias"]
    with pytest.raises(ValueError, match="'blocks.1.norm2.bias'"):
        MAE.from_official(official)


def test_shape_mismatch_is_an_error_naming_the_key(tiny_mae):
    official = tiny_mae.official_state_dict() | {"decoder_norm.bias": torch.zeros(48)}
    with pytest.raises(ValueError, match=r"'decoder_norm.bias' has shape \(48,\)"):
        MAE.from_official(official, num_heads=4, decoder_num_heads=4)


def test_not_an_mae_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        MAE.from_official({"model": {"fc.weight": torch.zeros(2, 2)}})


def test_loading_at_another_resolution_resizes_position_tables(tiny_mae):
    loaded = MAE.from_official(
        tiny_mae.official_state_dict(), img_size=48, num_heads=4, decoder_num_heads=4
    )
    assert loaded.grid_size == (12, 12)
    for ours, theirs in [
        (loaded.encoder.pos_embed, tiny_mae.encoder.pos_embed),
        (loaded.decoder.pos_embed, tiny_mae.decoder.pos_embed),
    ]:
        assert ours.shape[1] == 1 + 144 and not ours.requires_grad
        assert torch.equal(ours[:, 0], theirs[:, 0])  # cls row kept
        grid = theirs[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
        expected = F.interpolate(grid, size=(12, 12), mode="bicubic", align_corners=False)
        expected = expected.permute(0, 2, 3, 1).reshape(1, 144, -1)
        torch.testing.assert_close(ours[:, 1:], expected)
    assert loaded(torch.randn(1, 3, 48, 48)).pred.shape == (1, 144, 48)


def test_non_square_model_round_trips_with_explicit_img_size(tiny_config):
    model = MAE(**{**tiny_config, "img_size": (16, 32)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = MAE.from_official(
            model.official_state_dict(), img_size=(16, 32), num_heads=4, decoder_num_heads=4
        )
    assert torch.equal(loaded.encoder.pos_embed, model.encoder.pos_embed)
