"""``models:`` rows end to end: published-format files and earlier runs beside trained rows."""

import argparse
import json

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from ssl_mae_plugin import MAE
from ssl_mae_plugin.backbones import build_backbone
from ssl_mae_plugin.cli import main
from ssl_mae_plugin.data import eval_transform
from ssl_mae_plugin.evaluation import extract_features, knn_classify
from ssl_mae_plugin.evaluation.protocols import prepare_data
from ssl_mae_plugin.evaluation.transforms import TransformedDataset
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.runner import run_recipe
from tests.conftest import pretrain_method, tiny_recipe

EVAL = {"knn": {"k": 10}, "linear": {"epochs": 2, "batch_size": 64}}


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """A facebookresearch/mae file (encoder only) and a lightly-style ResNet-18 state dict."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(3)
    mae = MAE(img_size=32, patch_size=8, embed_dim=192, depth=1, num_heads=3,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)  # fmt: skip
    encoder = {k: v for k, v in mae.official_state_dict().items() if not k.startswith("decoder")}
    encoder.pop("mask_token")
    official = folder / "mae_pretrain_vit_tiny.pth"
    torch.save({"model": encoder, "args": argparse.Namespace(norm_pix_loss=True)}, official)
    resnet = build_backbone("resnet18", 32)
    lightly_style = folder / "resnet18_lightly.pth"
    torch.save(nn.Sequential(*list(resnet.children())[:-1]).state_dict(), lightly_style)
    return {"official": official, "resnet": lightly_style, "mae": mae.eval()}


def _models_recipe(cifar_folder, output, models):
    raw = tiny_recipe(cifar_folder, output, eval=EVAL)
    return {**raw, "methods": [], "models": models}


def test_a_models_only_recipe_evaluates_published_formats_with_controls(
    cifar_folder, tmp_path, weight_files
):
    models = [
        {"label": "official", "weights": str(weight_files["official"])},
        {"label": "resnet", "weights": str(weight_files["resnet"]), "architecture": "resnet18"},
    ]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_models_recipe(cifar_folder, tmp_path / "runs", models)))
    assert main(["eval", str(path)]) == 0
    report = json.loads((tmp_path / "runs" / "t" / "report.json").read_text())
    rows = {row["label"]: row for row in report["rows"]}
    assert list(rows) == ["official", "resnet", "official (untrained)", "resnet (untrained)",
                          "pixels"]  # fmt: skip
    assert rows["official"]["method"] == "weights" and rows["official"]["pretrain"] is None
    assert rows["official"]["control"] == "official (untrained)"
    assert rows["official"]["weights"]["format"] == "official"
    assert rows["resnet"]["weights"]["format"] == "state_dict"
    assert "facebookresearch/mae" in rows["official"]["backbone"]
    assert rows["official (untrained)"]["controls"] == ["official"]
    for row in rows.values():
        assert row["knn"]["ci95"]["top1"][0] <= row["knn"]["top1"] <= row["knn"]["ci95"]["top1"][1]
    # the row's k-NN is the source model's: same features, same neighbours
    recipe = recipe_from_dict(_models_recipe(cifar_folder, tmp_path / "runs", models))
    data = prepare_data(recipe)
    transform = eval_transform(32, data.normalization)
    mae = weight_files["mae"]

    class Source(nn.Module):
        def forward_features(self, images):
            return mae.forward_features(images, pool="cls")

    features = [
        extract_features(Source(), DataLoader(TransformedDataset(split, transform), batch_size=64))
        for split in (data.train, data.val)
    ]
    expected = knn_classify(*features[0], *features[1], k=10, temperature=0.1)
    assert rows["official"]["knn"]["top1"] == pytest.approx(expected["top1"])
    text = (tmp_path / "runs" / "t" / "report.md").read_text()
    assert "| official |" in text and "| resnet (untrained) |" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"architecture": "resnet50"}, "missing"),  # a ResNet-18 file for a ResNet-50
        ({"weights": "nowhere.pth"}, "nowhere.pth"),
    ],
)
def test_a_file_that_does_not_fit_is_exit_2_naming_it(
    cifar_folder, tmp_path, weight_files, change, message, capsys
):
    model = {"label": "resnet", "weights": str(weight_files["resnet"]),
             "architecture": "resnet18", **change}  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_models_recipe(cifar_folder, tmp_path / "runs", [model])))
    assert main(["eval", str(path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("ssl-mae: error: models.0 (resnet):") and message in line
    assert str(change.get("weights", weight_files["resnet"])) in line
    assert not (tmp_path / "runs" / "t" / "report.json").exists()


def test_an_earlier_run_beside_the_same_training_evaluates_the_same(cifar_folder, tmp_path):
    earlier = tiny_recipe(cifar_folder, tmp_path / "earlier", pretrain={"epochs": 1},
                          eval=EVAL)  # fmt: skip
    pretrain_method(earlier)
    checkpoint = tmp_path / "earlier" / "t" / "mae" / "checkpoints" / "last.ckpt"
    raw = tiny_recipe(cifar_folder, tmp_path / "now", pretrain={"epochs": 1}, eval=EVAL)
    raw["models"] = [{"label": "last week", "weights": str(checkpoint)}]
    report = run_recipe(recipe_from_dict(raw), log=lambda _: None)
    rows = {row["label"]: row for row in report["rows"]}
    assert rows["last week"]["weights"]["format"] == "checkpoint"
    assert rows["last week"]["control"] == "last week (untrained)"
    # the same recipe trained twice on the CPU gives the same weights, so the same results
    assert rows["last week"]["knn"]["top1"] == rows["mae"]["knn"]["top1"]
    assert rows["last week"]["linear"]["top1"] == rows["mae"]["linear"]["top1"]
    assert rows["last week (untrained)"]["knn"] == rows["mae (untrained)"]["knn"]
    assert {(p["row"], p["versus"]) for p in report["paired"]} >= {("last week", "mae")}


def test_blocks_a_vit_does_not_have_stop_before_any_work(
    cifar_folder, tmp_path, weight_files, capsys
):
    raw = _models_recipe(cifar_folder, tmp_path / "runs", [
        {"label": "official", "weights": str(weight_files["official"])}
    ])  # fmt: skip
    raw["eval"]["features"] = {"pool": "cls", "blocks": 3}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["eval", str(path)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (
        "ssl-mae: error: eval.features (official): blocks=3 asks for the last 3 of 1 blocks"
    )
