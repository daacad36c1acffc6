import numpy as np
import pytest
import torch

from ssl_mae_plugin.mae.pos_embed import sincos_2d


def reference_table(dim, rows, cols):
    """The paper's recipe written out with numpy, one position at a time."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    table = np.zeros((rows * cols, dim))
    for r in range(rows):
        for c in range(cols):
            col_angles, row_angles = c * omega, r * omega
            table[r * cols + c] = np.concatenate(
                [np.sin(col_angles), np.cos(col_angles), np.sin(row_angles), np.cos(row_angles)]
            )
    return table


@pytest.mark.parametrize(("dim", "grid"), [(32, (4, 4)), (16, (3, 5)), (64, (2, 7))])
def test_matches_the_official_layout(dim, grid):
    table = sincos_2d(dim, grid)
    np.testing.assert_allclose(table.numpy(), reference_table(dim, *grid), atol=1e-6)


def test_cls_row_is_zero_and_square_int_grid():
    table = sincos_2d(8, 3, cls_token=True)
    assert table.shape == (10, 8)
    assert torch.equal(table[0], torch.zeros(8))
    assert table.dtype == torch.float32


def test_matches_transformers_vitmae_table():
    hf = pytest.importorskip("transformers.models.vit_mae.modeling_vit_mae")
    theirs = hf.build_2d_sinusoidal_position_embedding(
        height=6, width=6, embed_dim=48, cls_token=True
    )
    half = theirs.shape[-1] // 2  # transformers rotates halves to the official layout
    theirs = torch.cat([theirs[..., half:], theirs[..., :half]], dim=-1)
    torch.testing.assert_close(sincos_2d(48, 6, cls_token=True), theirs.float(), atol=1e-6, rtol=0)


def test_dim_must_be_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(30, 4)
