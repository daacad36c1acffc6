"""Probe every block of a ViT with every pooling: where in the network the features are best.

For BEiT-style models the best linear-probe layer lies below the last; the sweep measures
where it lies for a given model, from one forward pass per batch (see
:class:`~ssl_mae_plugin.evaluation.vit_features.EveryBlock`). Each point is probed with
k-NN and the linear probe on cached features, with the recipe's settings.
"""

from __future__ import annotations

from typing import Any

import torch

from ssl_mae_plugin.evaluation.knn import knn_classify
from ssl_mae_plugin.evaluation.linear import linear_probe
from ssl_mae_plugin.evaluation.vit_features import EveryBlock


def sweep_blocks(
    sweep: EveryBlock,
    features: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    knn: dict[str, Any] | None,
    linear: dict[str, Any] | None,
    device: torch.device,
    seed: int,
) -> list[dict[str, Any]]:
    """k-NN and linear-probe results of every (pooling, block) point.

    Args:
        sweep: The module whose ``forward_features`` made ``features``.
        features: ``(train features, train labels, val features, val labels)`` of ``sweep``.
        knn: Keyword arguments of :func:`knn_classify` (``None``: no k-NN).
        linear: Keyword arguments of :func:`linear_probe` (``None``: no linear probe).
        device: Where to compute.
        seed: Seed of the linear heads.

    Returns:
        One ``{"pool", "block" (0-based), "knn", "linear"}`` per point, pooling by pooling;
        results hold per-image ``predictions`` like the rows' results.
    """
    train, train_labels, val, val_labels = features
    points = []
    for pool in sweep.pools:
        for block in range(sweep.depth):
            x_train, x_val = sweep.select(train, block, pool), sweep.select(val, block, pool)
            point: dict[str, Any] = {"pool": pool, "block": block, "knn": None, "linear": None}
            if knn is not None:
                point["knn"] = knn_classify(
                    x_train, train_labels, x_val, val_labels, device=device, **knn
                )
            if linear is not None:
                result = linear_probe(
                    x_train, train_labels, x_val, val_labels, device=device, seed=seed, **linear
                )
                result.pop("history", None)
                point["linear"] = result
            points.append(point)
    return points
