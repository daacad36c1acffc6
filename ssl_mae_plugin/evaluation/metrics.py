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


class Tally:
    """Running top-1 / top-5 counts over batches, and each sample's top-1 prediction.

    The predictions (in the order the batches came) let a report pair two models image by
    image; ties go to the lower class, as in :func:`topk_correct`.
    """

    def __init__(self) -> None:
        self.seen = 0
        self.hits = {1: 0, 5: 0}
        self._predictions: list[torch.Tensor] = []

    def add(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        """Count one batch of ``[N, C]`` scores against its ``[N]`` labels."""
        counts = topk_correct(scores, labels)
        self.seen += len(labels)
        self.hits = {k: self.hits[k] + counts[k] for k in self.hits}
        self._predictions.append(scores.argmax(dim=1).cpu())  # first maximum: lower class

    @property
    def predictions(self) -> list[int]:
        """Top-1 class of every sample counted so far."""
        return torch.cat(self._predictions).tolist() if self._predictions else []

    def result(self) -> dict:
        """``{"top1", "top5", "predictions"}``: accuracies as fractions in ``[0, 1]``."""
        total = max(self.seen, 1)
        return {
            "top1": self.hits[1] / total,
            "top5": self.hits[5] / total,
            "predictions": self.predictions,
        }
