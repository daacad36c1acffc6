"""Fixtures of the method tests: real images, short runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ssl_mae_plugin.recipes import Recipe
from tests.methods.helpers import load_cifar_images, run_pretraining


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
