"""Top-k accuracy counting shared by k-NN, the linear probes and fine-tuning.

Ours rather than ``timm.utils.accuracy``: that one returns a float percentage of the batch
from ``topk``, whose order among tied scores is unspecified (k-NN votes tie often); exact
integer counts with ties broken towards the lower class make results reproducible.
"""

from __future__ import annotations

import torch


def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Count rows whose label is among the ``k`` highest scores, for each ``k``.

    ``k`` is capped at the number of classes, so with fewer than 5 classes "top-5" counts
    every row. Ties in the scores are broken towards the lower class index (a stable sort).

    Args:
        scores: ``[N, C]`` class scores (logits, votes, probabilities).
        labels: ``[N]`` integer labels.
        ks: The ``k`` values to count.

    Returns:
        ``{k: number of rows correct at k}`` as Python ints.
    """
    num_classes = scores.shape[1]
    max_k = min(max(ks), num_classes)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :max_k]  # [N, K]
    hits = order == labels.view(-1, 1).to(order.device)  # [N, K]
    return {k: int(hits[:, : min(k, num_classes)].any(dim=1).sum()) for k in ks}
