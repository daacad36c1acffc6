"""Recipe files: YAML, dotted overrides with YAML types, missing files, bad YAML."""

import pytest
import yaml

from ssl_mae_plugin.recipe_loading import apply_override, load_recipe, recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import mae_recipe as with_method
from tests.conftest import minimal_recipe as minimal


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
    assert recipe.pretrain.epochs == 10 and recipe.methods[0].mask_ratio == 0.9
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
        ("name.value=1", "name is not a mapping"),
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
