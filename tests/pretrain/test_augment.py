import math

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.pretrain.augment import DeviceCropFlip, crop_boxes, load_uint8
from ssl_mae_plugin.pretrain.callbacks import read_metrics
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import pretrain_method, tiny_recipe

UNIT = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_crop_boxes_follow_the_random_resized_crop_rule():
    seeds = list(range(2000))
    boxes, flips = crop_boxes(seeds, 32, 48, scale=(0.2, 1.0))
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 48) and np.all(boxes[:, 3] <= 32)
    area = widths * heights / (32 * 48)
    assert area.min() >= 0.2 * 0.85 and area.max() <= 1.0  # rounding to whole pixels
    ratio = widths / heights
    assert ratio.min() >= 3 / 4 * 0.85 and ratio.max() <= 4 / 3 * 1.15
    assert 0.45 < flips.mean() < 0.55 and 0.4 < area.mean() < 0.7
    again, again_flips = crop_boxes(seeds, 32, 48)
    assert np.array_equal(boxes, again) and np.array_equal(flips, again_flips)
    assert not np.array_equal(crop_boxes([1], 32, 48)[0], crop_boxes([2], 32, 48)[0])


def test_impossible_crops_fall_back_to_the_central_crop():
    boxes, _ = crop_boxes([0, 1], 10, 100, scale=(0.99, 1.0), ratio=(1.0, 1.0))
    # a 1:1 crop of 99 % of a 10 x 100 image never fits: centre crop of ratio 1
    assert np.array_equal(boxes, [[45, 0, 55, 10], [45, 0, 55, 10]])


def test_images_of_different_sizes_get_the_boxes_each_would_get_alone():
    heights, widths = np.array([32, 10, 100, 375]), np.array([48, 100, 10, 500])
    boxes, flips = crop_boxes([3, 4, 5, 6], heights, widths, scale=(0.9, 1.0))
    for i, seed in enumerate([3, 4, 5, 6]):
        alone, flip = crop_boxes([seed], int(heights[i]), int(widths[i]), scale=(0.9, 1.0))
        assert np.array_equal(boxes[i], alone[0]) and flips[i] == flip[0]
    assert np.all(boxes[:, 2] <= widths) and np.all(boxes[:, 3] <= heights)


def test_views_are_normalised_crops_and_flips():
    gradient = torch.arange(16, dtype=torch.uint8).repeat(3, 16, 1)[None] * 10  # [1, 3, 16, 16]
    transform = DeviceCropFlip(16, UNIT, scale=(1.0, 1.0))
    seeds = list(range(40))
    _, flips = crop_boxes(seeds, 16, 16, scale=(1.0, 1.0))
    views = transform(gradient.expand(40, -1, -1, -1), seeds)
    assert views.shape == (40, 3, 16, 16)
    for view, flip in zip(views, flips, strict=True):
        row = view[0, 0]
        assert (row[0] > row[-1]) if flip else (row[0] < row[-1])
    constant = torch.full((2, 3, 8, 8), 51, dtype=torch.uint8)
    normalised = DeviceCropFlip(4, Normalization((0.1, 0.1, 0.1), (0.5, 0.5, 0.5)))(
        constant, [3, 4]
    )
    torch.testing.assert_close(normalised, torch.full((2, 3, 4, 4), (0.2 - 0.1) / 0.5))


def test_load_uint8_checks_sizes():
    class Images(torch.utils.data.Dataset):
        def __init__(self, sizes):
            self.sizes = sizes

        def __len__(self):
            return len(self.sizes)

        def __getitem__(self, index):
            return Image.new("RGB", self.sizes[index], (index, 0, 0)), index

    images = load_uint8(Images([(8, 6)] * 3))
    assert images.shape == (3, 3, 6, 8) and images.dtype == torch.uint8
    assert images[2, 0, 0, 0] == 2
    with pytest.raises(ValueError, match="one size"):
        load_uint8(Images([(8, 6), (6, 8)]))


def test_in_memory_pretraining_runs_with_falling_loss(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, data={"in_memory": True}, pretrain={"epochs": 3})
    result = pretrain_method(raw)
    losses = [float(row["loss"]) for row in read_metrics(tmp_path / "t" / "mae" / "metrics.csv")]
    assert result.epochs == 3 and losses[-1] < losses[0] and all(map(math.isfinite, losses))


def test_in_memory_needs_a_method_with_crop_and_flip_views(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, data={"in_memory": True})
    raw["methods"] = [{"name": "simclr", "backbone": "vit_tiny", "patch_size": 8}]
    with pytest.raises(RecipeError, match=r"methods.0 \('simclr'\) needs its own transform"):
        recipe_from_dict(raw)
