"""k-NN accuracy during pretraining: how the features improve, epoch by epoch.

The curve lightly's benchmarks report (``lightly.utils.benchmarking.BenchmarkModule``
runs a k-NN at every validation epoch), here as a callback for any method with
``forward_features``, with the weighted k-NN of the evaluation [0] on fixed subsets of
both splits. Opt-in (``pretrain.knn_monitor``); it watches only: training, its checkpoints
and the reported (final-model) numbers are the same with it as without it.

- [0]: Unsupervised Feature Learning via Non-Parametric Instance Discrimination (InstDisc),
  2018, https://arxiv.org/abs/1805.01978
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ssl_mae_plugin.data import Normalization, eval_transform, limit_dataset
from ssl_mae_plugin.evaluation.features import extract_features
from ssl_mae_plugin.evaluation.knn import knn_classify
from ssl_mae_plugin.evaluation.transforms import TransformedDataset
from ssl_mae_plugin.pretrain.callbacks import KNN_SECONDS, KNN_TOP1, read_metrics, write_metrics
from ssl_mae_plugin.recipe_sections import KNNConfig
from ssl_mae_plugin.recipes import Recipe

logger = logging.getLogger(__name__)

# Above this share of an epoch's training time the monitor's cost is worth a warning.
COSTLY_FRACTION = 0.1


class KNNMonitor(Callback):
    """Weighted k-NN top-1 of the model's features after every ``every_n_epochs``-th epoch.

    Epochs count from 1: with ``every_n_epochs=5`` it measures after epochs 5, 10, ... and
    after the last epoch. ``pl_module.forward_features`` embeds the bank and the queries
    (every submodule in eval mode, restored after), the queries are classified by their
    neighbours in the bank, and ``knn_monitor/top1`` (a fraction) and
    ``knn_monitor/seconds`` are logged and written into that epoch's row of
    ``metrics.csv``. The row is EpochMetrics's, so this callback must come after it in the
    trainer's callbacks; both run before the epoch's checkpoint is saved, so a resumed run
    keeps the values of every saved epoch and measures the epochs it trains again anew.

    It does not change training: the work runs under ``torch.random.fork_rng`` (a
    DataLoader draws its base seed from the global generator; dropout and drop-path use
    it too) and in inference mode, and the modes of all submodules are restored. The
    monitor never selects an epoch either: the report's numbers stay the final model's.

    Under DDP every rank embeds its shard (``DistributedSampler(shuffle=False)``), the
    features are gathered in dataset order on every rank, every rank computes the same
    k-NN, and rank zero alone logs the values and writes them.

    If it took more than 10 % of an epoch's training time, a warning (once) names the
    sizes to lower.

    Args:
        bank: ``(image tensor, label)`` items whose features are the neighbours.
        query: ``(image tensor, label)`` items to classify.
        metrics_path: The method's ``metrics.csv``.
        num_classes: Number of classes.
        every_n_epochs: Measure after every n-th epoch (and after the last).
        k: Neighbours per query (clamped to the bank size by :func:`knn_classify`).
        temperature: Vote temperature.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers.
        precision: ``"32"`` or ``"bf16"`` (see :func:`extract_features`).
    """

    def __init__(
        self,
        bank: Dataset,
        query: Dataset,
        metrics_path: Path,
        *,
        num_classes: int,
        every_n_epochs: int,
        k: int,
        temperature: float,
        batch_size: int,
        num_workers: int = 0,
        precision: str = "32",
    ) -> None:
        self.bank = bank
        self.query = query
        self.metrics_path = metrics_path
        self.num_classes = num_classes
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.precision = precision
        self._warned = False

    @classmethod
    def from_recipe(cls, recipe: Recipe, index: int, train: Dataset, val: Dataset) -> KNNMonitor:
        """The monitor ``recipe.pretrain.knn_monitor`` asks for, for method ``index``.

        Args:
            recipe: A validated recipe whose ``pretrain.knn_monitor`` is set.
            index: Which entry of ``recipe.methods`` (its ``metrics.csv``).
            train: The training split (raw ``(image, label)`` items with ``classes``).
            val: The validation split, the same.
        """
        config = recipe.pretrain.knn_monitor
        seed = recipe.all_seeds[0]  # the same images for every seed, as the evaluation's
        normalization = Normalization(tuple(recipe.data.mean), tuple(recipe.data.std))
        transform = eval_transform(recipe.data.image_size, normalization)
        knn = recipe.eval.knn or KNNConfig()
        return cls(
            bank=TransformedDataset(limit_dataset(train, config.bank_images, seed=seed), transform),
            query=TransformedDataset(limit_dataset(val, config.query_images, seed=seed), transform),
            metrics_path=recipe.method_dir(index) / "metrics.csv",
            num_classes=len(train.classes),
            every_n_epochs=config.every_n_epochs,
            batch_size=recipe.eval.batch_size,
            num_workers=recipe.data.num_workers,
            precision="bf16" if recipe.trainer.precision.startswith("bf16") else "32",
            **knn.options(),
        )

    def _loader(self, dataset: Dataset, device: torch.device) -> DataLoader:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=DistributedSampler(dataset, shuffle=False) if distributed else None,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )

    def measure(self, module: pl.LightningModule) -> dict[str, float]:
        """k-NN top-1 of ``module``'s features now, and the seconds it took.

        Leaves every random generator, the modes of the submodules and the weights as they
        were. Under DDP every rank must call it (the features are gathered).

        Returns:
            ``{"knn_monitor/top1": fraction, "knn_monitor/seconds": seconds}``.
        """
        start = time.perf_counter()
        device = module.device
        forked = [] if device.type == "cpu" else [device]
        with torch.random.fork_rng(devices=forked, device_type=device.type):
            bank, bank_labels = extract_features(
                module, self._loader(self.bank, device), precision=self.precision, progress=False
            )
            query, query_labels = extract_features(
                module, self._loader(self.query, device), precision=self.precision, progress=False
            )
        result = knn_classify(
            bank,
            bank_labels,
            query,
            query_labels,
            k=self.k,
            temperature=self.temperature,
            num_classes=self.num_classes,
            device=device,
        )
        return {KNN_TOP1: result["top1"], KNN_SECONDS: round(time.perf_counter() - start, 3)}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure after every ``every_n_epochs``-th epoch and the last; log and record it."""
        epoch = trainer.current_epoch + 1  # epochs trained
        if epoch % self.every_n_epochs and epoch != trainer.max_epochs:
            return
        values = self.measure(pl_module)  # on every rank: the features are gathered
        if not trainer.is_global_zero:
            return
        pl_module.log_dict(values, rank_zero_only=True)
        rows = read_metrics(self.metrics_path)
        (row,) = [r for r in rows if int(r["epoch"]) == trainer.current_epoch]
        row.update(values)
        write_metrics(self.metrics_path, rows)
        self._warn_if_costly(epoch, values[KNN_SECONDS], float(row["seconds"]))

    def _warn_if_costly(self, epoch: int, seconds: float, trained: float) -> None:
        if self._warned or seconds <= COSTLY_FRACTION * trained:
            return
        self._warned = True
        logger.warning(
            "pretrain.knn_monitor took %.1f s after epoch %d, %.0f %% of its %.1f s of training; "
            "lower bank_images (%d) or query_images (%d), or raise every_n_epochs (%d)",
            seconds,
            epoch,
            100 * seconds / trained if trained else float("inf"),
            trained,
            len(self.bank),
            len(self.query),
            self.every_n_epochs,
        )
