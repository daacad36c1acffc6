from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_mae_plugin.data import (
    DatasetUnavailableError,
    ImageFolderDataset,
    MNIST5k,
    balanced_subset,
    build_dataset,
    default_normalization,
    eval_transform,
    limit_dataset,
    to_rgb,
)


def test_to_rgb_converts_every_mode():
    gray = Image.fromarray(np.full((4, 4), 100, dtype=np.uint8), mode="L")
    assert to_rgb(gray).getpixel((0, 0)) == (100, 100, 100)
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert to_rgb(palette).getpixel((0, 0)) == (10, 20, 30)
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert sixteen.mode.startswith("I;16")
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)
    half = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert to_rgb(half).getpixel((0, 0))[0] in (127, 128)


def write_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / name / f"{i}.png")
    return root


def test_image_folder_reads_classes_and_skips_bad_files(tmp_path):
    root = write_folder(tmp_path / "train", {"cat": 2, "dog": 3})
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    log = tmp_path / "bad.txt"
    dataset = ImageFolderDataset(root, bad_image_log=log)
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6
    broken = next(i for i, (p, _) in enumerate(dataset.samples) if p.endswith("broken.jpg"))
    image, label = dataset[broken]  # replaced by the next readable sample
    replacement = (broken + 1) % len(dataset)
    assert image.mode == "RGB" and label == dataset.samples[replacement][1]
    assert log.read_text().strip().endswith("broken.jpg")
    strict = ImageFolderDataset(root, on_bad_image="error")
    with pytest.raises(RuntimeError, match="broken.jpg"):
        strict[broken]


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=str(tmp_path / "missing")):
        ImageFolderDataset(tmp_path / "missing")
    root = write_folder(tmp_path / "split", {"cat": 1})
    (root / "dog").mkdir()
    with pytest.raises(DatasetUnavailableError, match="class folder has no images: .*dog"):
        ImageFolderDataset(root)


def test_mnist5k_splits_are_stratified_and_disjoint():
    train, test = MNIST5k("train"), MNIST5k("test")
    assert len(train) == 4000 and len(test) == 1000
    assert np.bincount(test.targets).tolist() == [100] * 10
    image, label = train[0]
    assert image.mode == "RGB" and image.size == (28, 28) and label == train.targets[0]
    train_rows = {img.tobytes() for img in train.images[:500]}
    assert not train_rows & {img.tobytes() for img in test.images}


def test_balanced_subset_is_fixed_and_balanced():
    targets = [0] * 50 + [1] * 30 + [2] * 5
    chosen = balanced_subset(targets, 30, seed=1)
    assert chosen == balanced_subset(targets, 30, seed=1)
    counts = np.bincount([targets[i] for i in chosen])
    assert counts.tolist() == [13, 12, 5] or sorted(counts.tolist()) == [5, 12, 13]
    subset = limit_dataset(MNIST5k("test"), 50)
    assert len(subset) == 50 and np.bincount(subset.targets).tolist() == [5] * 10


def test_real_cifar_folder_and_eval_transform(cifar_folder):
    dataset = build_dataset("imagefolder", "test", root=cifar_folder)
    assert len(dataset) == 50 and len(dataset.classes) == 10
    tensor = eval_transform(32, default_normalization("cifar10"))(dataset[0][0])
    assert tensor.shape == (3, 32, 32) and abs(float(tensor.mean())) < 3
    large = eval_transform(224, default_normalization("imagefolder"))(dataset[0][0])
    assert large.shape == (3, 224, 224)


def test_missing_image_folder_split_lists_the_existing_ones(tmp_path):
    write_folder(tmp_path / "train", {"cat": 1})
    write_folder(tmp_path / "test", {"cat": 1})
    with pytest.raises(DatasetUnavailableError, match=r"val \(sub-folders of .*: test, train;"):
        build_dataset("imagefolder", "val", root=tmp_path)


def test_missing_torchvision_dataset_says_how_to_fix_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"data.download=true"):
        build_dataset("cifar10", "train", root=tmp_path)
    with pytest.raises(DatasetUnavailableError, match="'train' and 'test'"):
        build_dataset("cifar10", "val", root=tmp_path)
    with pytest.raises(DatasetUnavailableError, match="data.root is required"):
        build_dataset("imagefolder", "train")


def test_eval_transform_handles_grayscale_converted_images():
    image = to_rgb(Image.new("L", (40, 30), 7))
    assert eval_transform(32, default_normalization("mnist5k"))(image).shape == (3, 32, 32)
    assert torch.is_tensor(eval_transform(32, default_normalization("mnist5k"))(image))
