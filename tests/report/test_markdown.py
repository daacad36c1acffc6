"""``report.md``'s comparison table: one line a row, accuracies in percent, gaps as dashes."""

from ssl_mae_plugin.report import comparison_table


def test_rows_become_table_lines_with_percentages_and_dashes():
    rows = [
        {
            "method": "mae",
            "backbone": "vit_tiny/4",
            "params": 5_500_000,
            "pretrain": {"epochs": 2, "seconds": 12.345, "images_per_second": 100.0,
                         "final_loss": 0.41234},
            "knn": {"top1": 0.531, "top5": 0.93},
            "linear": None,
            "finetune": None,
        },
        {"method": "random_init", "backbone": "vit_tiny/4", "params": 5_500_000,
         "pretrain": None, "knn": None, "linear": None, "finetune": None},
    ]  # fmt: skip
    lines = comparison_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| method | backbone |")
    assert lines[2].split(" | ")[1:9] == [
        "vit_tiny/4", "5.50", "2", "12.3", "100.0", "0.4123", "53.1", "93.0"
    ]  # fmt: skip
    assert lines[3].count("–") == 9  # nothing but the name, backbone and size
