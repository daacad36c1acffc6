from pathlib import Path

import pytest

from ssl_mae_plugin.recipe_loading import load_recipe, recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import mae_recipe as with_method
from tests.conftest import minimal_recipe as minimal


def test_defaults_are_filled_in():
    recipe = recipe_from_dict(minimal())
    assert recipe.seed == 0 and recipe.output_dir == "runs"
    assert recipe.data.val_split == "test" and recipe.data.train_split == "train"
    assert recipe.pretrain.epochs == 100 and recipe.pretrain.batch_size == 256
    assert recipe.trainer.precision == "32" and recipe.trainer.devices == 1
    assert recipe.eval.knn.k == 200 and recipe.eval.linear.mode == "cached"
    assert recipe.eval.finetune is None
    entry = recipe.methods[0]
    assert entry.label == "mae" and entry.blr is None  # the method's own default
    assert entry.mask_ratio == 0.75 and entry.options()["backbone"] == "vit_tiny"
    assert recipe.method_dir(0) == Path("runs/r/mae")
    folder = recipe_from_dict({**minimal(), "data": {"dataset": "imagefolder", "root": "x"}})
    assert folder.data.val_split == "val"


def test_image_folder_validation_split_falls_back_to_test(tmp_path):
    data = {"dataset": "imagefolder", "root": str(tmp_path)}
    (tmp_path / "test").mkdir()
    assert recipe_from_dict({**minimal(), "data": data}).data.val_split == "test"
    (tmp_path / "val").mkdir()
    assert recipe_from_dict({**minimal(), "data": data}).data.val_split == "val"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            minimal(colour="red"),
            "unknown key 'colour'; valid keys here: name, methods, models, seed",
        ),
        (minimal(data={"dataset": "mnist5k", "imagesize": 32}), "unknown key 'data.imagesize'"),
        (with_method(mask_ration=0.5), "unknown key 'methods.0.mask_ration'.*mask_ratio"),
        (minimal(seed="zero"), "seed must be a valid integer, got str 'zero'"),
        (minimal(pretrain={"epochs": 1.5}), "pretrain.epochs must be a valid integer"),
        (minimal(pretrain={"epochs": 0}), "pretrain.epochs must be greater than 0, got int 0"),
        (with_method(mask_ratio="high"), "methods.0.mask_ratio must be a valid number"),
        (with_method(mask_ratio=1.0), "methods.0.mask_ratio must leave at least one of the 64"),
        (with_method(mask_ratio=0.0), "methods.0.mask_ratio must leave .* got 0.0"),
        (with_method(mask_ratio=-0.1), "methods.0.mask_ratio must leave"),
        (with_method(patch_size=5), r"methods.0.patch_size=5 does not divide .* 32"),
        (with_method(norm_pix_loss="yes"), "methods.0.norm_pix_loss must be a valid boolean"),
        (minimal(methods=[{"name": "maee"}]), "methods.0.name: unknown method 'maee'; available"),
        (with_method(backbone="vit_enormous"), "methods.0.backbone: mae needs a ViT"),
        (
            minimal(methods=[{"name": "simclr", "backbone": "vit_enormous"}]),
            "methods.0.backbone: unknown backbone 'vit_enormous'",
        ),
        (
            minimal(methods=[{"name": "simclr", "optimizer": "adam"}]),
            "methods.0.optimizer must be 'adamw', 'lars' or 'sgd', got str 'adam'",
        ),
        (with_method(image_size=64), "methods.0.image_size is set by data.image_size"),
        (minimal(methods=[]), "a recipe needs methods to pretrain or models to evaluate"),
        (
            minimal(models=[{"label": "x", "weigths": "w.pth"}]),
            "unknown key 'models.0.weigths'; valid keys here: label, weights, format",
        ),
        (
            minimal(eval={"datasets": [{"dataset": "mnist5k", "split": "x"}]}),
            "unknown key 'eval.datasets.0.split'; valid keys here: name, dataset, root",
        ),
        (minimal(models=[{"label": "x", "format": "official"}]), "models.0.weights is required"),
        (
            minimal(models=[{"label": "x", "format": "state_dict", "weights": "w.pth"}]),
            "models.0.architecture is required for format 'state_dict'",
        ),
        (
            minimal(models=[{"label": "mae", "weights": "w.pth"}]),
            "models.0.label 'mae' is taken or reserved",
        ),
        (
            minimal(models=[{"label": "x", "weights": "w.pth", "mean": [0.5, 0.5, 0.5]}]),
            "models.0.mean and std go together",
        ),
        (
            minimal(models=[{"label": "x", "weights": "w", "format": "onnx"}]),
            "models.0.format must be 'auto'",
        ),
        (minimal(methods=[{"backbone": "vit_tiny"}]), "missing key 'methods.0.name'"),
        (
            minimal(methods=[{"name": "mae"}, {"name": "mae"}]),
            "methods.1.label 'mae' is taken or reserved; give each row a distinct 'label'",
        ),
        (minimal(trainer={"precision": "64"}), "trainer.precision must be '32', 'bf16-mixed'"),
        (
            minimal(trainer={"devices": 3}),
            "pretrain.batch_size=256 is not divisible by the 3 devices",
        ),
        (minimal(data={"dataset": "imagenet"}), "data.dataset must be 'imagefolder', 'cifar10'"),
        (minimal(data={"dataset": "imagefolder"}), "data.root is required"),
        (minimal(data={"dataset": "mnist5k", "mean": [0.5]}), "data.mean must list at least 3"),
        (minimal(eval={"linear": {"mode": "fast"}}), "eval.linear.mode must be one of"),
        (minimal(eval={"linear": {"epochs": 0}}), "eval.linear.epochs must be >= 1, got 0"),
        (minimal(eval={"linear": {"foo": 1}}), "unknown key 'eval.linear.foo'; valid keys"),
        (minimal(eval={"knn": {"k": 0}}), "eval.knn.k must be >= 1, got 0"),
        (minimal(eval={"finetune": {"layer_decay": 2}}), "eval.finetune.layer_decay must be in"),
        ({"data": {"dataset": "mnist5k"}, "methods": [{"name": "mae"}]}, "missing key 'name'"),
        (minimal(eval={"features": {"pool": "max"}}), "eval.features.pool must be 'cls', 'mean'"),
        (minimal(eval={"datasets": [{"dataset": "cifar10"}]}), "eval.datasets.0.root is required"),
        (
            minimal(eval={"datasets": [{"dataset": "mnist5k"}, {"dataset": "mnist5k"}]}),
            "eval.datasets: names \\['mnist5k', 'mnist5k'\\] repeat",
        ),
    ],
)
def test_bad_recipes_name_the_key(raw, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw)


def test_sections_can_be_disabled_with_null():
    recipe = recipe_from_dict(minimal(eval={"knn": None, "linear": None}))
    assert recipe.eval.knn is None and recipe.eval.linear is None


def test_every_shipped_recipe_is_valid():
    recipes = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name and recipe.methods, path
