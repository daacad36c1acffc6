"""Ours vs. transformers' ViTMAEForPreTraining, an independent implementation of the paper."""

import pytest
import torch

from ssl_mae_plugin import MAE
from tests.mae.conftest import TINY_CONFIG

transformers = pytest.importorskip("transformers")


def to_transformers(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename facebookresearch/mae keys to ViTMAEForPreTraining's, splitting qkv by rows."""
    out = {}
    for key, value in official.items():
        if key.startswith(("blocks.", "decoder_blocks.")):
            prefix, index, rest = key.split(".", 2)
            layer = (
                f"vit.layers.{index}" if prefix == "blocks" else f"decoder.decoder_layers.{index}"
            )
            if rest.startswith("attn.qkv."):
                suffix = rest.removeprefix("attn.qkv.")
                for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                    out[f"{layer}.attention.{name}_proj.{suffix}"] = part
                continue
            rest = (
                rest.replace("attn.proj", "attention.o_proj")
                .replace("norm1", "layernorm_before")
                .replace("norm2", "layernorm_after")
            )
            out[f"{layer}.{rest}"] = value
            continue
        renames = {
            "cls_token": "vit.embeddings.cls_token",
            "pos_embed": "vit.embeddings.position_embeddings",
            "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
            "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
            "norm.weight": "vit.layernorm.weight",
            "norm.bias": "vit.layernorm.bias",
        }
        out[renames.get(key, f"decoder.{key}")] = value
    return out


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
