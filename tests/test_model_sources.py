from __future__ import annotations

import argparse
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from ssl_mae_plugin import MAE
from ssl_mae_plugin.backbones import build_backbone
from ssl_mae_plugin.data import IMAGENET_NORM, Normalization
from ssl_mae_plugin.export import to_transformers, transformers_config
from ssl_mae_plugin.extras import MissingExtraError
from ssl_mae_plugin.model_sources import EvalModel, WeightsError, detect_format, load_model
from ssl_mae_plugin.pretrain.checkpoints import load_pretrained
from ssl_mae_plugin.pretrain.trainer import build_method
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from tests.conftest import pretrain_method, tiny_recipe

TINY_HF = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}


def images(size: int = 32, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- official -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[MAE, dict[str, Path]]:
    """A tiny MAE as a full facebookresearch/mae checkpoint and as an encoder-only release."""
    torch.manual_seed(0)
    mae = MAE(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3,
              decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2).eval()  # fmt: skip
    folder = tmp_path_factory.mktemp("official")
    state_dict = mae.official_state_dict()
    files = {"full": folder / "mae_pretrain.pth", "encoder": folder / "mae_encoder.pth"}
    args = argparse.Namespace(norm_pix_loss=True)
    torch.save({"model": state_dict, "args": args}, files["full"])
    encoder_only = {k: v for k, v in state_dict.items() if not k.startswith(("decoder", "mask"))}
    torch.save({"model": encoder_only}, files["encoder"])
    return mae, files


@pytest.mark.parametrize("kind", ["full", "encoder"])
def test_official_features_match_the_mae(official, kind):
    mae, files = official
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no decoder weights" warning
        loaded = load_model("official", files[kind], None, image_size=32)
    assert isinstance(loaded.model, EvalModel)
    assert loaded.architecture == "ViT 192x2 patch 8 (facebookresearch/mae)"
    with torch.no_grad():
        expected = mae.forward_features(images(), pool="cls")
        assert torch.allclose(loaded.model.forward_features(images()), expected, atol=1e-6)


def test_official_at_another_image_size_resizes_the_position_table(official):
    loaded = load_model("official", official[1]["encoder"], None, image_size=48)
    assert loaded.model.backbone.pos_embed.shape == (1, 1 + 6 * 6, 192)
    assert loaded.model.forward_features(images(48)).shape == (2, 192)


def test_official_untrained_is_the_paper_initialisation(official):
    loaded = load_model("official", official[1]["full"], None, image_size=32)
    torch.manual_seed(3)
    fresh = MAE(img_size=32, patch_size=8, embed_dim=192, depth=2, num_heads=3,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)  # fmt: skip
    assert same_weights(loaded.untrained(3).backbone, fresh.encoder)


def test_official_finetuned_file_is_refused(official, tmp_path):
    # models_vit.py with global pooling: fc_norm and head instead of the final norm
    state_dict = {
        **{k: v for k, v in official[0].official_state_dict().items() if not k.startswith("norm.")},
        **{"fc_norm.weight": torch.ones(192), "fc_norm.bias": torch.zeros(192)},
        **{"head.weight": torch.zeros(10, 192), "head.bias": torch.zeros(10)},
    }
    path = tmp_path / "mae_finetuned.pth"
    torch.save({"model": state_dict}, path)
    expected = f"{path}: a fine-tuned facebookresearch/mae checkpoint ('fc_norm.bias')"
    with pytest.raises(WeightsError, match=re.escape(expected)):
        load_model("official", path, None, image_size=32)


# -- timm -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory) -> tuple[nn.Module, dict[str, Path]]:
    """timm's ``test_vit`` saved with its head (safetensors) and headless (torch.save)."""
    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False).eval()
    folder = tmp_path_factory.mktemp("timm")
    files = {"head": folder / "model.safetensors", "headless": folder / "headless.pth"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, files["head"])
    body = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    torch.save(body, files["headless"])
    return model, files


@pytest.mark.parametrize("kind", ["head", "headless"])
def test_timm_file_gives_the_source_features(timm_vit, kind):
    model, files = timm_vit
    loaded = load_model("timm", files[kind], "test_vit", image_size=160)
    assert loaded.architecture == "test_vit (timm)"
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(images(160)), pre_logits=True)
        assert torch.allclose(loaded.model.forward_features(images(160)), expected, atol=1e-6)


def test_timm_resamples_to_another_image_size(timm_vit):
    loaded = load_model("timm", timm_vit[1]["headless"], "test_vit", image_size=32)
    assert loaded.model.forward_features(images(32)).shape == (2, 64)


def test_timm_file_with_a_missing_key_names_it(timm_vit, tmp_path):
    body = {k: v for k, v in timm_vit[0].state_dict().items() if k != "blocks.1.norm1.weight"}
    path = tmp_path / "broken.pth"
    torch.save(body, path)
    expected = f"{path}: Error(s) in loading state_dict for VisionTransformer: Missing key(s)"
    with pytest.raises(WeightsError, match=re.escape(expected) + '.*"blocks.1.norm1.weight"'):
        load_model("timm", path, "test_vit", image_size=160)


# -- huggingface --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, tuple[nn.Module, Path]]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    models = {
        "ViTMAEModel": transformers.ViTMAEModel(
            transformers.ViTMAEConfig(**TINY_HF, mask_ratio=0.0)
        ),
        "ViTModel": transformers.ViTModel(transformers.ViTConfig(**TINY_HF)),
        "ViTMAEForPreTraining": transformers.ViTMAEForPreTraining(
            transformers.ViTMAEConfig(**TINY_HF, mask_ratio=0.0)
        ),
    }
    folders = {}
    for name, model in models.items():
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        folders[name] = (model.eval(), folder)
    return folders


@pytest.mark.parametrize("name", ["ViTMAEModel", "ViTModel", "ViTMAEForPreTraining"])
def test_huggingface_features_match_the_cls_token(hf_folders, name):
    model, folder = hf_folders[name]
    loaded = load_model("huggingface", folder, None, image_size=32)
    encoder = model.base_model
    assert loaded.architecture == f"ViT 32x2 patch 8 (transformers {type(encoder).__name__})"
    assert loaded.model.backbone.norm.eps == encoder.config.layer_norm_eps
    with torch.no_grad():
        expected = encoder(pixel_values=images()).last_hidden_state[:, 0]
        assert torch.allclose(loaded.model.forward_features(images()), expected, atol=1e-5)


def test_huggingface_inverts_our_export(official, tmp_path):
    transformers = pytest.importorskip("transformers")
    mae = official[0]
    theirs = transformers.ViTMAEForPreTraining(transformers_config(mae))
    theirs.load_state_dict(to_transformers(mae.official_state_dict()), strict=True)
    theirs.save_pretrained(tmp_path)
    loaded = load_model("huggingface", tmp_path, None, image_size=32)
    assert same_weights(loaded.model.backbone, mae.encoder)
    with torch.no_grad():
        expected = mae.forward_features(images(), pool="cls")
        assert torch.allclose(loaded.model.forward_features(images()), expected, atol=1e-6)


def test_huggingface_at_another_image_size(hf_folders):
    loaded = load_model("huggingface", hf_folders["ViTModel"][1], None, image_size=48)
    assert loaded.model.forward_features(images(48)).shape == (2, 32)


def test_huggingface_without_transformers_names_the_extra(hf_folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"pip install 'ssl-mae-plugin\[hf\]'"):
        load_model("huggingface", hf_folders["ViTModel"][1], None, image_size=32)


def test_huggingface_refuses_another_activation(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.ViTModel(transformers.ViTConfig(**TINY_HF, hidden_act="relu")).save_pretrained(
        tmp_path
    )
    with pytest.raises(WeightsError, match=re.escape(f"{tmp_path}: hidden_act is 'relu'")):
        load_model("huggingface", tmp_path, None, image_size=32)


# -- our checkpoints ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(cifar_folder, tmp_path_factory):
    raw = tiny_recipe(cifar_folder, tmp_path_factory.mktemp("runs"), pretrain={"epochs": 1})
    recipe = recipe_from_dict(raw)
    return recipe, Path(pretrain_method(recipe).checkpoint)


def test_checkpoint_is_the_method_itself(checkpoint):
    recipe, path = checkpoint
    loaded = load_model("checkpoint", path, None, image_size=32)
    assert loaded.architecture == "ViT 32x1 patch 8 (ssl-mae mae)"
    method, _ = load_pretrained(path)
    with torch.no_grad():
        expected = method.forward_features(images())
        assert torch.equal(loaded.model.forward_features(images()), expected)
    assert same_weights(loaded.untrained(recipe.seed), build_method(recipe, 0, num_classes=10))


def test_checkpoint_at_another_image_size_is_refused(checkpoint):
    expected = f"{checkpoint[1]} was pretrained at image_size 32, not the evaluation's 64"
    with pytest.raises(WeightsError, match=re.escape(expected)):
        load_model("checkpoint", checkpoint[1], None, image_size=64)


# -- state dicts ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet(tmp_path_factory) -> tuple[nn.Module, dict[str, Path]]:
    """A CIFAR-stem resnet18 saved as its state dict and lightly-style (children but fc)."""
    torch.manual_seed(0)
    model = build_backbone("resnet18", 32).eval()
    folder = tmp_path_factory.mktemp("resnet")
    files = {"own": folder / "resnet18.pth", "lightly": folder / "lightly.pth"}
    torch.save(model.state_dict(), files["own"])
    torch.save(nn.Sequential(*list(model.children())[:-1]).state_dict(), files["lightly"])
    return model, files


@pytest.mark.parametrize("kind", ["own", "lightly"])
def test_resnet_state_dicts_give_the_source_features(resnet, kind):
    model, files = resnet
    loaded = load_model("state_dict", files[kind], "resnet18", image_size=32)
    assert loaded.architecture == "resnet18 (state dict)"
    with torch.no_grad():
        expected = model(images()).flatten(1)
        assert torch.allclose(loaded.model.forward_features(images()).flatten(1), expected)


def test_cifar_stem_at_imagenet_size_says_so(resnet):
    path = resnet[1]["own"]
    expected = (
        f"{path}: conv1.weight has shape (64, 3, 3, 3) (a CIFAR stem) but resnet18 at "
        "image_size 224 has (64, 3, 7, 7) (an ImageNet stem); image_size <= 64 builds the "
        "CIFAR stem, larger sizes the ImageNet stem"
    )
    with pytest.raises(WeightsError, match=re.escape(expected)):
        load_model("state_dict", path, "resnet18", image_size=224)


def test_state_dict_with_a_missing_key_names_it(resnet, tmp_path):
    body = {k: v for k, v in resnet[0].state_dict().items() if k != "layer2.0.bn1.weight"}
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in body.items()}}, path)
    expected = f"{path}: does not fit resnet18 at image_size 32: missing layer2.0.bn1.weight (128,)"
    with pytest.raises(WeightsError, match=re.escape(expected)):
        load_model("state_dict", path, "resnet18", image_size=32)


# -- untrained builders ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "image_size"),
    [("official", 48), ("timm", 32), ("huggingface", 32), ("checkpoint", 32), ("state_dict", 32)],
)
def test_untrained_builds_the_loaded_architecture_from_a_seed(source, image_size, request):
    path, architecture = {
        "official": (lambda: request.getfixturevalue("official")[1]["full"], None),
        "timm": (lambda: request.getfixturevalue("timm_vit")[1]["head"], "test_vit"),
        "huggingface": (lambda: request.getfixturevalue("hf_folders")["ViTMAEModel"][1], None),
        "checkpoint": (lambda: request.getfixturevalue("checkpoint")[1], None),
        "state_dict": (lambda: request.getfixturevalue("resnet")[1]["lightly"], "resnet18"),
    }[source]
    loaded = load_model(source, path(), architecture, image_size)
    first, again, other = (loaded.untrained(seed) for seed in (0, 0, 1))
    assert type(first) is type(loaded.model)
    assert same_weights(first, again)
    assert not same_weights(first, other)
    shapes = {k: v.shape for k, v in loaded.model.state_dict().items()}
    assert {k: v.shape for k, v in first.state_dict().items()} == shapes
    with torch.no_grad():
        features = first.forward_features(images(image_size))
        assert features.shape == loaded.model.forward_features(images(image_size)).shape


def test_normalization_is_what_the_source_expects(
    official, timm_vit, hf_folders, checkpoint, resnet, tmp_path
):
    transformers = pytest.importorskip("transformers")
    assert load_model("official", official[1]["full"], None, 32).normalization == IMAGENET_NORM
    timm_norm = load_model("timm", timm_vit[1]["head"], "test_vit", 32).normalization
    config = timm_vit[0].pretrained_cfg
    assert timm_norm == Normalization(tuple(config["mean"]), tuple(config["std"]))
    folder = shutil.copytree(hf_folders["ViTModel"][1], tmp_path / "vit")
    assert load_model("huggingface", folder, None, 32).normalization == IMAGENET_NORM
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(
        folder
    )
    expected = Normalization((0.5,) * 3, (0.25,) * 3)
    assert load_model("huggingface", folder, None, 32).normalization == expected
    recipe, path = checkpoint
    run = Normalization(tuple(recipe.data.mean), tuple(recipe.data.std))
    assert load_model("checkpoint", path, None, 32).normalization == run
    assert load_model("state_dict", resnet[1]["own"], "resnet18", 32).normalization is None


# -- detection and errors -----------------------------------------------------------------------


def test_detect_format(official, timm_vit, hf_folders, checkpoint, resnet, tmp_path):
    assert [detect_format(path) for path in official[1].values()] == ["official", "official"]
    assert {detect_format(folder) for _, folder in hf_folders.values()} == {"huggingface"}
    assert detect_format(checkpoint[1]) == "checkpoint"
    assert [detect_format(path) for path in resnet[1].values()] == ["state_dict", "state_dict"]
    assert detect_format(timm_vit[1]["head"]) == "official"  # a timm ViT has MAE's keys
    with pytest.raises(WeightsError, match=re.escape(f"{tmp_path / 'nothing.pth'}: no such file")):
        detect_format(tmp_path / "nothing.pth")


def test_errors_name_the_path(resnet, tmp_path):
    path = resnet[1]["own"]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match=re.escape(f"{garbage}: unreadable weights file")):
        load_model("state_dict", garbage, "resnet18", image_size=32)
    with pytest.raises(WeightsError, match="unknown format 'onnx'"):
        load_model("onnx", path, None, image_size=32)
    with pytest.raises(WeightsError, match=re.escape(f"{path}: format state_dict needs an arch")):
        load_model("state_dict", path, None, image_size=32)
    with pytest.raises(WeightsError, match="no such file"):
        load_model("official", tmp_path / "missing.pth", None, image_size=32)
