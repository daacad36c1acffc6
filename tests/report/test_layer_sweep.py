import numpy as np
import pytest

from ssl_mae_plugin.report.layer_sweep import plot_layer_sweep, summarize_layer_sweep

LABELS = [0, 1] * 50  # 100 images


def _result(correct: np.ndarray) -> dict:
    """A probe result whose predictions are right exactly where ``correct`` is true."""
    labels = np.asarray(LABELS)
    predictions = np.where(correct, labels, 1 - labels)
    return {"top1": float(correct.mean()), "top5": 1.0, "predictions": predictions.tolist()}


def _points(correct_by_point: dict[tuple[str, int], np.ndarray]) -> list[dict]:
    return [
        {"pool": pool, "block": block, "knn": _result(correct), "linear": None}
        for (pool, block), correct in correct_by_point.items()
    ]


def test_best_point_reference_and_held_out_choice_on_constructed_predictions():
    rng = np.random.default_rng(0)
    base = rng.random(100) < 0.5
    better_on_even = base.copy()
    better_on_even[0::2] = True  # best on half A, no better than base on half B
    better_everywhere = base | (rng.random(100) < 0.4)
    sweep = _points(
        {
            ("cls", 0): better_on_even,
            ("cls", 1): base,  # the last block's cls token: the reference
            ("mean", 0): better_everywhere,
            ("mean", 1): base,
        }
    )
    summary = summarize_layer_sweep([sweep], LABELS)
    best = summary["best"]["knn"]
    assert summary["depth"] == 2 and "linear" not in summary["best"]
    assert (best["reference"]["pool"], best["reference"]["block"]) == ("cls", 1)
    top = max([better_on_even, better_everywhere], key=np.mean)
    assert best["best"]["top1"] == pytest.approx(top.mean())
    assert best["versus_reference"]["difference"] == pytest.approx(top.mean() - base.mean())
    chosen = (best["held_out"]["pool"], best["held_out"]["block"])
    assert chosen == ("cls", 0)  # it is the best on the even positions
    gain_b = better_on_even[1::2].mean() - base[1::2].mean()
    assert best["held_out"]["difference"] == pytest.approx(gain_b) == 0.0
    assert "predictions" not in summary["points"][0]["knn"]
    assert summary["points"][0]["knn"]["ci95"]["top1"][0] < better_on_even.mean()


def test_two_seeds_give_t_intervals_and_the_figure_is_drawn(tmp_path):
    rng = np.random.default_rng(1)
    seeds = [
        _points(
            {
                (pool, block): rng.random(100) < 0.3 + 0.2 * block
                for pool in ("cls", "mean", "cls+mean")
                for block in range(3)
            }
        )
        for _ in range(2)
    ]
    summary = summarize_layer_sweep(seeds, LABELS)
    assert summary["best"]["knn"]["versus_reference"]["ci95_kind"].startswith("Student t")
    path = plot_layer_sweep("row", summary, tmp_path / "sweep.png")
    assert path.stat().st_size > 10_000
