"""Real CIFAR-10 JPEGs -> random-init MAE encoder features -> k-NN and linear probe."""

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin import mae_vit_tiny_patch16
from ssl_mae_plugin.data import Normalization, eval_transform
from ssl_mae_plugin.evaluation import (
    PooledBackbone,
    TransformedDataset,
    cached_features,
    extract_features,
    knn_classify,
    linear_probe,
)
from tests.conftest import CIFAR_ROOT

CIFAR10 = CIFAR_ROOT
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

pytestmark = pytest.mark.skipif(
    not (CIFAR10 / "train").is_dir() or not (CIFAR10 / "test").is_dir(),
    reason=f"CIFAR-10 JPEG folders not found at {CIFAR10}",
)


class FirstImages(Dataset):
    """The first ``per_class`` JPEGs (sorted by name) of each class folder."""

    def __init__(self, root: Path, per_class: int) -> None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        self.samples = [
            (path, label)
            for label, name in enumerate(classes)
            for path in sorted((root / name).glob("*.jpg"))[:per_class]
        ]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        with Image.open(path) as image:
            return image.convert("RGB"), label


def test_random_init_mae_features_knn_and_linear_probe_on_cifar10(tmp_path):
    train, val = FirstImages(CIFAR10 / "train", 20), FirstImages(CIFAR10 / "test", 10)
    assert len(train) == 200 and len(val) == 100
    torch.manual_seed(0)
    # the tiny MAE at CIFAR resolution, two blocks to keep the test fast
    mae = mae_vit_tiny_patch16(img_size=32, patch_size=4, depth=2)
    backbone = PooledBackbone(mae, pool="cls")
    transform = eval_transform(32, Normalization(CIFAR_MEAN, CIFAR_STD))

    def features(split, dataset):
        loader = DataLoader(TransformedDataset(dataset, transform), batch_size=64)
        key = {"root": str(CIFAR10), "split": split, "transform": repr(transform), "seed": 0}
        return cached_features(
            tmp_path, key, lambda: extract_features(backbone, loader, progress=False)
        )

    train_x, train_y = features("train", train)
    val_x, val_y = features("test", val)
    assert train_x.shape == (200, 192) and val_x.shape == (100, 192)
    assert torch.isfinite(train_x).all() and torch.equal(val_y, torch.arange(100) // 10)
    again, _ = features("test", val)  # served from the cache
    assert torch.equal(again, val_x)

    knn = knn_classify(train_x, train_y, val_x, val_y, k=20)
    probe = linear_probe(train_x, train_y, val_x, val_y, epochs=10, batch_size=50)
    for value in (knn["top1"], knn["top5"], probe["top1"], probe["top5"], probe["best_top1"]):
        assert math.isfinite(value) and 0.0 <= value <= 1.0
    assert knn["top1"] <= knn["top5"] and probe["top1"] <= probe["top5"]
