"""Exported backbones load in timm, transformers and the official format with the same features."""

import json

import pytest
import timm
import torch

from ssl_mae_plugin import MAE
from ssl_mae_plugin.cli import main
from ssl_mae_plugin.pretrain import load_pretrained
from tests.conftest import TINY_MAE, TINY_SIMCLR, pretrain_method, tiny_recipe


@pytest.fixture(scope="module")
def checkpoints(cifar_folder, tmp_path_factory):
    """A one-epoch MAE and SimCLR of the tiny ViT, as our runs save them."""
    output = tmp_path_factory.mktemp("runs")
    raw = tiny_recipe(cifar_folder, output, methods=[TINY_MAE, TINY_SIMCLR], pretrain={"epochs": 1})
    return [pretrain_method(raw, index).checkpoint for index in (0, 1)]


IMAGES = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def ours(checkpoint):
    method, _ = load_pretrained(checkpoint)
    with torch.no_grad():
        return method, method.forward_features(IMAGES)


@pytest.mark.parametrize("which", [0, 1], ids=["mae", "simclr"])
def test_timm_loads_the_encoder_with_the_same_features(checkpoints, tmp_path, which):
    assert main(["export", checkpoints[which], "--format", "timm", "--out", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    model = timm.create_model(
        config["architecture"],
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "model.safetensors")},
        **config["model_args"],
    ).eval()
    _, expected = ours(checkpoints[which])
    with torch.no_grad():
        torch.testing.assert_close(model(IMAGES), expected)


def test_the_official_file_rebuilds_the_whole_mae(checkpoints, tmp_path):
    path = tmp_path / "mae.pth"
    assert main(["export", checkpoints[0], "--format", "official", "--out", str(path)]) == 0
    stored = torch.load(path, weights_only=False)
    assert set(stored) == {"model", "args"} and "decoder_pred.weight" in stored["model"]
    method, expected = ours(checkpoints[0])
    loaded = MAE.from_official(path, num_heads=2, decoder_num_heads=2).eval()
    noise = torch.rand(3, loaded.num_patches)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_features(IMAGES), expected)
        torch.testing.assert_close(
            loaded(IMAGES, noise=noise).loss, method.model(IMAGES, noise=noise).loss
        )


def test_transformers_loads_the_mae_with_the_same_features_and_loss(checkpoints, tmp_path):
    transformers = pytest.importorskip("transformers")
    assert main(["export", checkpoints[0], "--format", "hf", "--out", str(tmp_path)]) == 0
    method, expected = ours(checkpoints[0])
    encoder = transformers.ViTMAEModel.from_pretrained(tmp_path, mask_ratio=0.0).eval()
    full = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path).eval()
    noise = torch.rand(3, method.model.num_patches)
    with torch.no_grad():  # no masking: the patch order is shuffled, the cls token is not
        torch.testing.assert_close(
            encoder(IMAGES).last_hidden_state[:, 0], expected, atol=1e-5, rtol=1e-5
        )
        reference = full(pixel_values=IMAGES, noise=noise)
        torch.testing.assert_close(
            reference.loss, method.model(IMAGES, noise=noise).loss, atol=1e-5, rtol=1e-5
        )


def test_formats_that_need_an_mae_refuse_other_methods(checkpoints, tmp_path, capsys):
    assert (
        main(["export", checkpoints[1], "--format", "official", "--out", str(tmp_path / "x.pth")])
        == 2
    )
    assert "exports MAE models, not 'simclr'" in capsys.readouterr().err
