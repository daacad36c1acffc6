"""Weighted k-nearest-neighbour classification of frozen features.

- [0]: Unsupervised Feature Learning via Non-Parametric Instance Discrimination (InstDisc),
  2018, https://arxiv.org/abs/1805.01978
- [1]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ssl_mae_plugin.evaluation.metrics import Tally

# Similarity block budget: chunk_size * num_train entries (float32) when chunk_size is None.
_BLOCK_ENTRIES = 2**24


def _num_classes(*labels: torch.Tensor) -> int:
    return int(max(int(t.max()) for t in labels if t.numel())) + 1


@torch.no_grad()
def knn_predict_scores(
    features: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
) -> torch.Tensor:
    """Class scores of L2-normalised ``features`` from their ``k`` nearest ``bank`` rows.

    Each neighbour votes for its label with weight ``exp(cosine / temperature)`` [0] (the
    rule of ``lightly.utils.benchmarking.knn_predict``).

    Args:
        features: ``[M, D]`` L2-normalised query features.
        bank: ``[N, D]`` L2-normalised training features.
        bank_labels: ``[N]`` training labels.
        num_classes: Number of classes ``C``.
        k: Neighbours per query, ``1 <= k <= N``.
        temperature: Softmax temperature of the vote weights.

    Returns:
        ``[M, C]`` summed vote weights.
    """
    similarity = features @ bank.T  # [M, N]
    sim, idx = similarity.topk(k, dim=1)  # [M, k]
    neighbour_labels = bank_labels[idx]  # [M, k]
    weights = (sim / temperature).exp()  # [M, k]
    scores = torch.zeros(features.shape[0], num_classes, device=features.device)
    return scores.scatter_add_(1, neighbour_labels, weights)  # [M, C]


def check_knn_options(k: int, temperature: float) -> None:
    """Raise ``ValueError``, naming the option, unless ``k >= 1`` and ``temperature > 0``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


@torch.no_grad()
def knn_classify(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Top-1 / top-5 accuracy of a weighted k-NN classifier on cosine similarity [0].

    Both feature sets are L2-normalised; each validation row takes its ``k`` most similar
    training rows, which vote for their label with weight ``exp(similarity / temperature)``;
    classes are ranked by their summed votes (ties go to the lower class index). Validation
    rows are processed ``chunk_size`` at a time, so the ``[chunk_size, N_train]``
    similarity block is the largest tensor made (50,000 x 10,000 never exists at once).
    MAE features are known to be weak under k-NN [1]; it is reported for comparison.

    Args:
        train_features: ``[N, D]`` features of the labelled bank.
        train_labels: ``[N]`` integer labels.
        val_features: ``[M, D]`` features to classify.
        val_labels: ``[M]`` integer labels.
        k: Neighbours. Larger than ``N`` is clamped to ``N`` with a warning.
        temperature: Vote temperature (0.1 as InstDisc and lightly).
        num_classes: Number of classes; ``max label + 1`` when omitted.
        chunk_size: Validation rows per block; by default enough rows for a block of
            about 16M similarities (64 MiB in float32).
        device: Where to compute; the device of ``train_features`` when omitted.

    Returns:
        ``{"top1", "top5", "predictions", "k", "temperature"}``: accuracies as fractions in
        ``[0, 1]``, the top-1 class of each validation row.
        ``"top5"`` is top-``min(5, C)``, so it is 1.0 with fewer than 5 classes; ``"k"`` is
        the ``k`` actually used.

    Raises:
        ValueError: If ``k < 1``, ``temperature <= 0``, the bank is empty or the shapes
            disagree.
    """
    check_knn_options(k, temperature)
    if train_features.ndim != 2 or val_features.ndim != 2:
        raise ValueError("train_features and val_features must be 2-D [N, D]")
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(
            f"feature dims differ: train {train_features.shape[1]}, val {val_features.shape[1]}"
        )
    if len(train_features) != len(train_labels) or len(val_features) != len(val_labels):
        raise ValueError("features and labels must have the same number of rows")
    num_train = len(train_features)
    if num_train == 0:
        raise ValueError("the training bank is empty")
    if k > num_train:
        warnings.warn(
            f"k={k} is larger than the {num_train} training samples; using k={num_train}",
            stacklevel=2,
        )
        k = num_train
    if num_classes is None:
        num_classes = _num_classes(train_labels, val_labels)
    device = torch.device(device) if device is not None else train_features.device
    if chunk_size is None:
        chunk_size = max(1, _BLOCK_ENTRIES // num_train)

    bank = F.normalize(train_features.to(device, torch.float32), dim=1)  # [N, D]
    bank_labels = train_labels.to(device, torch.int64)
    tally = Tally()
    for start in range(0, len(val_features), chunk_size):
        chunk = val_features[start : start + chunk_size].to(device, torch.float32)
        chunk = F.normalize(chunk, dim=1)  # [m, D]
        scores = knn_predict_scores(chunk, bank, bank_labels, num_classes, k, temperature)
        tally.add(scores, val_labels[start : start + chunk_size].to(device))
    return {
        **tally.result(),
        "k": k,
        "temperature": temperature,
    }
