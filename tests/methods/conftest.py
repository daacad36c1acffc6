"""Fixtures and helpers of the method tests: real CIFAR-10 views, gradient and teacher checks,
short runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly.data import MultiViewCollate
from PIL import Image
from torch import nn

from ssl_mae_plugin.data import NORMALIZATIONS
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.pretrain import build_method
from ssl_mae_plugin.pretrain.callbacks import read_metrics
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import Recipe
from tests.conftest import CIFAR_ROOT, pretrain_method

CIFAR_TRAIN = CIFAR_ROOT / "train"
NORMALIZATION = NORMALIZATIONS["cifar10"]
# A ViT small enough for CPU tests, and a ResNet-18 with its CIFAR stem at 32 px.
TINY_VIT = {
    "backbone": "vit_tiny",
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "patch_size": 8,
    "image_size": 32,
}
RESNET18 = {"backbone": "resnet18", "image_size": 32}
BACKBONES = pytest.mark.parametrize("backbone", [TINY_VIT, RESNET18], ids=["vit", "resnet18"])


def load_cifar_images(count: int = 8) -> list[Image.Image]:
    """Real CIFAR-10 JPEGs, two of each class in turn, as RGB PIL images."""
    if not CIFAR_TRAIN.is_dir():
        pytest.skip(f"CIFAR-10 JPEGs not found at {CIFAR_TRAIN}")
    images = []
    for class_dir in sorted(CIFAR_TRAIN.iterdir())[: (count + 1) // 2]:
        for path in sorted(class_dir.iterdir())[:2]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
    return images[:count]


def make_views(method: SSLMethod, images: list[Image.Image]) -> list[torch.Tensor]:
    """The method's own default transform on real images, collated by lightly."""
    transform = method.default_transform(NORMALIZATION)
    torch.manual_seed(0)
    samples = [(transform(image), 0, str(i)) for i, image in enumerate(images)]
    views, _, _ = MultiViewCollate()(samples)
    return views


def assert_gradients_reach(module: nn.Module) -> None:
    """Every trainable parameter has a finite gradient, and some gradient is non-zero."""
    trainable = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    assert trainable
    for name, param in trainable:
        assert param.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for _, param in trainable)


def check_ssl_step(
    method: SSLMethod, images: list[Image.Image], online: list[nn.Module]
) -> list[torch.Tensor]:
    """``ssl_step`` on real views: finite loss, probe features, gradients reach ``online``."""
    views = make_views(method, images)
    loss, features = method.ssl_step(views, list(range(len(images))))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert features is not None and features.shape == (len(images), method.feature_dim)
    assert not features.requires_grad
    loss.backward()
    for module in online:
        assert_gradients_reach(module)
    return views


def teacher_pairs(method: Any) -> list[tuple[nn.Module, nn.Module]]:
    """(online, teacher) module pairs of a method with an EMA teacher."""
    return [
        (method.backbone, method.teacher_backbone),
        (method.projection_head, method.teacher_projection_head),
    ]


def check_teacher(method: Any, images: list[Image.Image]) -> None:
    """The teacher gets no gradient, and an EMA update moves it towards the online networks."""
    pairs = teacher_pairs(method)
    loss, _ = method.ssl_step(make_views(method, images), list(range(len(images))))
    loss.backward()
    for _, teacher in pairs:
        assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    with torch.no_grad():  # stand-in for an optimizer step of the online networks
        for online, _ in pairs:
            for param in online.parameters():
                param.add_(torch.randn_like(param) * 0.01)

    @torch.no_grad()
    def distance() -> float:
        return sum(
            float((o - t).pow(2).sum())
            for online, teacher in pairs
            for o, t in zip(online.parameters(), teacher.parameters(), strict=True)
        )

    before = distance()
    assert before > 0
    method.update_teacher(1.0)  # momentum 1 keeps the teacher
    assert distance() == pytest.approx(before)
    method.update_teacher(0.5)  # halfway: the squared distance drops to a quarter
    assert distance() == pytest.approx(0.25 * before, rel=1e-4)


def check_optimizer_groups(method: Any) -> None:
    """The optimizer holds every trainable online parameter and no teacher parameter."""
    grouped = [p for group in method.optimizer_parameters() for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    teacher = [p for name, p in method.named_parameters() if name.startswith("teacher_")]
    assert not {id(p) for p in grouped} & {id(p) for p in teacher}
    trainable = [p for name, p in method.named_parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in grouped}


def run_pretraining(
    output_dir: Path,
    image_folder: Path,
    entry: dict[str, Any],
    epochs: int,
    image_size: int = 32,
    batch_size: int = 32,
    images: int = 128,
) -> tuple[Recipe, list[float]]:
    """Pretrain one method on real CIFAR-10 JPEGs with the Trainer; per-epoch losses."""
    recipe = recipe_from_dict(
        {
            "name": "methods-test",
            "output_dir": str(output_dir),
            "data": {
                "dataset": "imagefolder",
                "root": str(image_folder),
                "train_split": "train",
                "val_split": "test",
                "image_size": image_size,
                "num_workers": 0,
                "max_train_images": images,
            },
            "methods": [entry],
            "pretrain": {"epochs": epochs, "batch_size": batch_size},
            "trainer": {"accelerator": "cpu", "progress_bar": False},
        }
    )
    result = pretrain_method(recipe)
    rows = read_metrics(recipe.method_dir(0) / "metrics.csv")
    losses = [float(row["loss"]) for row in rows]
    assert len(losses) == epochs
    assert all(math.isfinite(loss) for loss in losses)
    assert result.final_loss == pytest.approx(losses[-1])
    return recipe, losses


def trained_and_initial(recipe: Recipe) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """State dicts of the last checkpoint and of the same method freshly built (its init)."""
    checkpoint = recipe.method_dir(0) / "checkpoints" / "last.ckpt"
    trained = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    initial = build_method(recipe, 0, num_classes=10).state_dict()
    return trained, initial


def check_teacher_trained(recipe: Recipe) -> None:
    """After a real run the teacher has left its initial weights but still lags the online ones."""
    trained, initial = trained_and_initial(recipe)
    teacher = [key for key in trained if key.startswith("teacher_backbone.")]
    assert teacher
    moved = [not torch.equal(trained[key], initial[key]) for key in teacher]
    lags = [not torch.equal(trained[key], trained[key.removeprefix("teacher_")]) for key in teacher]
    assert sum(moved) > len(teacher) // 2
    assert sum(lags) > len(teacher) // 2


@pytest.fixture(scope="session")
def cifar_images() -> list[Image.Image]:
    """Eight real CIFAR-10 JPEGs (two of each of four classes)."""
    return load_cifar_images(8)


@pytest.fixture
def pretrain_run(tmp_path: Path, cifar_folder: Path) -> Callable[..., tuple[Recipe, list[float]]]:
    """``run(entry, epochs)``: pretrain on 128 real CIFAR-10 JPEGs -> (recipe, epoch losses)."""

    def run(entry: dict[str, Any], epochs: int) -> tuple[Recipe, list[float]]:
        return run_pretraining(tmp_path, cifar_folder, entry, epochs)

    return run
