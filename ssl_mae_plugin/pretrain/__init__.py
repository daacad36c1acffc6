"""The pretraining engine: a Lightning Trainer over seeded, resumable, sharded batches.

- :mod:`.trainer`: one method of a recipe, start to finish (or resumed).
- :mod:`.datamodule` and :mod:`.sampling`: batches that depend on ``(seed, epoch, index)``
  only, so a resumed or multi-process run sees exactly the batches of a single one.
- :mod:`.augment`: MAE's crop + flip on the training device for data kept in memory.
- :mod:`.callbacks`: per-epoch metrics, run info, graceful interrupts.
- :mod:`.knn_monitor`: opt-in k-NN accuracy every few epochs (a curve in ``metrics.csv``).
- :mod:`.checkpoints`: where checkpoints live and how they load.
- :mod:`.decoding`: reduced-size JPEG decoding of MAE's crops.
- :mod:`.cluster`: GPUs and launchers (SLURM, torchrun) checked against the recipe.
- :mod:`.loggers`: the recipe's experiment loggers.
"""

from ssl_mae_plugin.pretrain.callbacks import knn_curve
from ssl_mae_plugin.pretrain.checkpoints import checkpoint_path, load_mae, load_pretrained
from ssl_mae_plugin.pretrain.cluster import check_accelerator
from ssl_mae_plugin.pretrain.knn_monitor import KNNMonitor
from ssl_mae_plugin.pretrain.loggers import check_loggers
from ssl_mae_plugin.pretrain.trainer import (
    PretrainResult,
    build_method,
    check_checkpoint,
    pretrain,
    set_aside,
    summarize,
    training_settings,
)

__all__ = [
    "KNNMonitor",
    "PretrainResult",
    "build_method",
    "check_accelerator",
    "check_checkpoint",
    "check_loggers",
    "checkpoint_path",
    "knn_curve",
    "load_mae",
    "load_pretrained",
    "pretrain",
    "set_aside",
    "summarize",
    "training_settings",
]
