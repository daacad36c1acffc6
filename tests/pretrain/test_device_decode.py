"""Decoding on the training device: PIL's crops closely, the CPU for what it cannot take."""

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as F
from PIL import Image, ImageFile

from ssl_mae_plugin.data import ImageFolderDataset, build_dataset, limit_dataset
from ssl_mae_plugin.pretrain.augment import crop_boxes
from ssl_mae_plugin.pretrain.device_decode import (
    DeviceDecodeViews,
    EncodedSamples,
    _fill_skipped,
)
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import PHOTOS, final_weights, minimal_recipe, pretrain_method, tiny_recipe
from tests.pretrain.test_decoding import MAE_SCALE, NORM, psnr

CPU = torch.device("cpu")


def pil_view(path, seed: int, size: int) -> torch.Tensor:
    """The view of the same box and flip made by PIL (bicubic) and torchvision, normalised."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    (x1, y1, x2, y2), flip = (v[0] for v in crop_boxes([seed], rgb.height, rgb.width, MAE_SCALE))
    crop = F.resized_crop(
        rgb, int(y1), int(x1), int(y2 - y1), int(x2 - x1), [size, size],
        F.InterpolationMode.BICUBIC,
    )  # fmt: skip
    crop = F.hflip(crop) if flip else crop
    return F.normalize(F.to_tensor(crop), list(NORM.mean), list(NORM.std))


def device_views(images, keys, size=64):
    samples = EncodedSamples(images, seed=0)
    views = DeviceDecodeViews(samples, size, NORM, MAE_SCALE)
    batch = [samples[key] for key in keys]
    return batch, *views(batch, CPU)


def test_views_match_pils_crop_of_the_same_box(photo_folder):
    images = ImageFolderDataset(photo_folder / "train")
    keys = [(index, epoch) for epoch in range(6) for index in range(len(images))]
    batch, [views], labels, seeds = device_views(images, keys)
    assert views.shape == (len(keys), 3, 64, 64)
    assert labels.tolist() == [images.targets[index] for index, _ in keys]
    ratios = [
        psnr(view, pil_view(images.samples[index][0], seed, 64))
        for view, (index, _), seed in zip(views, keys, seeds, strict=True)
    ]
    assert min(ratios) > 45, sorted(ratios)[:5]  # ~58 dB: rounding to uint8 in PIL only
    assert [is_jpeg for _, is_jpeg, *_ in batch].count(False) == 6  # the PNG, every epoch


def test_cmyk_jpegs_and_png_data_behind_a_jpeg_name_are_decoded_on_the_cpu(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "rgb.jpg", quality=95)
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(pixels).save(folder / "png.JPEG", format="PNG")
    images = ImageFolderDataset(folder.parent)
    batch, [views], _, seeds = device_views(images, [(i, 0) for i in range(3)], size=32)
    names = [name.rsplit("/", 1)[1] for *_, name in batch]
    assert dict(zip(names, [is_jpeg for _, is_jpeg, *_ in batch], strict=True)) == {
        "cmyk.jpg": False, "png.JPEG": False, "rgb.jpg": True
    }  # fmt: skip
    png = names.index("png.JPEG")  # lossless: exactly the pixels, as PIL crops them
    assert batch[png][0].shape == (3, 48, 40)
    assert psnr(views[png], pil_view(images.samples[png][0], seeds[png], 32)) > 40


@pytest.fixture
def with_a_truncated_jpeg(photo_folder, tmp_path):
    """The photos and a copy of one cut in half (its header intact)."""
    root = tmp_path / "photos"
    folder = root / "train" / "class0"
    folder.mkdir(parents=True)
    for path in sorted((photo_folder / "train").rglob("*.jpg")):
        (folder / path.name).write_bytes(path.read_bytes())
    data = (folder / f"{PHOTOS[0]}.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root / "train"


def test_a_corrupt_jpeg_follows_on_bad_image_and_the_batch_keeps_its_size(
    with_a_truncated_jpeg, tmp_path
):
    log = tmp_path / "bad.txt"
    images = ImageFolderDataset(with_a_truncated_jpeg, bad_image_log=log)
    cut = next(i for i, (path, _) in enumerate(images.samples) if path.endswith("cut.jpg"))
    keys = [(i, 0) for i in range(len(images))]
    batch, [views], labels, _ = device_views(images, keys)
    assert all(is_jpeg for _, is_jpeg, *_ in batch)  # the header reads: found by the decoder
    assert views.shape[0] == len(images) and torch.isfinite(views).all()
    assert labels[cut] == images.targets[(cut + 1) % len(images)]  # the next image's place
    assert log.read_text().splitlines() == [images.samples[cut][0]]

    strict = ImageFolderDataset(with_a_truncated_jpeg, on_bad_image="error")
    with pytest.raises(RuntimeError, match=r"^unreadable image .*cut\.jpg: image file is trunc"):
        device_views(strict, keys)


def test_a_jpeg_the_device_rejects_and_pil_reads_is_decoded_by_pil(
    with_a_truncated_jpeg, monkeypatch, tmp_path
):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # a user's PIL setting
    log = tmp_path / "bad.txt"
    images = ImageFolderDataset(with_a_truncated_jpeg, bad_image_log=log)
    cut = next(i for i, (path, _) in enumerate(images.samples) if path.endswith("cut.jpg"))
    _, [views], labels, seeds = device_views(images, [(i, 0) for i in range(len(images))])
    assert not log.exists() and labels[cut] == images.targets[cut]
    assert psnr(views[cut], pil_view(images.samples[cut][0], seeds[cut], 64)) > 35


def test_a_subset_reads_its_own_images(photo_folder):
    images = ImageFolderDataset(photo_folder / "train")
    subset = limit_dataset(images, 2)
    samples = EncodedSamples(subset)
    assert len(samples) == 2
    assert [samples[(i, 0)][2] for i in range(2)] == subset.targets  # the labels read
    assert samples[(1, 0)][4] == images.samples[subset.indices[1]][0]


def test_a_skipped_place_goes_to_the_next_readable_sample_wrapping_around():
    assert _fill_skipped([True, False, True, False]) == [0, 2, 2, 0]
    assert _fill_skipped([True, True]) == [0, 1] and _fill_skipped([False, False]) is None


def test_mae_pretrains_decoding_on_the_device(photo_folder, tmp_path):
    raw = tiny_recipe(
        photo_folder,
        tmp_path,
        data={"decode": "device", "val_split": "train", "num_workers": 1},
        pretrain={"epochs": 1, "batch_size": 5},
    )
    result = pretrain_method(raw)
    assert result.epochs == 1 and np.isfinite(result.final_loss)
    assert final_weights(tmp_path)


def test_device_decoding_needs_encoded_images():
    with pytest.raises(RecipeError, match="^data.decode 'device' reads encoded images"):
        recipe_from_dict(minimal_recipe(data={"dataset": "mnist5k", "decode": "device"}))


def test_arrays_are_refused_naming_the_reader():
    with pytest.raises(TypeError, match="^device decoding reads encoded images, not MNIST5k$"):
        EncodedSamples(build_dataset("mnist5k", "test"))
