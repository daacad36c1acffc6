"""``report.md``'s tables: accuracies with intervals, pretraining, paired differences."""

from ssl_mae_plugin.report import comparison_table
from ssl_mae_plugin.report.markdown import difference_table, pretraining_table

ROWS = [
    {
        "label": "mae",
        "method": "mae",
        "backbone": "vit_tiny/4",
        "control": "mae (untrained)",
        "params": 5_500_000,
        "pretrain": {"epochs": 2, "seconds": 12.345, "images_per_second": 100.0,
                     "final_loss": 0.41234},
        "knn": {"top1": 0.531, "top5": 0.93, "ci95": {"top1": [0.51, 0.552]}},
        "linear": None,
        "finetune": None,
    },
    {"label": "mae (untrained)", "method": "random_init", "backbone": "vit_tiny/4",
     "control": None, "params": 5_500_000, "pretrain": None, "knn": None, "linear": None,
     "finetune": None},
]  # fmt: skip


def test_accuracies_in_percent_with_their_intervals_and_dashes():
    lines = comparison_table(ROWS).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| row | backbone | control |")
    assert lines[2].split(" | ")[1:5] == ["vit_tiny/4", "mae (untrained)", "53.1 (51.0–55.2)", "–"]
    assert lines[3].count("–") == 6  # no control, and no result of any part


def test_pretraining_lists_trained_rows_only():
    lines = pretraining_table(ROWS).splitlines()
    assert len(lines) == 3
    assert lines[2].split(" | ")[1:] == ["mae", "5.50", "2", "12.3", "100.0", "0.4123 |"]


def test_differences_in_signed_points():
    entry = {"row": "mae", "versus": "mae (untrained)", "part": "knn", "difference": 0.052,
             "ci95": [0.01, 0.09], "excludes_zero": True,
             "ci95_kind": "paired bootstrap"}  # fmt: skip
    line = difference_table([entry]).splitlines()[2]
    assert "| +5.2 | +1.0 to +9.0 | yes | paired bootstrap |" in line
