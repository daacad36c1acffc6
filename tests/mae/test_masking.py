import pytest
import torch

from ssl_mae_plugin import random_masking
from ssl_mae_plugin.mae import noise_from_seeds, num_kept


@pytest.mark.parametrize(
    ("length", "ratio", "kept"), [(196, 0.75, 49), (64, 0.5, 32), (10, 0.85, 1), (7, 0.1, 6)]
)
def test_keeps_exactly_int_of_length_times_one_minus_ratio(length, ratio, kept):
    x = torch.randn(3, length, 8)
    out = random_masking(x, ratio)
    assert out.kept.shape == (3, kept, 8)
    assert out.mask.shape == (3, length)
    assert torch.equal(out.mask.sum(dim=1), torch.full((3,), float(length - kept)))


def test_ids_restore_inverts_the_shuffle_and_kept_tokens_are_the_visible_ones():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16, 1).expand(-1, -1, 4).clone()
    noise = torch.rand(2, 16)
    out = random_masking(x, 0.75, noise=noise)
    ids_shuffle = torch.argsort(noise, dim=1)
    assert torch.equal(
        torch.gather(ids_shuffle, 1, out.ids_restore), torch.arange(16).expand(2, -1)
    )
    for i in range(2):
        visible = torch.nonzero(out.mask[i] == 0).flatten()
        kept_ids = out.kept[i, :, 0].long() - 16 * i
        assert sorted(kept_ids.tolist()) == visible.tolist()
        # the smallest-noise patches are the kept ones
        assert set(visible.tolist()) == set(torch.argsort(noise[i])[:4].tolist())


def test_same_noise_gives_same_mask_and_different_noise_a_different_one():
    x = torch.randn(4, 49, 8)
    noise = torch.rand(4, 49)
    a = random_masking(x, 0.75, noise=noise)
    b = random_masking(x, 0.75, noise=noise.clone())
    c = random_masking(x, 0.75, noise=torch.rand(4, 49))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.kept, b.kept)
    assert not torch.equal(a.mask, c.mask)


def test_masks_differ_between_samples():
    out = random_masking(torch.randn(8, 64, 4), 0.75)
    assert len({tuple(row.tolist()) for row in out.mask}) > 1


@pytest.mark.parametrize(
    ("length", "ratio"), [(4, -0.1), (4, 1.0), (4, 1.5), (4, 0.0), (7, 0.9), (10, 1e-17)]
)
def test_a_ratio_that_keeps_all_or_no_patches_is_a_value_error_naming_it(length, ratio):
    with pytest.raises(ValueError, match="mask_ratio must leave at least one"):
        random_masking(torch.randn(1, length, 2), ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        num_kept(length, ratio)


def test_noise_of_wrong_shape_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="noise"):
        random_masking(torch.randn(2, 16, 4), 0.75, noise=torch.rand(2, 15))


def test_noise_rows_follow_their_seeds():
    noise = noise_from_seeds([11, 12, 11], 49, "cpu")
    assert noise.shape == (3, 49)
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.all((noise >= 0) & (noise < 1))
