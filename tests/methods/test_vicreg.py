import pytest

from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE
from ssl_mae_plugin.methods.vicreg import VICReg
from tests.methods.conftest import BACKBONES, NORMALIZATION, RESNET18, TINY_VIT, check_ssl_step

HEAD = {"hidden_dim": 64, "output_dim": 64}


@BACKBONES
def test_ssl_step_on_real_views_reaches_backbone_and_expander(backbone, cifar_images):
    method = VICReg(**backbone, **HEAD)
    check_ssl_step(method, cifar_images, [method.backbone, method.projection_head])


def test_resnets_get_the_papers_lars_recipe_and_vits_adamw():
    resnet = VICReg(**RESNET18)
    assert (resnet.optimizer_name, resnet.blr, resnet.weight_decay) == ("lars", 0.2, 1e-6)
    assert resnet.recipe.warmup_fraction == 0.1
    vit = VICReg(**TINY_VIT)
    assert vit.recipe is SWEPT_VIT_RECIPE and (vit.optimizer_name, vit.weight_decay) == (
        "adamw",
        0.1,
    )
    method = vit
    loss = method.criterion
    assert (loss.lambda_param, loss.mu_param, loss.nu_param) == (25.0, 25.0, 1.0)
    assert loss.gather_distributed
    widths = [
        m.out_features for m in method.projection_head.modules() if hasattr(m, "out_features")
    ]
    assert widths == [8192, 8192, 8192]


def test_optimizer_holds_every_parameter():
    method = VICReg(**TINY_VIT, **HEAD)
    grouped = {id(p) for group in method.optimizer_parameters() for p in group["params"]}
    assert grouped == {id(p) for p in method.parameters()}


@pytest.mark.parametrize("image_size", [32, 96])
def test_transform_makes_two_views_of_the_image_size(image_size, cifar_images):
    method = VICReg(**{**TINY_VIT, "image_size": image_size}, **HEAD)
    views = method.default_transform(NORMALIZATION)(cifar_images[0])
    assert [view.shape for view in views] == [(3, image_size, image_size)] * 2


def test_pretraining_lowers_the_loss(pretrain_run):
    # A tiny ViT learns VICReg's invariance too slowly for a few dozen steps; timm's
    # small test ConvNet shows the fall within seconds.
    entry = {"name": "vicreg", "backbone": "test_resnet", **HEAD, "blr": 0.03, "optimizer": "adamw"}
    _, losses = pretrain_run(entry, epochs=8)
    assert losses[-1] < losses[0] - 0.5
