"""Per-sample random masking of patch tokens, and the seeded noise that decides it.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Fast Splittable Pseudorandom Number Generators (SplitMix), 2014,
  https://doi.org/10.1145/2714064.2660195
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
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
    """Visible patches per image, ``int(L * (1 - mask_ratio))`` as the official code [0].

    The one check of a mask ratio: at least one patch must stay visible and at least one
    be removed (the loss is an average over the removed patches).

    Raises:
        ValueError: Naming ``mask_ratio`` unless ``1 <= int(L * (1 - mask_ratio)) < L``.
    """
    ratio = float(mask_ratio)
    kept = int(num_patches * (1 - ratio))
    if not (0.0 <= ratio < 1.0 and 1 <= kept < num_patches):
        raise ValueError(
            f"mask_ratio must leave at least one of the {num_patches} patches visible and "
            f"remove at least one (1 <= int({num_patches} * (1 - mask_ratio)) < {num_patches}), "
            f"got {mask_ratio!r}"
        )
    return kept


def shuffle_ids(
    num_samples: int,
    num_patches: int,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-sample patch order of the masking shuffle: ``argsort`` of the noise [0].

    The first ``len_keep`` entries of each row are the visible patches, the rest the
    removed ones; the plain and the training forward pass share this draw, so the same
    ``noise`` removes the same patches in both.

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


def restore_mask(ids_restore: torch.Tensor, len_keep: int) -> torch.Tensor:
    """Binary mask ``[N, L]`` in the original patch order: 1 removed, 0 visible.

    A patch is removed when its rank in the shuffle is ``len_keep`` or more. float32 even
    under autocast, so that ``mask.sum()`` stays exact for large batches.
    """
    return (ids_restore >= len_keep).to(torch.float32)


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
        mask_ratio: Fraction of tokens to remove (see :func:`num_kept`).
        noise: Optional ``[N, L]`` noise; uniform random noise is drawn when omitted.

    Returns:
        The kept tokens, the binary mask (1 = removed) and the indices restoring the order.

    Raises:
        ValueError: If ``mask_ratio`` keeps all or no tokens, or ``noise`` has the wrong shape.
    """
    n, length, _ = x.shape
    len_keep = num_kept(length, mask_ratio)
    ids_shuffle = shuffle_ids(n, length, noise=noise, device=x.device)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = gather_tokens(x, ids_shuffle[:, :len_keep])
    return Masking(kept=kept, mask=restore_mask(ids_restore, len_keep), ids_restore=ids_restore)


# -- seeded noise: a counter-based stream per sample seed [1] ---------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(values: np.ndarray | int) -> np.ndarray:
    """SplitMix64's finaliser of ``values + golden ratio`` (uint64, element-wise) [1]."""
    with np.errstate(over="ignore"):
        z = np.asarray(values, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def uniform_from_seeds(seeds: Sequence[int], count: int, stream: int = 0) -> np.ndarray:
    """``[N, count]`` uniform floats in ``[0, 1)``, row ``i`` a function of ``seeds[i]`` only.

    ``stream`` separates independent uses of the same sample seed (masks, crops).
    """
    seed_array = np.asarray([int(s) for s in seeds], dtype=np.uint64)
    counters = np.arange(count, dtype=np.uint64) + np.uint64(stream << 32)
    with np.errstate(over="ignore"):
        z = splitmix64(seed_array[:, None] + counters[None, :] * _GOLDEN)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


MASK_STREAM = 1


def noise_from_seeds(
    seeds: Sequence[int], num_patches: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Masking noise ``[N, L]`` (float64: no ties), each row from its sample's seed alone.

    The mask of a sample then depends on its seed only, not on the batch it is in, the
    number of processes or what ran before: resumed and multi-process runs see the masks
    of a single uninterrupted run.
    """
    noise = torch.from_numpy(uniform_from_seeds(seeds, num_patches, stream=MASK_STREAM))
    if torch.device(device or "cpu").type == "cuda":
        noise = noise.pin_memory()  # so that the copy is queued, not waited for
    return noise.to(device, non_blocking=True)
