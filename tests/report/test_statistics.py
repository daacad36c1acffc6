"""Intervals against closed forms, paired differences on outcomes built to differ."""

import math

import numpy as np
import pytest

from ssl_mae_plugin.report.statistics import (
    accuracy_summary,
    combine_seeds,
    paired_bootstrap,
    paired_difference,
    paired_table,
    t_interval,
    wilson_interval,
)


def test_wilson_interval_matches_the_closed_form():
    lo, hi = wilson_interval(50, 100)
    assert (lo, hi) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    z2 = 1.959964**2
    assert wilson_interval(0, 10) == pytest.approx([0.0, z2 / (10 + z2)], abs=1e-6)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="correct <= total"):
        wilson_interval(11, 10)


def test_t_interval_matches_the_closed_form():
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx([2 - half, 2 + half], abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        t_interval([0.5])


def test_paired_bootstrap_recovers_a_known_difference():
    n = 2000
    a = np.arange(n) < 1200  # 60 % correct
    b = np.arange(n) < 1000  # 50 %, always wrong where a is wrong: differences 0 or 1
    lo, hi = paired_bootstrap(a, b, seed=1)
    sd = math.sqrt(0.1 * 0.9 / n)  # the bootstrap's distribution of the mean difference
    assert 0 < lo < 0.1 < hi
    assert (lo, hi) == pytest.approx((0.1 - 1.96 * sd, 0.1 + 1.96 * sd), abs=0.0015)
    assert paired_bootstrap(a, a) == [0.0, 0.0]
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap(a, b[:-1])


def test_paired_difference_uses_t_over_several_seeds():
    a = [np.r_[np.ones(60), np.zeros(40)], np.r_[np.ones(62), np.zeros(38)]]
    b = [np.r_[np.ones(50), np.zeros(50)], np.r_[np.ones(50), np.zeros(50)]]
    one = paired_difference(a[:1], b[:1])
    assert one["difference"] == pytest.approx(0.10) and one["excludes_zero"]
    assert one["ci95_kind"].startswith("paired bootstrap over 100 images")
    two = paired_difference(a, b)
    assert two["per_seed"] == pytest.approx([0.10, 0.12])
    assert two["ci95"] == pytest.approx(t_interval([0.10, 0.12]))
    assert two["ci95_kind"] == "Student t over 2 paired seeds"


def test_summaries_say_which_interval_they_are():
    single = accuracy_summary([0.5], 50, 100)
    assert (
        single["ci95"] == wilson_interval(50, 100)
        and "test-set sampling only" in single["ci95_kind"]
    )
    several = accuracy_summary([0.5, 0.6, 0.7], 0, 100)
    assert several["ci95"] == pytest.approx(t_interval([0.5, 0.6, 0.7]))
    assert several["std"] == pytest.approx(0.1) and several["mean"] == pytest.approx(0.6)


def row(label, method, control, predictions):
    return {"label": label, "method": method, "control": control,
            "knn": {"top1": float(np.mean(np.asarray(predictions) == LABELS)), "top5": 1.0,
                    "predictions": predictions}, "linear": None, "finetune": None}  # fmt: skip


LABELS = np.arange(100) % 10


def test_the_paired_table_pairs_rows_with_their_controls_and_the_reference():
    right = LABELS.tolist()
    wrong_ten = [(v + 1) % 10 if i < 10 else v for i, v in enumerate(right)]
    wrong_thirty = [(v + 1) % 10 if i < 30 else v for i, v in enumerate(right)]
    seed = [
        row("mae", "mae", "mae (untrained)", right),
        row("simclr", "simclr", "mae (untrained)", wrong_ten),
        row("mae (untrained)", "random_init", None, wrong_thirty),
    ]
    table = paired_table([seed], LABELS, reference="mae")
    pairs = {(entry["row"], entry["versus"]): entry for entry in table}
    assert set(pairs) == {
        ("mae", "mae (untrained)"),
        ("simclr", "mae (untrained)"),
        ("simclr", "mae"),
    }
    assert pairs[("mae", "mae (untrained)")]["difference"] == pytest.approx(0.30)
    assert pairs[("simclr", "mae")]["difference"] == pytest.approx(-0.10)
    assert pairs[("simclr", "mae")]["excludes_zero"]
    combined = combine_seeds([seed, seed], LABELS)
    assert combined[0]["knn"]["per_seed"]["top1"] == [1.0, 1.0] and combined[0]["seeds"] == 2
    assert "predictions" not in combined[0]["knn"] and combined[1]["knn"]["top1"] == 0.9
