from pathlib import Path

import pytest
import yaml

from ssl_mae_plugin.recipes import RecipeError, apply_override, load_recipe, recipe_from_dict


def minimal(**extra):
    raw = {
        "name": "r",
        "data": {"dataset": "mnist5k", "image_size": 32},
        "methods": [{"name": "mae"}],
    }
    raw.update(extra)
    return raw


def with_method(**entry):
    return minimal(methods=[{"name": "mae", "patch_size": 4, **entry}])


def test_defaults_are_filled_in():
    recipe = recipe_from_dict(minimal())
    assert recipe.seed == 0 and recipe.output_dir == "runs"
    assert recipe.data.val_split == "test" and recipe.data.train_split == "train"
    assert recipe.pretrain.epochs == 100 and recipe.pretrain.batch_size == 256
    assert recipe.trainer.precision == "32" and recipe.trainer.devices == 1
    assert recipe.eval.knn.k == 200 and recipe.eval.linear.mode == "cached"
    assert recipe.eval.finetune is None
    entry = recipe.methods[0]
    assert entry["label"] == "mae" and entry["blr"] is None  # the method's own default
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
        (minimal(colour="red"), "unknown key 'colour'"),
        (minimal(data={"dataset": "mnist5k", "imagesize": 32}), "unknown key 'data.imagesize'"),
        (with_method(mask_ration=0.5), "unknown key 'methods.0.mask_ration' for method 'mae'"),
        (minimal(seed="zero"), "seed must be an integer, got str 'zero'"),
        (minimal(pretrain={"epochs": 1.5}), "pretrain.epochs must be an integer"),
        (minimal(pretrain={"epochs": 0}), "pretrain.epochs must be positive"),
        (with_method(mask_ratio="high"), "methods.0.mask_ratio must be a number"),
        (with_method(mask_ratio=1.0), r"methods.0.mask_ratio must be in \[0, 1\)"),
        (with_method(mask_ratio=-0.1), r"methods.0.mask_ratio must be in \[0, 1\)"),
        (
            with_method(patch_size=5),
            "data.image_size=32 is not divisible by methods.0.patch_size=5",
        ),
        (with_method(norm_pix_loss="yes"), "methods.0.norm_pix_loss must be true or false"),
        (minimal(methods=[{"name": "maee"}]), "methods.0.name: unknown method 'maee'; available"),
        (
            with_method(backbone="vit_enormous"),
            "methods.0.backbone: unknown backbone 'vit_enormous'",
        ),
        (with_method(image_size=64), "methods.0.image_size is set by data.image_size"),
        (minimal(methods=[]), "methods must list at least one method"),
        (minimal(methods=[{"backbone": "vit_tiny"}]), "missing key 'methods.0.name'"),
        (
            minimal(methods=[{"name": "mae"}, {"name": "mae"}]),
            "a second 'mae'; give it a distinct 'label'",
        ),
        (minimal(trainer={"precision": "64"}), "trainer.precision must be one of"),
        (
            minimal(trainer={"devices": 3}),
            "pretrain.batch_size=256 is not divisible by the 3 devices",
        ),
        (minimal(data={"dataset": "imagenet"}), "data.dataset must be one of"),
        (minimal(data={"dataset": "imagefolder"}), "data.root is required"),
        (minimal(data={"dataset": "mnist5k", "mean": [0.5]}), "data.mean must list 3 numbers"),
        (minimal(eval={"linear": {"mode": "fast"}}), "eval.linear.mode must be one of"),
        (minimal(eval={"knn": {"k": 0}}), "eval.knn.k must be positive"),
        ({"data": {"dataset": "mnist5k"}, "methods": [{"name": "mae"}]}, "missing key 'name'"),
    ],
)
def test_bad_recipes_name_the_key(raw, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict(raw)


def test_sections_can_be_disabled_with_null():
    recipe = recipe_from_dict(minimal(eval={"knn": None, "linear": None}))
    assert recipe.eval.knn is None and recipe.eval.linear is None


def test_overrides_set_nested_keys_and_list_items_with_yaml_types():
    raw = with_method(mask_ratio=0.75)
    for override in [
        "pretrain.epochs=10",
        "methods.0.mask_ratio=0.9",
        "trainer.precision=bf16-mixed",
        "eval.finetune.epochs=3",
        "eval.linear=null",
        "data.mean=[0.5, 0.5, 0.5]",
        "name=other",
    ]:
        apply_override(raw, override)
    recipe = recipe_from_dict(raw)
    assert recipe.pretrain.epochs == 10 and recipe.methods[0]["mask_ratio"] == 0.9
    assert recipe.trainer.precision == "bf16-mixed" and recipe.eval.linear is None
    assert recipe.eval.finetune.epochs == 3 and recipe.data.mean == [0.5, 0.5, 0.5]
    assert recipe.name == "other"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pretrain.epochs", "not of the form dotted.key=value"),
        ("=3", "not of the form dotted.key=value"),
        ("methods.3.mask_ratio=0.5", "no list item '3'"),
        ("methods.x.mask_ratio=0.5", "no list item 'x'"),
        ("data.mean=[0.5,", "not valid YAML"),
        ("name.value=1", "not a mapping or list"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(RecipeError, match=message):
        apply_override(minimal(), override)


def test_load_recipe_from_yaml_with_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(with_method()))
    recipe = load_recipe(path, ["pretrain.batch_size=64"])
    assert recipe.pretrain.batch_size == 64
    with pytest.raises(RecipeError, match="recipe file not found: .*missing.yaml"):
        load_recipe(tmp_path / "missing.yaml")
    path.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(path)


def test_every_shipped_recipe_is_valid():
    recipes = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))
    assert recipes, "no recipes shipped"
    for path in recipes:
        recipe = load_recipe(path)
        assert recipe.name and recipe.methods, path
