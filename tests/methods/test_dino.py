import pytest
import torch

from ssl_mae_plugin.backbones import build_backbone, is_convnet
from ssl_mae_plugin.methods.dino import DINO, scaled_local_crop_size
from tests.methods.conftest import (
    BACKBONES,
    NORMALIZATION,
    RESNET18,
    TINY_VIT,
    check_optimizer_groups,
    check_ssl_step,
    check_teacher,
    check_teacher_trained,
    make_views,
    trained_and_initial,
)

HEAD = {"hidden_dim": 64, "bottleneck_dim": 16, "output_dim": 64, "n_local_views": 2}


@BACKBONES
def test_ssl_step_on_real_multi_crop_views_reaches_backbone_and_head(backbone, cifar_images):
    method = DINO(**backbone, **HEAD)
    views = check_ssl_step(method, cifar_images, [method.backbone, method.projection_head])
    local = 16 if backbone is TINY_VIT else 13
    assert [view.shape[-1] for view in views] == [32, 32, local, local]


@BACKBONES
def test_teacher_gets_no_gradient_and_follows_the_student(backbone, cifar_images):
    check_teacher(DINO(**backbone, **HEAD), cifar_images)


def test_optimizer_excludes_the_teacher():
    check_optimizer_groups(DINO(**TINY_VIT, **HEAD))


def test_teacher_starts_as_a_copy_of_the_student():
    method = DINO(**TINY_VIT, **HEAD)
    student = method.projection_head.state_dict()
    for key, value in method.teacher_projection_head.state_dict().items():
        assert torch.equal(value, student[key])


@pytest.mark.parametrize(
    ("image_size", "patch_size", "expected"),
    [(224, 16, 96), (224, 14, 98), (32, 8, 16), (32, 4, 12), (32, 16, 16), (32, None, 13)],
)
def test_local_crops_scale_with_the_image_and_tile_into_patches(image_size, patch_size, expected):
    assert scaled_local_crop_size(image_size, patch_size) == expected


def test_transform_takes_the_options_of_the_instance(cifar_images):
    method = DINO(**{**TINY_VIT, "patch_size": 4}, **{**HEAD, "n_local_views": 3})
    views = make_views(method, cifar_images[:2])
    assert [view.shape[-1] for view in views] == [32, 32, 12, 12, 12]
    # the default options: 2 global + 6 local crops of 96/224 of the image, whole patches
    default = DINO(**TINY_VIT, **{**HEAD, "n_local_views": 6})
    crops = default.default_transform(NORMALIZATION)(cifar_images[0])
    assert [crop.shape[-1] for crop in crops] == [32, 32] + [16] * 6


def test_vit_takes_local_crops_and_is_an_ordinary_vit_at_the_image_size():
    method = DINO(**TINY_VIT, **HEAD).eval()
    assert method.backbone(torch.randn(2, 3, 16, 16)).shape == (2, 32)
    fixed = build_backbone("vit_tiny", 32, 8, embed_dim=32, depth=1, num_heads=2).eval()
    fixed.load_state_dict(method.backbone.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(method.forward_features(images), fixed(images))


def test_local_crop_size_must_tile_into_patches():
    with pytest.raises(ValueError, match="divisible"):
        DINO(**TINY_VIT, **{**HEAD, "local_crop_size": 12})


def test_optimizer_defaults_depend_on_the_backbone_family():
    vit = DINO(**TINY_VIT, **HEAD)
    assert (vit.optimizer_name, vit.blr, vit.weight_decay) == ("adamw", 5e-4, 0.04)
    assert vit.weight_decay_end == 0.4
    resnet = DINO(**RESNET18, **HEAD)
    assert (resnet.optimizer_name, resnet.blr, resnet.weight_decay) == ("sgd", 0.03, 1e-4)
    assert resnet.weight_decay_end == 1e-4
    assert DINO.recipe_for("resnet50").optimizer == "sgd"
    assert DINO.recipe_for("vit_base").optimizer == "adamw"
    assert DINO(**RESNET18, **HEAD, optimizer="lars").optimizer_name == "lars"
    assert is_convnet("resnet50") and not is_convnet("vit_small")


def test_defaults_follow_the_paper():
    method = DINO(**TINY_VIT)
    assert method.projection_head.last_layer.weight_v.shape == (65536, 256)
    assert method.projection_head.freeze_last_layer == 1
    assert (method.momentum_start, method.momentum_end) == (0.996, 1.0)
    loss = method.criterion
    assert (loss.teacher_temp, loss.student_temp, loss.center_momentum) == (0.07, 0.1, 0.9)
    assert loss.teacher_temp_schedule[0] == pytest.approx(0.04)
    assert loss.warmup_teacher_temp_epochs == 30


def test_last_layer_stays_frozen_in_the_first_epoch(pretrain_run):
    entry = {"name": "dino", **TINY_VIT, **HEAD, "blr": 0.05}
    entry.pop("image_size")
    recipe, _ = pretrain_run(entry, epochs=1)
    trained, initial = trained_and_initial(recipe)
    last = "projection_head.last_layer.weight_v"
    assert torch.equal(trained[last], initial[last])
    first = "projection_head.layers.0.weight"
    assert not torch.equal(trained[first], initial[first])


def test_pretraining_lowers_the_loss_and_moves_the_teacher(pretrain_run):
    # From random weights every image lands on the same prototype; with the EMA centre
    # the loss first rises while the centre catches up (DINO's early rise), so this
    # short run centres on the current batch to measure learning alone.
    entry = {
        "name": "dino",
        **TINY_VIT,
        **HEAD,
        "output_dim": 256,
        "center_momentum": 0.0,
        "blr": 0.05,
    }
    entry.pop("image_size")
    recipe, losses = pretrain_run(entry, epochs=6)
    assert losses[-1] < losses[0] - 0.3
    check_teacher_trained(recipe)
    # the weight decay followed its cosine from 0.04 to 0.4 (the last step sets 0.4)
    checkpoint = torch.load(recipe.method_dir(0) / "checkpoints" / "last.ckpt", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in groups if g["scheduled_weight_decay"]] == [
        pytest.approx(0.4)
    ]
    assert all(g["weight_decay"] == 0 for g in groups if not g["scheduled_weight_decay"])


def test_checkpoint_rebuilds_the_method_with_its_options(pretrain_run, cifar_images):
    entry = {"name": "dino", **TINY_VIT, **HEAD, "n_local_views": 3}
    entry.pop("image_size")
    recipe, _ = pretrain_run(entry, epochs=1)
    checkpoint = recipe.method_dir(0) / "checkpoints" / "last.ckpt"
    loaded = DINO.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    trained, _ = trained_and_initial(recipe)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, trained[key]), key
    assert len(make_views(loaded, cifar_images[:2])) == 2 + 3
