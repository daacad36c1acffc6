import pytest
import torch

from ssl_mae_plugin import patchify, unpatchify


@pytest.mark.parametrize(("h", "w", "c", "p"), [(32, 32, 3, 4), (16, 24, 3, 8), (28, 14, 1, 7)])
def test_round_trip_square_and_non_square(h, w, c, p):
    images = torch.randn(2, c, h, w)
    patches = patchify(images, p)
    assert patches.shape == (2, (h // p) * (w // p), p * p * c)
    assert torch.equal(unpatchify(patches, p, (h // p, w // p), in_chans=c), images)


def test_patch_layout_is_row_major_with_channels_last():
    images = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches = patchify(images, 2)
    # patch 1 is the first row, second column: pixels (0..1, 2..3); channel is the fastest axis
    expected = torch.stack([images[0, :, r, c] for r in range(2) for c in range(2, 4)]).flatten()
    assert torch.equal(patches[0, 1], expected)


def test_image_not_divisible_by_patch_is_a_value_error():
    with pytest.raises(ValueError, match="patch_size"):
        patchify(torch.randn(1, 3, 30, 32), 4)


def test_unpatchify_checks_channels_and_grid():
    with pytest.raises(ValueError, match="in_chans"):
        unpatchify(torch.randn(1, 4, 48), 4, in_chans=1)
    with pytest.raises(ValueError, match="grid_size"):
        unpatchify(torch.randn(1, 6, 48), 4, grid_size=(2, 2))
