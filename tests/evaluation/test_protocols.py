"""The evaluator's cache keys cover every setting that changes a result."""

import pytest

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.evaluation.protocols import EvalData, Evaluator
from ssl_mae_plugin.recipe_loading import apply_override, recipe_from_dict
from ssl_mae_plugin.storage import digest
from tests.conftest import minimal_recipe

FINETUNE = {"epochs": 2, "warmup_epochs": 0, "batch_size": 8}
DATA_KEY = {"dataset": "mnist5k", "sizes": (40, 10), "subset_seed": 0}


def keys(*overrides: str, data_key: dict = DATA_KEY) -> dict[str, str]:
    raw = minimal_recipe(eval={"finetune": FINETUNE})
    for override in overrides:
        apply_override(raw, override)
    recipe = recipe_from_dict(raw)
    normalization = Normalization(tuple(recipe.data.mean), tuple(recipe.data.std))
    evaluator = Evaluator(recipe, EvalData([], [], normalization, 10, data_key))
    sections = {
        "knn": recipe.eval.knn,
        "linear": recipe.eval.linear,
        "finetune": recipe.eval.finetune,
    }
    return {part: digest(evaluator._settings(part, section)) for part, section in sections.items()}


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",  # heads and data order (and the subset, through the data key)
        "trainer.precision=bf16-mixed",
        "data.image_size=48",  # the evaluation transform
        "data.mean=[0.5, 0.5, 0.5]",
    ],
)
def test_a_setting_every_part_depends_on_changes_every_key(override):
    before, after = keys(), keys(override)
    assert all(before[part] != after[part] for part in before), override


@pytest.mark.parametrize(
    ("override", "part"),
    [
        ("eval.knn.k=20", "knn"),
        ("eval.knn.temperature=0.07", "knn"),
        ("eval.linear.epochs=7", "linear"),
        ("eval.linear.blr=0.2", "linear"),
        ("eval.linear.mode=augmented", "linear"),
        ("eval.finetune.layer_decay=0.65", "finetune"),
        ("eval.finetune.mixup=0.0", "finetune"),
    ],
)
def test_a_parts_own_option_changes_only_its_key(override, part):
    before, after = keys(), keys(override)
    assert {p for p in before if before[p] != after[p]} == {part}, override


def test_other_images_change_every_key_and_loader_settings_none():
    other = {**DATA_KEY, "sizes": (39, 10)}
    assert all(a != b for a, b in zip(keys().values(), keys(data_key=other).values(), strict=True))
    assert keys("eval.batch_size=64", "data.num_workers=0") == keys()
