"""Per-sample random masking of patch tokens.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Masking(NamedTuple):
    """Result of :func:`random_masking`.

    Attributes:
        kept: The visible tokens, ``[N, len_keep, D]``, in shuffled order.
        mask: ``[N, L]`` with 0 for kept and 1 for removed patches, in the original order.
        ids_restore: ``[N, L]`` indices that undo the shuffle (``argsort`` of the shuffle).
    """

    kept: torch.Tensor
    mask: torch.Tensor
    ids_restore: torch.Tensor


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Number of visible patches: ``int(L * (1 - mask_ratio))`` as in the official code [0]."""
    check_mask_ratio(mask_ratio)
    return int(num_patches * (1 - mask_ratio))


def check_mask_ratio(mask_ratio: float) -> None:
    """Raise ``ValueError`` unless ``0 <= mask_ratio < 1``."""
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio!r}")


def shuffle_ids(
    num_samples: int,
    num_patches: int,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample patch order of the masking shuffle: ``argsort`` of the noise [0].

    The first ``len_keep`` entries of each row are the visible patches, the rest the
    removed ones; :func:`random_masking` and :meth:`MAE.training_loss` share this draw, so
    the same ``noise`` removes the same patches in both.

    Args:
        num_samples: Batch size ``N``.
        num_patches: Patches per image ``L``.
        noise: Optional ``[N, L]`` noise; uniform random noise is drawn when omitted.
        device: Where to draw the noise when ``noise`` is omitted.

    Returns:
        ``ids_shuffle`` ``[N, L]`` (int64): patch indices sorted by ascending noise.

    Raises:
        ValueError: If ``noise`` has the wrong shape.
    """
    if noise is None:
        noise = torch.rand(num_samples, num_patches, device=device)
    elif tuple(noise.shape) != (num_samples, num_patches):
        raise ValueError(
            f"noise must have shape ({num_samples}, {num_patches}), got {tuple(noise.shape)}"
        )
    return torch.argsort(noise, dim=1)  # ascending: small noise is kept


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``x[i, ids[i]]`` for every sample: ``[N, L, D]`` and ``[N, K]`` -> ``[N, K, D]``."""
    return torch.gather(x, dim=1, index=ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def random_masking(
    x: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
) -> Masking:
    """Keep a random subset of tokens per sample, chosen by the argsort of noise [0].

    The tokens with the smallest noise are kept; with the same ``noise`` the same patches
    are kept, which makes runs reproducible and lets other implementations be compared.

    Args:
        x: Patch tokens ``[N, L, D]`` (no cls token).
        mask_ratio: Fraction of tokens to remove, in ``[0, 1)``.
        noise: Optional ``[N, L]`` noise; uniform random noise is drawn when omitted.

    Returns:
        The kept tokens, the binary mask (1 = removed) and the indices restoring the order.

    Raises:
        ValueError: If ``mask_ratio`` is outside ``[0, 1)`` or ``noise`` has the wrong shape.
    """
    n, length, _ = x.shape
    len_keep = num_kept(length, mask_ratio)
    ids_shuffle = shuffle_ids(n, length, noise=noise, device=x.device)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = gather_tokens(x, ids_shuffle[:, :len_keep])
    return Masking(kept=kept, mask=restore_mask(ids_restore, len_keep), ids_restore=ids_restore)


def restore_mask(ids_restore: torch.Tensor, len_keep: int) -> torch.Tensor:
    """Binary mask ``[N, L]`` in the original patch order: 1 removed, 0 visible.

    A patch is removed when its rank in the shuffle is ``len_keep`` or more. float32 even
    under autocast, so that ``mask.sum()`` stays exact for large batches.
    """
    return (ids_restore >= len_keep).to(torch.float32)
