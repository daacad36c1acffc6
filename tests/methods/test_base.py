import pytest
import torch

from ssl_mae_plugin.methods.mae import MAEMethod

TINY = dict(
    backbone="vit_tiny", image_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
    decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2,
)  # fmt: skip


def test_weight_decay_groups_are_those_facebookresearch_mae_pretrains_with():
    model = MAEMethod(**TINY, online_probe=True, num_classes=3)
    groups = model.optimizer_parameters()
    by_decay: dict[float, set[int]] = {}
    for group in groups:
        by_decay.setdefault(group["weight_decay"], set()).update(id(p) for p in group["params"])
    (probe,) = [group for group in groups if group.get("lars_adaptation") is False]
    assert {id(p) for p in probe["params"]} == {id(p) for p in model.online_classifier.parameters()}
    assert set(by_decay) == {0.0, 0.05}
    # The official rule (timm's add_weight_decay without a skip list): no decay for 1-D
    # parameters and biases; trainable only; the cls and mask tokens are decayed.
    expected_decay = {
        id(p)
        for name, p in model.named_parameters()
        if p.requires_grad
        and p.ndim > 1
        and not name.endswith(".bias")
        and not name.startswith("online_classifier.")
    }
    assert by_decay[0.05] == expected_decay
    assert id(model.model.encoder.cls_token) in expected_decay
    assert id(model.model.decoder.mask_token) in expected_decay
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert by_decay[0.0] == trainable - expected_decay
    assert id(model.model.encoder.pos_embed) not in trainable  # the fixed sin-cos table
    assert id(model.online_classifier.classification_head.weight) in by_decay[0.0]


def test_lr_is_scaled_by_global_batch_and_defaults_come_from_the_method():
    model = MAEMethod(**TINY, batch_size=4096)
    assert model.base_lr == pytest.approx(1.5e-4 * 16)
    assert model.weight_decay == 0.05 and model.optimizer_name == "adamw"
    assert MAEMethod.recipe_for("vit_base").betas == (0.9, 0.95)
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
