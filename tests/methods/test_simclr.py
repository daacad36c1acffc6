import pytest

from ssl_mae_plugin.methods.simclr import SimCLR
from ssl_mae_plugin.methods.training_recipe import SWEPT_VIT_RECIPE
from ssl_mae_plugin.pretrain.callbacks import read_metrics
from tests.methods.conftest import BACKBONES, RESNET18, TINY_VIT, check_ssl_step, make_views

HEAD = {"hidden_dim": 64, "output_dim": 32}


@BACKBONES
def test_ssl_step_on_real_views_reaches_backbone_and_head(backbone, cifar_images):
    method = SimCLR(**backbone, **HEAD)
    views = check_ssl_step(method, cifar_images, [method.backbone, method.projection_head])
    assert len(views) == 2
    assert all(view.shape == (len(cifar_images), 3, 32, 32) for view in views)


def test_resnets_get_lightlys_square_root_recipe_and_vits_adamw():
    resnet = SimCLR(**RESNET18)
    assert (resnet.optimizer_name, resnet.blr, resnet.weight_decay) == ("lars", 0.075, 1e-6)
    assert resnet.recipe.warmup_fraction == 0.1 and resnet.recipe.lr_scaling == "sqrt"
    assert resnet.base_lr == pytest.approx(0.075 * 16)  # sqrt(256)
    assert SimCLR(**RESNET18, batch_size=1024).base_lr == pytest.approx(0.075 * 32)
    method = SimCLR(**TINY_VIT)
    assert (method.optimizer_name, method.weight_decay) == ("adamw", 0.1)
    assert method.recipe is SWEPT_VIT_RECIPE and method.recipe.lr_scaling == "linear"
    assert method.base_lr == pytest.approx(SWEPT_VIT_RECIPE.blr)  # batch 256
    assert method.criterion.temperature == 0.1 and method.criterion.gather_distributed
    layers = [m for m in method.projection_head.modules() if m.__class__.__name__ == "Linear"]
    assert [(m.in_features, m.out_features) for m in layers] == [(32, 32), (32, 128)]


def test_optimizer_holds_every_parameter():
    method = SimCLR(**TINY_VIT, **HEAD)
    grouped = {id(p) for group in method.optimizer_parameters() for p in group["params"]}
    assert grouped == {id(p) for p in method.parameters()}


def test_forward_features_are_backbone_features(cifar_images):
    method = SimCLR(**TINY_VIT, **HEAD).eval()
    images = make_views(method, cifar_images)[0]
    features = method.forward_features(images)
    assert features.shape == (len(cifar_images), 32)


def test_pretraining_lowers_the_loss(pretrain_run):
    # LARS adapts decayed weights by only 0.001 x their norm per step: a high base rate
    # lets 20 steps of 32 images show the NT-Xent loss falling.
    entry = {"name": "simclr", **TINY_VIT, **HEAD, "blr": 3.0, "online_probe": True}
    entry.pop("image_size")
    recipe, losses = pretrain_run(entry, epochs=4)
    assert losses[-1] < losses[0] - 0.5
    assert (recipe.method_dir(0) / "checkpoints" / "last.ckpt").is_file()
    rows = read_metrics(recipe.method_dir(0) / "metrics.csv")
    assert all(0 <= float(row["online_top1"]) <= 1 for row in rows)  # probe fed by ssl_step
