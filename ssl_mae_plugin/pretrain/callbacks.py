"""Lightning callbacks of pretraining: per-epoch metrics, run info, graceful interrupts."""

from __future__ import annotations

import csv
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from ssl_mae_plugin.storage import atomic_path

RUN_INFO_KEY = "ssl_mae_run"
# Written by KNNMonitor (pretrain/knn_monitor.py) into the row of the epochs it measures.
KNN_TOP1, KNN_SECONDS = "knn_monitor/top1", "knn_monitor/seconds"
METRICS_FIELDS = (
    "epoch",
    "step",
    "loss",
    "lr",
    "seconds",
    "images_per_second",
    "peak_memory_mb",
    "memory_kind",
    "online_top1",
    KNN_TOP1,
    KNN_SECONDS,
)


def peak_memory() -> tuple[float, str]:
    """Peak memory in MiB: allocated GPU memory on CUDA, else the process's peak RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20, "gpu_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_rss"


class EpochMetrics(Callback):
    """Appends one row per epoch to ``metrics.csv``: loss, lr, seconds, images/s, memory.

    Rows of epochs that are trained again after a resume replace the earlier ones. With
    ``announce``, a line per epoch is printed too (for logs without a progress bar).
    """

    def __init__(self, path: Path, global_batch: int, announce: bool = False) -> None:
        self.path = path
        self.global_batch = global_batch
        self.announce = announce
        self._start = 0.0
        self._first_step = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the epoch clock."""
        self._start = time.perf_counter()
        self._first_step = trainer.global_step
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the epoch's row (rank 0)."""
        seconds = time.perf_counter() - self._start
        steps = trainer.global_step - self._first_step
        metrics = trainer.callback_metrics
        memory, memory_kind = peak_memory()
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "loss": _metric(metrics, "train/loss"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "seconds": round(seconds, 3),
            "images_per_second": round(steps * self.global_batch / seconds, 2) if seconds else "",
            "peak_memory_mb": round(memory, 1),
            "memory_kind": memory_kind,
            "online_top1": _metric(metrics, "train_online_cls_top1"),
        }
        if trainer.is_global_zero:
            rows = [r for r in read_metrics(self.path) if int(r["epoch"]) < row["epoch"]]
            write_metrics(self.path, [*rows, row])
            if self.announce:
                print(
                    f"  epoch {row['epoch'] + 1}/{trainer.max_epochs}: loss {row['loss']:.4f}, "
                    f"{row['images_per_second']:.0f} images/s, {seconds:.1f} s",
                    flush=True,
                )


class RunInfo(Callback):
    """Stores what is needed to use a checkpoint on its own (input normalisation, data)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add ``checkpoint["ssl_mae_run"]``."""
        checkpoint[RUN_INFO_KEY] = self.info


class GracefulInterrupt(Callback):
    """On Ctrl-C (SIGINT) or SIGTERM, finish the current step, save a checkpoint, stop.

    The signal only sets a flag; after the running step every rank agrees to stop, the
    checkpoint (weights, optimizer, data position) is written and the run ends as Lightning
    ends on Ctrl-C (exit status 1). A second Ctrl-C stops at once. The same command
    resumes from the saved step exactly.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Install the signal handlers (main thread only)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._request) for sig in self.SIGNALS}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the previous handlers."""
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        """Save and stop if any rank was signalled, after an optimizer step only.

        Gradients summed over accumulated batches are not in a checkpoint, so a stop waits
        for the step that uses them. Ranks agree by a collective, which waits for the
        device: with several processes it runs at the logging interval only, so a stop
        takes effect within that many steps.
        """
        done = getattr(pl_module, "_batches_done", 0)
        if done % trainer.accumulate_grad_batches and done < trainer.num_training_batches:
            return
        if trainer.world_size > 1 and trainer.global_step % trainer.log_every_n_steps:
            return
        stop = trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False)
        if not stop:
            return
        trainer.save_checkpoint(self.checkpoint)
        self._restore()
        epoch = pl_module.current_epoch
        message = (
            f"ssl-mae: interrupted ({self.requested or 'signal on another rank'}) at epoch "
            f"{epoch}, batch {done}: saved {self.checkpoint}; run the same command to resume"
        )
        if trainer.is_global_zero:
            print(message, file=sys.stderr, flush=True)
        raise KeyboardInterrupt(message)


def _metric(metrics: dict[str, Any], name: str) -> float | str:
    value = metrics.get(name)
    return float(value) if value is not None else ""


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` (empty when it does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def knn_curve(metrics_csv: Path) -> list[dict[str, Any]]:
    """The k-NN monitor's values in a ``metrics.csv``: ``[{"epoch", "top1"}]``.

    ``epoch`` counts the epochs trained (1-based, as the monitor's ``every_n_epochs``);
    ``top1`` is a fraction in [0, 1]. Epochs the monitor skipped are left out.
    """
    return [
        {"epoch": int(row["epoch"]) + 1, "top1": float(row[KNN_TOP1])}
        for row in read_metrics(metrics_csv)
        if row.get(KNN_TOP1)
    ]


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` atomically (temporary file, then rename)."""
    with atomic_path(path) as partial, partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
