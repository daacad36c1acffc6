"""Which ViT features a probe sees: the pooling and the blocks they come from.

Every block's tokens are normalised with the ViT's final norm before pooling, as DINO's
linear protocol does for its intermediate blocks [1]. ``cls`` is the class token (the
paper's linear-probe feature [0]), ``mean`` the mean of the patch tokens, ``cls+mean``
both side by side (DINO's ViT-B feature [1]). Features of several blocks are concatenated
(DINO's ViT-S feature: the cls tokens of the last 4 blocks [1]). All blocks come from one
forward pass (timm's ``forward_intermediates``).

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
- [1]: Emerging Properties in Self-Supervised Vision Transformers (DINO), 2021,
  https://arxiv.org/abs/2104.14294 (``eval_linear.py``: ``n_last_blocks``, ``avgpool``)
"""

from __future__ import annotations

from typing import Literal

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

Pool = Literal["cls", "mean", "cls+mean"]
POOLS: tuple[Pool, ...] = ("cls", "mean", "cls+mean")
Blocks = int | list[int]


def block_indices(vit: VisionTransformer, blocks: Blocks) -> list[int]:
    """The 0-based block indices that ``blocks`` names in ``vit``.

    Args:
        vit: The ViT.
        blocks: ``n`` for the last ``n`` blocks, or a list of indices (negative ones count
            from the end, as in Python).

    Raises:
        ValueError: If ``vit`` has fewer blocks, an index is out of range or repeated.
    """
    depth = len(vit.blocks)
    if isinstance(blocks, int):
        if not 1 <= blocks <= depth:
            raise ValueError(f"blocks={blocks} asks for the last {blocks} of {depth} blocks")
        return list(range(depth - blocks, depth))
    indices = [index % depth if -depth <= index < depth else None for index in blocks]
    if not indices or None in indices or len(set(indices)) != len(indices):
        raise ValueError(f"blocks={blocks} is not a list of distinct indices of {depth} blocks")
    return indices  # type: ignore[return-value]


def block_tokens(
    vit: VisionTransformer, images: torch.Tensor, indices: list[int]
) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """``(cls [N, D] or None, patches [N, L, D])`` of each block in ``indices``, normalised.

    One forward pass that stops after the last block asked for.
    """
    outputs = vit.forward_intermediates(
        images,
        indices=indices,
        return_prefix_tokens=True,
        norm=True,
        stop_early=True,
        output_fmt="NLC",
        intermediates_only=True,
    )
    has_cls = bool(vit.has_class_token)
    return [(prefix[:, 0] if has_cls else None, patches) for patches, prefix in outputs]


def pool_tokens(cls: torch.Tensor | None, patches: torch.Tensor, pool: Pool) -> torch.Tensor:
    """``[N, D]`` (``[N, 2D]`` for ``cls+mean``) pooled features of one block."""
    mean = patches.mean(dim=1)
    if pool == "mean":
        return mean
    if cls is None:
        raise ValueError(f"pool={pool!r} needs a class token; this ViT has none (use 'mean')")
    return cls if pool == "cls" else torch.cat([cls, mean], dim=1)


class ViTFeatures(nn.Module):
    """The backbone protocol over a timm ViT: pooled features of chosen blocks, concatenated.

    Args:
        vit: A timm ``VisionTransformer`` (kept as ``backbone``).
        pool: ``cls``, ``mean`` or ``cls+mean``.
        blocks: The last ``n`` blocks, or a list of block indices (see :func:`block_indices`).

    Raises:
        ValueError: For blocks the ViT does not have, or ``cls`` pooling without a class token.
    """

    def __init__(self, vit: VisionTransformer, pool: Pool = "cls", blocks: Blocks = 1) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.backbone = vit
        self.pool = pool
        self.indices = block_indices(vit, blocks)
        if pool != "mean" and not vit.has_class_token:
            raise ValueError(f"pool={pool!r} needs a class token; this ViT has none (use 'mean')")

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, len(blocks) * D]`` (twice that for ``cls+mean``) features, in block order."""
        tokens = block_tokens(self.backbone, images, self.indices)
        return torch.cat([pool_tokens(cls, patches, self.pool) for cls, patches in tokens], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(images)


class EveryBlock(nn.Module):
    """The cls token and the mean patch token of every block, from one forward pass.

    ``forward_features`` returns ``[N, depth * 2 * D]``: for each block ``[cls, mean]``
    (zeros in place of ``cls`` for a ViT without a class token); :meth:`select` cuts one
    block's pooled feature out of it, so a layer sweep caches one matrix per split.
    """

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.backbone = vit
        self.depth = len(vit.blocks)
        self.dim = int(vit.embed_dim)
        self.has_cls = bool(vit.has_class_token)

    @property
    def pools(self) -> tuple[Pool, ...]:
        """The poolings this ViT has (``mean`` only without a class token)."""
        return POOLS if self.has_cls else ("mean",)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, depth * 2 * D]``: each block's ``[cls, mean]``."""
        tokens = block_tokens(self.backbone, images, list(range(self.depth)))
        parts = []
        for cls, patches in tokens:
            mean = patches.mean(dim=1)
            parts += [cls if cls is not None else torch.zeros_like(mean), mean]
        return torch.cat(parts, dim=1)

    def select(self, features: torch.Tensor, block: int, pool: Pool) -> torch.Tensor:
        """Block ``block``'s ``pool`` feature out of :meth:`forward_features`' output."""
        start = block * 2 * self.dim
        if pool == "cls":
            return features[:, start : start + self.dim]
        if pool == "mean":
            return features[:, start + self.dim : start + 2 * self.dim]
        return features[:, start : start + 2 * self.dim]


OWN_FEATURES = "the model's own"


def feature_view(
    model: nn.Module, pool: Pool | None = None, blocks: Blocks = 1
) -> tuple[nn.Module, str]:
    """What a probe runs on ``model`` and its description for reports and cache keys.

    Args:
        model: Has ``forward_features`` and maybe a ``backbone``.
        pool: ``None`` keeps ``model.forward_features``; otherwise, for a timm ViT backbone,
            :class:`ViTFeatures` with ``pool`` and ``blocks`` (other backbones keep theirs).
        blocks: See :class:`ViTFeatures`.
    """
    vit = getattr(model, "backbone", None)
    if pool is None or not isinstance(vit, VisionTransformer):
        return model, OWN_FEATURES
    view = ViTFeatures(vit, pool, blocks)
    depth, indices = len(vit.blocks), view.indices
    if indices == list(range(depth - len(indices), depth)):
        which = "last block" if len(indices) == 1 else f"last {len(indices)} blocks"
    else:
        which = "blocks " + ", ".join(str(i) for i in indices)
    return view, f"{pool}, {which} of {depth}"
