import pytest
import torch

from ssl_mae_plugin.methods.mae import MAEMethod

TINY = dict(
    backbone="vit_tiny", image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip


def test_masks_come_from_sample_seeds():
    model = MAEMethod(**TINY)
    images = torch.randn(3, 3, 32, 32)
    a, _ = model.ssl_step([images], [5, 6, 7])
    b, _ = model.ssl_step([images], [5, 6, 7])
    c, _ = model.ssl_step([images], [8, 6, 7])
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_paper_defaults_and_overrides():
    model = MAEMethod(**TINY)
    assert model.model.mask_ratio == 0.75 and model.model.norm_pix_loss
    assert model.model.decoder.pos_embed.shape[-1] == 32
    custom = MAEMethod(**{**TINY, "decoder_depth": 2}, mask_ratio=0.6, norm_pix_loss=False)
    assert len(custom.model.decoder.blocks) == 2 and custom.model.mask_ratio == 0.6
    assert custom.hparams["mask_ratio"] == 0.6 and custom.hparams["embed_dim"] == 32


def test_features_are_the_unmasked_encoder_cls_token():
    model = MAEMethod(**TINY).eval()
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(
        model.forward_features(images), model.model.encoder.forward_features(images)[:, 0]
    )
    assert MAEMethod(**TINY, pool="mean").forward_features(images).shape == (2, 32)


def test_needs_a_vit():
    with pytest.raises(ValueError, match="mae has no recipe for ConvNets"):
        MAEMethod(backbone="resnet18", image_size=32)


def test_grad_checkpointing_and_compile_keep_the_loss():
    images, seeds = torch.randn(4, 3, 32, 32), [1, 2, 3, 4]
    torch.manual_seed(0)
    plain = MAEMethod(**TINY)
    torch.manual_seed(0)
    checkpointed = MAEMethod(**TINY, grad_checkpointing=True)
    assert checkpointed.model.encoder.grad_checkpointing
    torch.testing.assert_close(
        checkpointed.ssl_step([images], seeds)[0], plain.ssl_step([images], seeds)[0]
    )
    torch.manual_seed(0)
    compiled = MAEMethod(**TINY, compile=True)
    torch.testing.assert_close(
        compiled.ssl_step([images], seeds)[0], plain.ssl_step([images], seeds)[0]
    )


def test_training_uses_the_fast_loss_equal_to_the_full_forward():
    model = MAEMethod(**TINY)
    images, seeds = torch.randn(3, 3, 32, 32), [7, 8, 9]
    from ssl_mae_plugin.mae import noise_from_seeds

    noise = noise_from_seeds(seeds, model.model.num_patches, "cpu")
    torch.testing.assert_close(
        model.ssl_step([images], seeds)[0], model.model(images, noise=noise).loss
    )
