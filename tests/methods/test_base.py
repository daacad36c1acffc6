import pytest
import torch

from ssl_mae_plugin.methods.base import is_no_decay, parameter_groups
from ssl_mae_plugin.methods.mae import MAEMethod

TINY = dict(
    backbone="vit_tiny", image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip


def test_no_weight_decay_for_norms_biases_tables_and_tokens():
    model = MAEMethod(**TINY)
    names = {
        name
        for name, param in model.named_parameters()
        if param.requires_grad and is_no_decay(name, param)
    }
    assert "model.encoder.cls_token" in names and "model.decoder.mask_token" in names
    assert "model.encoder.blocks.0.norm1.weight" in names
    assert "model.encoder.blocks.0.attn.qkv.bias" in names
    assert "model.encoder.blocks.0.attn.qkv.weight" not in names
    groups = parameter_groups(model.named_parameters(), 0.05)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert id(model.model.encoder.patch_embed.proj.weight) in decayed
    assert id(model.model.encoder.pos_embed) not in decayed | {id(p) for p in groups[1]["params"]}


def test_lr_is_scaled_by_global_batch_and_defaults_come_from_the_method():
    model = MAEMethod(**TINY, batch_size=4096)
    assert model.base_lr == pytest.approx(1.5e-4 * 16)
    assert model.weight_decay == 0.05 and model.optimizer_name == "adamw"
    assert MAEMethod.optimizer_defaults.betas == (0.9, 0.95)
    assert MAEMethod(**TINY, blr=1e-3, batch_size=512).base_lr == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        MAEMethod(**TINY, optimizer="adam")


def test_online_probe_trains_on_detached_features():
    model = MAEMethod(**TINY, online_probe=True, num_classes=3)
    images = torch.randn(4, 3, 32, 32)
    _, features = model.ssl_step([images], [1, 2, 3, 4])
    assert features.shape == (4, 32) and not features.requires_grad
    assert model.online_classifier is not None
    assert model.feature_dim == 32
