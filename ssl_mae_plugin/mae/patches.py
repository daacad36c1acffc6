"""Images to flattened patches and back, in the layout of facebookresearch/mae.

A patch is flattened with its channels last (``nchpwq -> nhwpqc``), so a prediction of
``p * p * C`` values per patch lines up with the official checkpoints' pixel head.
"""

from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Split images into flattened patches.

    Args:
        images: ``[N, C, H, W]`` with ``H`` and ``W`` divisible by ``patch_size``.
        patch_size: Side of a square patch in pixels.

    Returns:
        ``[N, L, p*p*C]`` with ``L = (H / p) * (W / p)`` patches in row-major order.

    Raises:
        ValueError: If the image size is not divisible by the patch size.
    """
    n, c, h, w = images.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"images of size {h}x{w} are not divisible by patch_size={patch_size}")
    gh, gw = h // patch_size, w // patch_size
    x = images.reshape(n, c, gh, patch_size, gw, patch_size)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, gh * gw, patch_size * patch_size * c)


def unpatchify(
    patches: torch.Tensor,
    patch_size: int,
    grid_size: tuple[int, int] | None = None,
    in_chans: int = 3,
) -> torch.Tensor:
    """Reassemble flattened patches into images; the inverse of :func:`patchify`.

    Args:
        patches: ``[N, L, p*p*C]``.
        patch_size: Side of a square patch in pixels.
        grid_size: ``(rows, cols)`` of the patch grid; a square grid when omitted.
        in_chans: Number of image channels ``C``.

    Returns:
        ``[N, C, rows * p, cols * p]`` images.

    Raises:
        ValueError: If the shapes do not fit the patch size, grid or channel count.
    """
    n, length, dim = patches.shape
    if dim != patch_size * patch_size * in_chans:
        raise ValueError(
            f"patches have {dim} values, expected patch_size**2 * in_chans = "
            f"{patch_size * patch_size * in_chans}"
        )
    if grid_size is None:
        side = round(length**0.5)
        grid_size = (side, side)
    gh, gw = grid_size
    if gh * gw != length:
        raise ValueError(f"grid_size={grid_size} does not hold {length} patches")
    x = patches.reshape(n, gh, gw, patch_size, patch_size, in_chans)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(n, in_chans, gh * patch_size, gw * patch_size)
