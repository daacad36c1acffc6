"""Fixed 2-D sine-cosine position tables, laid out as in facebookresearch/mae.

The first half of the channels encodes the column (w) and the second half the row (h);
each half is ``[sin | cos]`` with ``omega_i = 1 / 10000^(i / (D / 4))``. Row 0 of a table
with a cls token is all zeros. Resizing a table to another grid is timm's
``resample_abs_pos_embed`` (bicubic, prefix rows kept), as the official fine-tuning code.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine embedding of 1-D positions.

    Args:
        dim: Output width, even.
        positions: Positions of any shape; flattened.

    Returns:
        ``[M, dim]`` float64 table, ``[sin | cos]`` halves.
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(
    dim: int,
    grid_size: int | tuple[int, int],
    cls_token: bool = False,
) -> torch.Tensor:
    """Fixed 2-D sine-cosine position table for a patch grid.

    Args:
        dim: Embedding width, divisible by 4.
        grid_size: ``(rows, cols)`` of the patch grid, or one int for a square grid.
        cls_token: Prepend an all-zero row for the cls token.

    Returns:
        ``[rows * cols (+1), dim]`` float32 table in row-major patch order.
    """
    if dim % 4:
        raise ValueError(f"embedding dim must be divisible by 4, got {dim}")
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    row_pos, col_pos = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    table = torch.cat([sincos_1d(dim // 2, col_pos), sincos_1d(dim // 2, row_pos)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.to(torch.float32)
