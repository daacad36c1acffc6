"""Shared fixtures and helpers: real image folders cut from the shared CIFAR-10 JPEGs, tiny
method entries and recipes, and the ``ssl-mae`` command run as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from ssl_mae_plugin.evaluation.protocols import prepare_data
from ssl_mae_plugin.pretrain import PretrainResult, pretrain
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import Recipe

CIFAR_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"

# Models small enough for CPU tests: a one-block ViT of width 32 on 8x8 patches of 32 px.
TINY_VIT = {"backbone": "vit_tiny", "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
TINY_MAE = {
    "name": "mae",
    **TINY_VIT,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "blr": 5e-3,
    "warmup_epochs": 0,
}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")  # real photos shipped with scikit-image
TINY_SIMCLR = {"name": "simclr", **TINY_VIT, "hidden_dim": 64, "output_dim": 32}


def make_image_folder(target: Path, per_class: dict[str, int], classes: int = 10) -> Path:
    """Symlink the first N JPEGs of each class of each CIFAR-10 split into ``target``."""
    if not CIFAR_ROOT.is_dir():
        pytest.skip(f"CIFAR-10 JPEGs not found at {CIFAR_ROOT}")
    for split, count in per_class.items():
        for class_dir in sorted((CIFAR_ROOT / split).iterdir())[:classes]:
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:count]:
                os.symlink(image, out / image.name)
    return target


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """``train/``: four real photos as ~1000 x 750 JPEGs (quality 90), two classes, one PNG."""
    skimage_data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("photos")
    for number, name in enumerate(PHOTOS):
        folder = root / "train" / f"class{number % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        photo = Image.fromarray(getattr(skimage_data, name)()).convert("RGB")
        photo.resize((1000, 750), Image.Resampling.BICUBIC).save(folder / f"{name}.jpg", quality=90)
    Image.open(folder / f"{PHOTOS[-1]}.jpg").save(folder / "rocket-copy.png")
    return root


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory) -> Path:
    """160 train and 50 test CIFAR-10 images (16 / 5 per class) in ImageFolder layout."""
    return make_image_folder(tmp_path_factory.mktemp("cifar"), {"train": 16, "test": 5})


def minimal_recipe(**sections: Any) -> dict[str, Any]:
    """A raw recipe on the bundled digits at 32 px with one default MAE; ``sections`` replace."""
    raw: dict[str, Any] = {
        "name": "r",
        "data": {"dataset": "mnist5k", "image_size": 32},
        "methods": [{"name": "mae"}],
    }
    return {**raw, **sections}


def mae_recipe(**entry: Any) -> dict[str, Any]:
    """:func:`minimal_recipe` whose MAE (patch 4) takes the keys ``entry``."""
    return minimal_recipe(methods=[{"name": "mae", "patch_size": 4, **entry}])


def tiny_recipe(root: Path, output: Path, **sections: Any) -> dict[str, Any]:
    """A raw recipe: the tiny MAE, 3 epochs of batch 32 on ``root`` at 32 px, on the CPU.

    Mapping sections are merged into the defaults; other values replace them.
    """
    recipe: dict[str, Any] = {
        "name": "t",
        "output_dir": str(output),
        "data": {
            "dataset": "imagefolder",
            "root": str(root),
            "val_split": "test",
            "image_size": 32,
            "num_workers": 0,
        },
        "methods": [dict(TINY_MAE)],
        "pretrain": {"epochs": 3, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "progress_bar": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def pretrain_method(recipe: Recipe | dict[str, Any], index: int = 0) -> PretrainResult:
    """Validate (if raw) and pretrain method ``index`` on the recipe's training split."""
    if isinstance(recipe, dict):
        recipe = recipe_from_dict(recipe)
    return pretrain(recipe, index, prepare_data(recipe).train)


def run_cli(
    *args: str, wait: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``python -m ssl_mae_plugin.cli ARGS`` in a subprocess (more variables: ``env``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "ssl_mae_plugin.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if wait:
        output, _ = process.communicate(timeout=timeout)
        assert process.returncode == 0, output
    return process


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    """Return once ``path`` exists, ``process`` has exited or ``timeout`` seconds passed."""
    deadline = time.time() + timeout
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def kill_after_a_checkpoint(recipe_path: Path, output: Path) -> Path:
    """Start ``ssl-mae pretrain`` into ``output``, SIGKILL it once it saved; the checkpoint."""
    process = run_cli("pretrain", str(recipe_path), f"output_dir={output}", wait=False)
    checkpoint = output / "t" / "mae" / "checkpoints" / "last.ckpt"
    wait_for(checkpoint, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    return checkpoint


def final_weights(output: Path, label: str = "mae") -> dict[str, torch.Tensor]:
    """The state dict of ``<output>/t/<label>/checkpoints/last.ckpt``."""
    checkpoint = output / "t" / label / "checkpoints" / "last.ckpt"
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
