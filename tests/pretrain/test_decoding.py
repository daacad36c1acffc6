"""Reduced JPEG decoding: the same crops as a full decode (PSNR), exact where not reduced."""

import numpy as np
import pytest
import torch
from lightly.transforms import MAETransform

from ssl_mae_plugin.data import ImageFolderDataset, Normalization, limit_dataset
from ssl_mae_plugin.pretrain.decoding import ReducedDecodeCrops, flip_and_normalize, reduction
from ssl_mae_plugin.pretrain.sampling import SeededViews
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import final_weights, minimal_recipe, pretrain_method, tiny_recipe

NORM = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
MAE_SCALE = (0.2, 1.0)


def views_of(dataset, transform, seeds=range(12)):
    items = SeededViews(dataset, transform, seed=0)
    return [items[(index, epoch)][0][0] for epoch in seeds for index in range(len(dataset))]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """In dB, on the [0, 1] pixel scale (the tensors are normalised by NORM)."""
    mse = ((a - b) * NORM.std[0]).pow(2).mean().item()
    return 10 * np.log10(1 / max(mse, 1e-12))


def test_the_reduction_keeps_the_box_at_least_the_output_size():
    assert [reduction(side, 64) for side in (63, 127, 128, 255, 256, 511, 512, 4000)] == [
        1, 1, 2, 2, 4, 4, 8, 8
    ]  # fmt: skip


def test_reduced_crops_match_a_full_decode_closely(photo_folder):
    images = ImageFolderDataset(photo_folder / "train")
    full = views_of(images, MAETransform(input_size=64, min_scale=0.2, normalize=NORM.as_lightly()))
    reduced = views_of(ReducedDecodeCrops(images, 64, MAE_SCALE), flip_and_normalize(NORM))
    ratios = [psnr(a, b) for a, b in zip(full, reduced, strict=True)]
    exact = sum(torch.equal(a, b) for a, b in zip(full, reduced, strict=True))
    assert exact < len(full) // 2  # most boxes were decoded reduced (the test can fail)
    assert exact >= 1  # the PNG is never reduced
    assert min(ratios) > 28 and float(np.median(ratios)) > 32, sorted(ratios)[:5]


def test_without_a_reduction_the_views_equal_lightlys_mae_transform(photo_folder):
    images = ImageFolderDataset(photo_folder / "train")
    size = 400  # no box of a 1000 x 750 photo has both sides >= 800
    full = views_of(
        images, MAETransform(input_size=size, min_scale=0.2, normalize=NORM.as_lightly()), range(3)
    )
    ours = views_of(ReducedDecodeCrops(images, size, MAE_SCALE), flip_and_normalize(NORM), range(3))
    for a, b in zip(full, ours, strict=True):
        assert torch.equal(a, b)


def test_a_subset_reads_the_chosen_files(photo_folder):
    images = ImageFolderDataset(photo_folder / "train")
    subset = limit_dataset(images, 2)
    crops = ReducedDecodeCrops(subset, 32, MAE_SCALE)
    assert len(crops) == 2 and crops.targets == subset.targets
    assert crops[0][0].size == (32, 32) and crops[0][1] == subset.targets[0]


def test_reduced_decoding_needs_encoded_images():
    with pytest.raises(
        RecipeError,
        match="^data.decode 'reduced' reads encoded images: it needs dataset 'imagefolder' or "
        "'shards'",
    ):
        recipe_from_dict(minimal_recipe(data={"dataset": "mnist5k", "decode": "reduced"}))


def test_mae_pretrains_from_reduced_decodes(photo_folder, tmp_path):
    raw = tiny_recipe(
        photo_folder,
        tmp_path,
        data={"decode": "reduced", "val_split": "train"},
        pretrain={"epochs": 1, "batch_size": 5},
    )
    result = pretrain_method(raw)
    assert result.epochs == 1 and np.isfinite(result.final_loss)
    assert final_weights(tmp_path)  # a checkpoint with weights
