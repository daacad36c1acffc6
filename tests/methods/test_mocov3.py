import pytest
import torch

from ssl_mae_plugin.methods.mocov3 import MoCoV3, contrastive_loss
from tests.methods.conftest import (
    BACKBONES,
    RESNET18,
    TINY_VIT,
    check_optimizer_groups,
    check_ssl_step,
    check_teacher,
    check_teacher_trained,
)

HEADS = {"hidden_dim": 64, "output_dim": 32}


@BACKBONES
def test_ssl_step_on_real_views_reaches_backbone_and_heads(backbone, cifar_images):
    method = MoCoV3(**backbone, **HEADS)
    online = [method.backbone, method.projection_head, method.prediction_head]
    check_ssl_step(method, cifar_images, online)


@BACKBONES
def test_momentum_encoder_gets_no_gradient_and_follows_the_online_one(backbone, cifar_images):
    check_teacher(MoCoV3(**backbone, **HEADS), cifar_images)


def test_optimizer_excludes_the_momentum_encoder_and_the_frozen_patch_projection():
    method = MoCoV3(**TINY_VIT, **HEADS)
    check_optimizer_groups(method)
    assert not any(p.requires_grad for p in method.backbone.patch_embed.parameters())
    unfrozen = MoCoV3(**TINY_VIT, **HEADS, freeze_patch_embed=False)
    assert all(p.requires_grad for p in unfrozen.backbone.patch_embed.parameters())


def test_contrastive_loss_is_scaled_cross_entropy_over_in_batch_keys():
    query, key = torch.randn(6, 8), torch.randn(6, 8)
    logits = (
        torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(key, dim=1).T
    )
    expected = 2 * 0.2 * torch.nn.functional.cross_entropy(logits / 0.2, torch.arange(6))
    torch.testing.assert_close(contrastive_loss(query, key, 0.2), expected)
    # matching keys give a lower loss than shuffled ones
    assert contrastive_loss(key, key, 0.2) < contrastive_loss(key, key.roll(1, 0), 0.2)


def test_recipe_depends_on_the_backbone_family():
    vit = MoCoV3(**TINY_VIT, **HEADS)
    assert (vit.optimizer_name, vit.blr, vit.weight_decay, vit.temperature) == (
        "adamw",
        1.5e-4,
        0.1,
        0.2,
    )
    assert vit.recipe.warmup_fraction == pytest.approx(40 / 300)
    assert linear_layers(vit.projection_head) == 3
    assert linear_layers(vit.prediction_head) == 2
    resnet = MoCoV3(**RESNET18, **HEADS)
    assert (resnet.optimizer_name, resnet.blr, resnet.weight_decay, resnet.temperature) == (
        "lars",
        0.6,
        1e-6,
        1.0,
    )
    assert resnet.recipe.warmup_fraction == 0.1
    assert linear_layers(resnet.projection_head) == 2


def linear_layers(head: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in head.modules())


def test_pretraining_lowers_the_loss_and_moves_the_momentum_encoder(pretrain_run):
    entry = {"name": "mocov3", **TINY_VIT, **HEADS, "blr": 0.05}
    entry.pop("image_size")
    recipe, losses = pretrain_run(entry, epochs=5)
    assert losses[-1] < losses[0] - 0.1  # the loss is scaled by 2 * 0.2
    check_teacher_trained(recipe)
