"""Reports of a recipe run: rows, ``report.json`` / ``report.md``, figures, the machine."""

from ssl_mae_plugin.report.document import compose_report, protocols
from ssl_mae_plugin.report.figures import (
    plot_accuracy_bars,
    plot_loss_curves,
    save_image_grid,
    save_reconstruction_figure,
    summary_figures,
)
from ssl_mae_plugin.report.machine import cpu_model, machine_description
from ssl_mae_plugin.report.markdown import comparison_table, markdown_report, write_report
from ssl_mae_plugin.report.rows import accuracy, count_parameters, describe_backbone, make_row
from ssl_mae_plugin.report.statistics import combine_seeds, paired_table

__all__ = [
    "accuracy",
    "combine_seeds",
    "comparison_table",
    "compose_report",
    "count_parameters",
    "cpu_model",
    "describe_backbone",
    "machine_description",
    "make_row",
    "markdown_report",
    "paired_table",
    "plot_accuracy_bars",
    "plot_loss_curves",
    "protocols",
    "save_image_grid",
    "save_reconstruction_figure",
    "summary_figures",
    "write_report",
]
