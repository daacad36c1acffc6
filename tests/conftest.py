"""Shared fixtures: small real image folders cut from the shared CIFAR-10 JPEGs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CIFAR_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10"


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
def cifar_folder(tmp_path_factory) -> Path:
    """160 train and 50 test CIFAR-10 images (16 / 5 per class) in ImageFolder layout."""
    return make_image_folder(tmp_path_factory.mktemp("cifar"), {"train": 16, "test": 5})
