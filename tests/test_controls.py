"""Each trained row's own control, shared when identical, and the raw-pixels row."""

import pytest
import torch

from ssl_mae_plugin.data import eval_transform
from ssl_mae_plugin.evaluation import knn_classify
from ssl_mae_plugin.evaluation.protocols import prepare_data
from ssl_mae_plugin.pretrain import build_method
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.runner import run_recipe
from tests.conftest import TINY_MAE, TINY_VIT, tiny_recipe

EVAL = {"knn": {"k": 5}, "linear": None, "batch_size": 64}


@pytest.fixture(scope="module")
def report(cifar_folder, tmp_path_factory):
    """Two MAEs that differ only in mask ratio (the same untrained model), one with mean
    pooling (another control), and a MoCo v3 whose patch projection stays at its init."""
    methods = [
        {**TINY_MAE, "label": "mae-75"},
        {**TINY_MAE, "label": "mae-50", "mask_ratio": 0.5},
        {**TINY_MAE, "label": "mae-mean", "pool": "mean"},
        {"name": "mocov3", **TINY_VIT, "hidden_dim": 32, "output_dim": 16},
    ]
    raw = tiny_recipe(cifar_folder, tmp_path_factory.mktemp("runs"), methods=methods, eval=EVAL)
    raw["pretrain"]["epochs"] = 1
    recipe = recipe_from_dict(raw)
    return recipe, run_recipe(recipe, log=lambda _: None)


def by_label(report):
    return {row["label"]: row for row in report["rows"]}


def test_identical_untrained_models_share_one_control(report):
    _, report = report
    rows = by_label(report)
    assert rows["mae-75"]["control"] == rows["mae-50"]["control"] == "mae-75 (untrained)"
    assert rows["mae-mean"]["control"] == "mae-mean (untrained)"  # other pooling
    assert rows["mocov3"]["control"] == "mocov3 (untrained)"
    controls = [row for row in report["rows"] if row["method"] == "random_init"]
    assert [row["controls"] for row in controls] == [["mae-75", "mae-50"], ["mae-mean"], ["mocov3"]]


def test_the_control_is_the_trained_models_own_start(report):
    recipe, _ = report
    checkpoint = recipe.method_dir(3) / "checkpoints" / "last.ckpt"
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    untrained = build_method(recipe, 3, num_classes=10).state_dict()
    frozen = "backbone.patch_embed.proj.weight"  # MoCo v3 never trains it: still the init
    assert torch.equal(trained[frozen], untrained[frozen])
    moved = "backbone.blocks.0.mlp.fc1.weight"
    assert not torch.equal(trained[moved], untrained[moved])


def test_the_pixels_row_is_a_knn_on_flattened_normalised_images(report):
    recipe, report = report
    data = prepare_data(recipe)
    transform = eval_transform(32, data.normalization)
    features = [
        (torch.stack([transform(split[i][0]).flatten() for i in range(len(split))]),
         torch.tensor([split[i][1] for i in range(len(split))]))
        for split in (data.train, data.val)
    ]  # fmt: skip
    expected = knn_classify(*features[0], *features[1], k=5, num_classes=10)
    pixels = by_label(report)["pixels"]
    assert pixels["knn"]["top1"] == pytest.approx(expected["top1"])
    assert pixels["knn"]["top5"] == pytest.approx(expected["top5"])
    assert features[0][0].shape == (160, 3 * 32 * 32)
