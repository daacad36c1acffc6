"""The recipe's experiment loggers: csv (default), TensorBoard, Weights & Biases, MLflow.

Lightning's own loggers; the optional ones need their package (a pip extra of this
project), which :func:`check_loggers` asks for before any work.
"""

from __future__ import annotations

import os

from pytorch_lightning.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)

from ssl_mae_plugin.extras import require
from ssl_mae_plugin.recipes import Recipe, TrainerConfig

# Logger name -> (module that must be importable, pip extra of this project).
LOGGER_PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),
}


def check_loggers(trainer: TrainerConfig) -> None:
    """Fail before any work if a logger's package is missing.

    Raises:
        MissingExtraError: Naming the logger and the pip extra that installs it.
    """
    for name in trainer.loggers:
        if name in LOGGER_PACKAGES:
            require(*LOGGER_PACKAGES[name], what=f"trainer.logger={name}")


def build_loggers(recipe: Recipe, index: int) -> list[Logger]:
    """The recipe's Lightning loggers for method ``index`` (run name: its label and seed)."""
    method_dir = recipe.method_dir(index)
    run = f"{recipe.methods[index].label}-seed{recipe.seed}"
    loggers: list[Logger] = []
    for name in recipe.trainer.loggers:
        if name == "csv":
            loggers.append(CSVLogger(method_dir, name="logs"))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(method_dir, name="tensorboard"))
        elif name == "wandb":
            loggers.append(WandbLogger(project=recipe.name, name=run, save_dir=str(method_dir)))
        else:
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            if uri is None:  # a file store in the run folder: no server, no database needed
                uri = (method_dir / "mlruns").resolve().as_uri()
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow >= 3.5
            loggers.append(
                MLFlowLogger(experiment_name=recipe.name, run_name=run, tracking_uri=uri)
            )
    return loggers
