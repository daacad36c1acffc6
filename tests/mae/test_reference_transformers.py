"""Ours vs. transformers' ViTMAEForPreTraining, an independent implementation of the paper."""

import pytest
import torch

from ssl_mae_plugin import MAE
from ssl_mae_plugin.export import to_transformers
from tests.mae.conftest import TINY_CONFIG

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("mask_ratio", [0.75, 0.5])
def test_same_weights_and_noise_give_the_same_loss_pred_and_mask(norm_pix_loss, mask_ratio):
    torch.manual_seed(0)
    ours = MAE(**TINY_CONFIG, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss).eval()
    config = transformers.ViTMAEConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        image_size=32,
        patch_size=4,
        num_channels=3,
        qkv_bias=True,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=128,
        mask_ratio=mask_ratio,
        norm_pix_loss=norm_pix_loss,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    theirs = transformers.ViTMAEForPreTraining(config).eval()
    theirs.load_state_dict(to_transformers(ours.official_state_dict()), strict=True)

    images, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    with torch.no_grad():
        mine = ours(images, noise=noise)
        reference = theirs(pixel_values=images, noise=noise)
    torch.testing.assert_close(mine.mask, reference.mask, atol=0, rtol=0)
    torch.testing.assert_close(mine.ids_restore, reference.ids_restore, atol=0, rtol=0)
    torch.testing.assert_close(mine.pred, reference.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mine.loss, reference.loss, atol=1e-5, rtol=1e-5)
