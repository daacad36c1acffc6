"""Intervals and paired differences for accuracies: what a report lets one conclude.

With several seeds an accuracy's 95 % interval is Student's t over the per-seed values
(it covers training randomness and test-set sampling together); with one seed it is
Wilson's score interval over the validation images, which covers test-set sampling only.
A difference between two rows evaluated on the same images is paired: a bootstrap over
images within a seed, Student's t over the per-seed differences with several seeds.

- [0]: Wilson, Probable Inference, the Law of Succession, and Statistical Inference, 1927,
  https://doi.org/10.1080/01621459.1927.10502953
- [1]: Efron, Bootstrap Methods: Another Look at the Jackknife, 1979,
  https://doi.org/10.1214/aos/1176344552
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> list[float]:
    """Wilson's score interval of a proportion ``correct / total`` [0].

    Raises:
        ValueError: If ``total < 1`` or ``correct`` is not in ``[0, total]``.
    """
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total >= 1, got {correct}/{total}")
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> list[float]:
    """Student's t interval of the mean of ``values`` (at least two).

    Raises:
        ValueError: For fewer than two values.
    """
    if len(values) < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {len(values)}")
    array = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1)
    half /= math.sqrt(len(array))
    return [float(array.mean() - half), float(array.mean() + half)]


def paired_bootstrap(
    correct_a: Sequence[bool],
    correct_b: Sequence[bool],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> list[float]:
    """Percentile bootstrap interval of ``accuracy(a) - accuracy(b)`` on the same images [1].

    Images are resampled with replacement, both models' outcomes together. Each image's
    difference is -1, 0 or 1, so a resample's mean depends only on how many images of
    each kind it draws: the counts are drawn from the multinomial of the three observed
    frequencies, exactly the nonparametric bootstrap, without materialising indices.

    Raises:
        ValueError: If the two outcome lists differ in length or are empty.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need two equally long, non-empty outcome lists, got {a.size}, {b.size}")
    n = a.size
    frequencies = np.array([np.sum(a & ~b), np.sum(~a & b), np.sum(a == b)]) / n
    counts = np.random.default_rng(seed).multinomial(n, frequencies, size=resamples)
    means = (counts[:, 0] - counts[:, 1]) / n
    tail = 100 * (1 - confidence) / 2
    return [float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))]


def accuracy_summary(per_seed: Sequence[float], correct: int, total: int) -> dict[str, Any]:
    """Mean accuracy over seeds with its 95 % interval and what the interval covers.

    Args:
        per_seed: The accuracy of each seed (fractions).
        correct: Correct images of the only seed (used when there is one).
        total: Validation images per seed.
    """
    mean = float(np.mean(per_seed))
    if len(per_seed) > 1:
        return {
            "mean": mean,
            "std": float(np.std(per_seed, ddof=1)),
            "per_seed": list(per_seed),
            "ci95": t_interval(per_seed),
            "ci95_kind": f"Student t over {len(per_seed)} seeds",
        }
    return {
        "mean": mean,
        "std": None,
        "per_seed": list(per_seed),
        "ci95": wilson_interval(correct, total),
        "ci95_kind": f"Wilson over {total:,} validation images (test-set sampling only)",
    }


def paired_difference(
    correct_a: Sequence[Sequence[bool]], correct_b: Sequence[Sequence[bool]], seed: int = 0
) -> dict[str, Any]:
    """``accuracy(a) - accuracy(b)`` on the same images, per seed, with a paired interval.

    Args:
        correct_a: Per seed, the per-image outcomes (1 = correct) of row ``a``.
        correct_b: The same for row ``b``, in the same seeds and image order.
        seed: Seed of the bootstrap (one seed).

    Returns:
        ``difference`` (mean over seeds), ``per_seed``, ``ci95``, ``ci95_kind`` and
        ``excludes_zero``.
    """
    per_seed = [
        float(np.mean(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)))
        for a, b in zip(correct_a, correct_b, strict=True)
    ]
    if len(per_seed) > 1:
        interval = t_interval(per_seed)
        kind = f"Student t over {len(per_seed)} paired seeds"
    else:
        interval = paired_bootstrap(correct_a[0], correct_b[0], seed=seed)
        kind = f"paired bootstrap over {len(correct_a[0]):,} images (test-set sampling only)"
    return {
        "difference": float(np.mean(per_seed)),
        "per_seed": per_seed,
        "ci95": interval,
        "ci95_kind": kind,
        "excludes_zero": interval[0] > 0 or interval[1] < 0,
    }


ACCURACIES = ("top1", "top5")
PARTS = ("knn", "linear", "finetune")


def correct_outcomes(result: dict[str, Any], labels: Sequence[int]) -> np.ndarray:
    """Per image, whether ``result["predictions"]`` matches ``labels``."""
    return np.asarray(result["predictions"]) == np.asarray(labels)


def combine_seeds(
    rows_by_seed: list[list[dict[str, Any]]], labels: Sequence[int]
) -> list[dict[str, Any]]:
    """One row per label over all seeds, each accuracy with its interval.

    Args:
        rows_by_seed: Per seed, the report rows (same labels in the same order), each part's
            result holding ``predictions``.
        labels: The validation labels the predictions are scored against.

    Returns:
        The first seed's rows with every part's ``top1``/``top5`` replaced by the mean over
        seeds, and ``ci95`` ({accuracy: [lo, hi]}), ``ci95_kind``, ``std`` and
        ``per_seed`` added; ``predictions`` are dropped. Pretraining summaries keep the
        first seed's, with ``final_loss`` per seed.
    """
    combined = []
    for position, first in enumerate(rows_by_seed[0]):
        row = {**first, "seeds": len(rows_by_seed)}
        seeds = [rows[position] for rows in rows_by_seed]
        for part in PARTS:
            if not first.get(part):
                continue
            results = [seeded[part] for seeded in seeds]
            summaries = {
                key: accuracy_summary(
                    [result[key] for result in results],
                    round(results[0][key] * len(labels)),
                    len(labels),
                )
                for key in ACCURACIES
            }
            row[part] = {
                **{k: v for k, v in results[0].items() if k != "predictions"},
                **{key: summary["mean"] for key, summary in summaries.items()},
                "ci95": {key: summary["ci95"] for key, summary in summaries.items()},
                "ci95_kind": summaries["top1"]["ci95_kind"],
                "std": {key: summary["std"] for key, summary in summaries.items()},
                "per_seed": {key: summary["per_seed"] for key, summary in summaries.items()},
            }
        if first.get("pretrain"):
            losses = [seeded["pretrain"]["final_loss"] for seeded in seeds]
            row["pretrain"] = {**first["pretrain"], "final_loss_per_seed": losses}
        combined.append(row)
    return combined


def paired_table(
    rows_by_seed: list[list[dict[str, Any]]], labels: Sequence[int], reference: str
) -> list[dict[str, Any]]:
    """Top-1 differences paired image by image: rows against their controls and a reference.

    Each trained row is compared with its own control; every row but the controls with
    ``reference``.

    Returns:
        One entry per (row, versus, part): ``row``, ``versus``, ``part``, and the fields of
        :func:`paired_difference` (differences in accuracy fractions).
    """
    first = rows_by_seed[0]
    position = {row["label"]: i for i, row in enumerate(first)}
    pairs = [(row["label"], row["control"]) for row in first if row.get("control")]
    pairs += [
        (row["label"], reference)
        for row in first
        if row["method"] != "random_init" and row["label"] != reference
    ]
    table = []
    for label, versus in dict.fromkeys(pairs):
        if versus not in position:
            continue
        for part in PARTS:
            a, b = first[position[label]].get(part), first[position[versus]].get(part)
            if not a or not b:
                continue
            outcomes = [
                (
                    correct_outcomes(rows[position[label]][part], labels),
                    correct_outcomes(rows[position[versus]][part], labels),
                )
                for rows in rows_by_seed
            ]
            difference = paired_difference([o[0] for o in outcomes], [o[1] for o in outcomes])
            table.append({"row": label, "versus": versus, "part": part, **difference})
    return table
