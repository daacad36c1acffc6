import pytest

from ssl_mae_plugin.methods.byol import BYOL
from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE
from tests.methods.conftest import (
    BACKBONES,
    RESNET18,
    TINY_VIT,
    check_optimizer_groups,
    check_ssl_step,
    check_teacher,
    check_teacher_trained,
    make_views,
)

HEADS = {"hidden_dim": 64, "output_dim": 32}


@BACKBONES
def test_ssl_step_on_real_views_reaches_backbone_and_heads(backbone, cifar_images):
    method = BYOL(**backbone, **HEADS)
    online = [method.backbone, method.projection_head, method.prediction_head]
    check_ssl_step(method, cifar_images, online)


@BACKBONES
def test_teacher_gets_no_gradient_and_follows_the_online_networks(backbone, cifar_images):
    check_teacher(BYOL(**backbone, **HEADS), cifar_images)


def test_optimizer_excludes_the_teacher():
    check_optimizer_groups(BYOL(**TINY_VIT, **HEADS))


def test_teacher_starts_as_a_copy():
    method = BYOL(**TINY_VIT, **HEADS)
    for online, teacher in zip(
        method.backbone.parameters(), method.teacher_backbone.parameters(), strict=True
    ):
        assert online is not teacher and online.equal(teacher)


def test_loss_is_the_symmetrised_paper_loss(cifar_images):
    # 2 - 2 cos per direction: 0 for identical directions, at most 8 in total
    method = BYOL(**TINY_VIT, **HEADS)
    loss, _ = method.ssl_step(make_views(method, cifar_images), list(range(len(cifar_images))))
    assert 0 <= loss.item() <= 8


def test_resnets_get_lightlys_recipe_and_vits_adamw():
    resnet = BYOL(**RESNET18)
    assert (resnet.optimizer_name, resnet.blr, resnet.weight_decay) == ("lars", 0.45, 1e-6)
    assert resnet.recipe.warmup_fraction == 0.1
    method = BYOL(**TINY_VIT)
    assert method.recipe is SWEPT_VIT_RECIPE
    assert (method.optimizer_name, method.weight_decay) == ("adamw", 0.1)
    assert (method.momentum_start, method.momentum_end) == (0.99, 1.0)
    assert method.prediction_head.layers[0].out_features == 4096
    assert method.projection_head.layers[-1].out_features == 256


def test_pretraining_lowers_the_loss_and_moves_the_teacher(pretrain_run):
    entry = {"name": "byol", **TINY_VIT, **HEADS}
    entry.pop("image_size")
    recipe, losses = pretrain_run(entry, epochs=3)
    assert losses[-1] < losses[0] - 0.2  # the ViT recipe (AdamW), 12 steps
    check_teacher_trained(recipe)


def test_momentum_schedule_is_cosine_from_start_to_end():
    method = BYOL(**TINY_VIT, **HEADS)

    class Trainer:  # what the schedule reads of a Lightning Trainer
        estimated_stepping_batches = 101
        global_step = 0

    method.trainer = Trainer()
    assert method.teacher_momentum() == pytest.approx(0.99)
    Trainer.global_step = 50
    assert method.teacher_momentum() == pytest.approx(0.995)
    Trainer.global_step = 100
    assert method.teacher_momentum() == pytest.approx(1.0)
