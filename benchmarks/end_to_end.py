"""End-to-end MAE pretraining throughput, data loading included: ``ssl-mae pretrain`` vs
lightly's own MAE benchmark code path, on the CIFAR-10 JPEGs.

Both sides train the same architecture (by default ``throughput.py``'s ``tiny32``:
ViT-Tiny/4 at 32 px, ``mae_vit_tiny_patch16(img_size=32, patch_size=4)``: 192-d, 12 blocks,
3 heads; decoder 256-d, 4 blocks, 8 heads), mask ratio 0.75,
norm-pix loss, on the same class-balanced subset of ``<data>/train`` with the same batch,
epochs, loader workers, accelerator and precision, each in a fresh process:

- ``ours``: the ``ssl-mae pretrain`` command (``python -m ssl_mae_plugin.cli pretrain``) on
  a recipe written for the run; it records each epoch's images/s in
  ``<output_dir>/<name>/mae/metrics.csv`` (our ``ImageFolderDataset``, seeded views,
  ``MultiViewCollate``, our loader settings, fused AdamW, compile on CUDA by default).
- ``lightly``: a LightningModule written as lightly's ``benchmarks/imagenet/vitb16/mae.py``
  (``MaskedVisionTransformerTIMM`` + ``MaskedVisionTransformerDecoderTIMM``: the wiring of
  ``benchmarks/throughput.py``'s ``LightlyStep``, reused), lightly's ``MAETransform``,
  ``LightlyDataset`` + ``MultiViewCollate``, a ``DataLoader`` as lightly's benchmark
  ``main.py`` builds it (shuffle, ``drop_last=True``, ``persistent_workers=True``, no pinned
  memory), AdamW (betas 0.9/0.95, wd 0.05, lightly's weight-decay parameter split, lr
  1.5e-4 x batch / 256) with lightly's ``CosineWarmupScheduler`` per step, and a
  ``pytorch_lightning.Trainer`` with main.py's callbacks (``LearningRateMonitor``,
  ``EarlyStopping(check_finite=True)``, ``MetricCallback``).

Both are timed the same way: from ``on_train_epoch_start`` to ``on_train_epoch_end`` of
each epoch (images/s = optimizer steps x batch / seconds; process start, model building and
checkpoint saving are outside). The first epoch is warm-up (loader start, compilation);
a run's number is the median images/s of its later epochs. The implementations alternate
(ours, lightly, ours, lightly, ...) for ``--repeats`` rounds. The machine, versions,
settings and every epoch of every run go to ``--out`` (JSON); a Markdown table is printed.

CPU (the measurement command of ``benchmarks/END_TO_END.md``)::

    .venv/bin/python benchmarks/end_to_end.py --device cpu --images 4096 --batch 128 \\
        --epochs 3 --num-workers 2 --depth 6 --repeats 3 --out benchmarks/end_to_end_cpu.json

GPU::

    .venv/bin/python benchmarks/end_to_end.py --device cuda --precision bf16-mixed \\
        --images 50000 --batch 512 --epochs 5 --num-workers 8 --repeats 3 \\
        --out benchmarks/end_to_end_cuda.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from common import (
    ARCH_KEYS,
    ARCHS,
    HERE,
    REPO,
    arch_config,
    cell,
    command_line,
    machine_info,
    markdown_table,
    median_or_none,
    ratio,
    summarize,
    write_json,
)
from lightly.models import utils
from lightly.utils.scheduler import CosineWarmupScheduler
from torch import Tensor, nn
from torch.optim import AdamW

# No ssl_mae_plugin at module level: importing it before torch sets OMP_WAIT_POLICY, which
# the children would inherit (the parent only starts the runs; each child gets the
# environment this command was started with). ``common`` imports torch first and the
# package only inside its functions (the architecture defaults, the machine), so after
# torch; the lightly child imports it after torch too.
IMPLEMENTATIONS = ("ours", "lightly")
# Versions recorded next to ``ssl_mae_plugin.report.machine.LIBRARIES``.
PACKAGES = ("pillow", "numpy", "ssl-mae-plugin")
RUN_NAME = "e2e"
DEFAULT_ARCH = "tiny32"  # the CLI's architecture defaults (``common.ARCHS``)
# The architecture flags: (flag, the ARCH_KEYS field, help); mlp_ratio is the default arch's.
ARCH_FLAGS = (
    ("--image-size", "img_size", None),
    ("--patch-size", "patch_size", None),
    ("--embed-dim", "embed_dim", None),
    ("--depth", "depth", "encoder blocks"),
    ("--num-heads", "num_heads", None),
    ("--decoder-embed-dim", "decoder_embed_dim", None),
    ("--decoder-depth", "decoder_depth", None),
    ("--decoder-num-heads", "decoder_num_heads", None),
)


# ------------------------------------------------------------------------------ settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data",
        nargs="?",
        default="../shared/datasets/cifar10",
        help="ImageFolder root holding train/<class>/*.jpg (default: %(default)s)",
    )
    parser.add_argument("--images", type=int, default=4096, help="class-balanced subset size")
    parser.add_argument("--batch", type=int, default=128, help="batch size (one device)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (>= 2)")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3, help="runs per implementation")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16-mixed"), default="32")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="auto: each side's default (ours compiles its training loss on CUDA, lightly's "
        "benchmark does not compile); on: both compile their loss step; off: neither",
    )
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="ours keeps the training images decoded as uint8 and makes MAE's crop + flip "
        "views on the device (recipe data.in_memory); lightly's side is unchanged",
    )
    default_arch = arch_config(DEFAULT_ARCH)
    for flag, key, help_text in ARCH_FLAGS:
        parser.add_argument(flag, type=int, default=default_arch[key], help=help_text)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--order",
        default="ours,lightly",
        help="implementations in the order of each round (default: %(default)s)",
    )
    parser.add_argument(
        "--same-omp-env",
        action="store_true",
        help="also give lightly's run OMP_WAIT_POLICY=PASSIVE, which importing ssl_mae_plugin "
        "sets for ours (isolates that setting from the code paths)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    parser.add_argument("--workdir", default=None, help="run folders (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep run folders and logs")
    parser.add_argument("--out", default=str(HERE / "end_to_end.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        if args.epochs < 2:
            parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
        if args.images < args.batch:
            parser.error("--images must be at least --batch (incomplete batches are dropped)")
        order = [name.strip() for name in args.order.split(",") if name.strip()]
        unknown = sorted(set(order) - set(IMPLEMENTATIONS))
        if unknown or not order:
            parser.error(f"--order: choose from {','.join(IMPLEMENTATIONS)}, got {args.order!r}")
        args.order = order
    return args


def arch_of(args: argparse.Namespace) -> dict[str, Any]:
    """The shared architecture, with the keys of ``common.ARCH_KEYS``."""
    arch = arch_config(DEFAULT_ARCH)
    for flag, key, _ in ARCH_FLAGS:
        arch[key] = getattr(args, flag.removeprefix("--").replace("-", "_"))
    return arch


def spec_of(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a run needs, the same for both implementations."""
    steps_per_epoch = args.images // args.batch
    return {
        "data": str(Path(args.data).expanduser().resolve()),
        "images": args.images,
        "batch": args.batch,
        "epochs": args.epochs,
        "steps_per_epoch": steps_per_epoch,
        "num_workers": args.num_workers,
        "device": args.device,
        "accelerator": "gpu" if args.device == "cuda" else "cpu",
        "precision": args.precision,
        "compile": args.compile,
        "in_memory": args.in_memory,
        "arch": arch_of(args),
        "mask_ratio": args.mask_ratio,
        "norm_pix_loss": True,
        "blr": 1.5e-4,
        "warmup_fraction": 0.05,  # the paper's 40 of 800 epochs; ours' default
        # Lightning's default is 50; ours caps it at the steps of an epoch. The same for both.
        "log_every_n_steps": max(1, min(50, steps_per_epoch)),
        "seed": args.seed,
    }


# ------------------------------------------------------------------------------ ours


def ours_recipe(spec: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """A recipe for ``ssl-mae pretrain`` with the run's settings."""
    arch = spec["arch"]
    # The backbone's factory, every field but the image size (data) and the MLP ratio (4).
    method: dict[str, Any] = {
        "name": "mae",
        "backbone": ARCHS[DEFAULT_ARCH][0],
        **{key: arch[key] for key in ARCH_KEYS if key not in ("img_size", "mlp_ratio")},
        "mask_ratio": spec["mask_ratio"],
        "norm_pix_loss": True,
    }
    if spec["compile"] != "auto":
        method["compile"] = spec["compile"] == "on"
    return {
        "name": RUN_NAME,
        "seed": spec["seed"],
        "output_dir": str(output_dir),
        "data": {
            "dataset": "imagefolder",
            "root": spec["data"],
            "train_split": "train",
            "val_split": "test",
            "image_size": arch["img_size"],
            "num_workers": spec["num_workers"],
            "max_train_images": spec["images"],
            "max_val_images": spec["batch"],  # only checked to exist by `pretrain`
            "in_memory": spec["in_memory"],
        },
        "methods": [method],
        "pretrain": {
            "epochs": spec["epochs"],
            "batch_size": spec["batch"],
            "blr": spec["blr"],
        },
        "trainer": {
            "accelerator": spec["accelerator"],
            "devices": 1,
            "precision": spec["precision"],
            "progress_bar": False,
            "log_every_n_steps": spec["log_every_n_steps"],
        },
    }


def run_ours(spec: dict[str, Any], run_dir: Path, env: dict[str, str], timeout: float) -> dict:
    """``ssl-mae pretrain`` in a fresh process; the epochs from its ``metrics.csv``."""
    recipe_path = run_dir / "recipe.yaml"
    # JSON is YAML: the file is read by the command's own recipe loader.
    write_json(recipe_path, ours_recipe(spec, run_dir))
    command = [sys.executable, "-m", "ssl_mae_plugin.cli", "pretrain", str(recipe_path)]
    result = run_process(command, run_dir, env, timeout)
    metrics = run_dir / RUN_NAME / "mae" / "metrics.csv"
    if result["status"] == "ok":
        if not metrics.is_file():
            result.update(status="failed", error=f"no {metrics}")
            return result
        with metrics.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        result["epochs"] = [
            {
                "epoch": int(row["epoch"]),
                "steps": int(row["step"]),
                "seconds": float(row["seconds"]),
                "images_per_second": float(row["images_per_second"]),
                "loss": float(row["loss"]) if row["loss"] else None,
                "peak_memory_mb": float(row["peak_memory_mb"]) if row["peak_memory_mb"] else None,
            }
            for row in rows
        ]
    return result


# --------------------------------------------------------------------------- lightly


def run_lightly(
    spec: dict[str, Any], run_dir: Path, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """This script's ``--child`` in a fresh process; it writes ``result.json``."""
    spec_path = run_dir / "spec.json"
    write_json(spec_path, {**spec, "run_dir": str(run_dir)})
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path)]
    result = run_process(command, run_dir, env, timeout)
    result_path = run_dir / "result.json"
    if result["status"] == "ok":
        if not result_path.is_file():
            result.update(status="failed", error=f"no {result_path}")
            return result
        result.update(json.loads(result_path.read_text()))
    return result


def lightly_child(spec_path: str) -> None:
    """Entry point of lightly's run (``--child SPEC``)."""
    spec = json.loads(Path(spec_path).read_text())
    run_dir = Path(spec["run_dir"])

    # torch is imported (module level), so ssl_mae_plugin (used here only to list the same
    # subset of files as ours) leaves OMP_WAIT_POLICY alone, as lightly's benchmark would.
    from lightly.data import LightlyDataset
    from lightly.data.multi_view_collate import MultiViewCollate
    from lightly.transforms import MAETransform
    from lightly.utils.benchmarking import MetricCallback
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    sys.path.insert(0, str(HERE))
    from throughput import LightlyStep  # the lightly wiring, written once

    from ssl_mae_plugin.data import ImageFolderDataset, balanced_subset

    train_dir = Path(spec["data"]) / "train"
    folder = ImageFolderDataset(train_dir)
    chosen = balanced_subset(folder.targets, spec["images"], seed=spec["seed"])
    filenames = [os.path.relpath(folder.samples[i][0], train_dir) for i in chosen]

    pl.seed_everything(spec["seed"], verbose=False)
    if torch.cuda.is_available():  # as ours' `pretrain` (main.py sets it everywhere)
        torch.set_float32_matmul_precision("high")
    arch = spec["arch"]
    # lightly's mae.py: `transform = MAETransform()` (RandomResizedCrop scale 0.2-1 + flip,
    # ImageNet normalisation, the same as ours for an image folder), at our image size.
    transform = MAETransform(input_size=arch["img_size"])
    dataset = LightlyDataset(input_dir=str(train_dir), transform=transform, filenames=filenames)
    if len(dataset) != spec["images"]:
        raise RuntimeError(f"subset has {len(dataset)} images, expected {spec['images']}")
    workers = spec["num_workers"]
    loader_settings = {
        "batch_size": spec["batch"],
        "shuffle": True,
        "num_workers": workers,
        "drop_last": True,
        "persistent_workers": workers > 0,  # main.py: True (needs workers)
        "pin_memory": False,  # main.py does not pin
    }
    loader = DataLoader(dataset, collate_fn=MultiViewCollate(), **loader_settings)

    model = LightlyMAE(
        mae=LightlyStep(arch, spec["mask_ratio"]),
        batch_size_per_device=spec["batch"],
        blr=spec["blr"],
        warmup_fraction=spec["warmup_fraction"],
        compile_step=spec["compile"] == "on",
    )
    timer = EpochTimer(batch_size=spec["batch"])
    trainer = pl.Trainer(
        max_epochs=spec["epochs"],
        accelerator=spec["accelerator"],
        devices=1,
        precision=spec["precision"],
        callbacks=[
            timer,
            LearningRateMonitor(),
            EarlyStopping(monitor="train_loss", patience=int(1e12), check_finite=True),
            MetricCallback(),
        ],
        # main.py logs to TensorBoard; CSV here (as ours), tensorboard need not be installed.
        logger=CSVLogger(save_dir=str(run_dir), name="pretrain"),
        num_sanity_val_steps=0,
        enable_progress_bar=False,  # ours shows none without a terminal either
        enable_model_summary=False,
        log_every_n_steps=spec["log_every_n_steps"],
        default_root_dir=str(run_dir),
    )
    trainer.fit(model=model, train_dataloaders=loader)

    from ssl_mae_plugin import MAE

    ours_params = MAE(**arch, mask_ratio=spec["mask_ratio"], norm_pix_loss=True).parameters()
    result = {
        "epochs": timer.rows,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "ours_trainable_params": sum(p.numel() for p in ours_params if p.requires_grad),
        "loader": loader_settings,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
    }
    write_json(run_dir / "result.json", result)


class LightlyMAE(pl.LightningModule):
    """lightly's ``benchmarks/imagenet/vitb16/mae.py`` at our architecture.

    The encoder/decoder step is ``throughput.LightlyStep`` (``random_token_mask``,
    ``encode``, ``repeat_token`` + ``set_at_index``, ``decode``, ``get_at_index``,
    ``patchify``) with the norm-pix target. No online classifier (ours runs none by
    default); no validation loop (not timed).
    """

    def __init__(
        self,
        mae: nn.Module,
        batch_size_per_device: int,
        blr: float,
        warmup_fraction: float,
        compile_step: bool,
    ) -> None:
        super().__init__()
        self.mae = mae
        self.batch_size_per_device = batch_size_per_device
        self.blr = blr
        self.warmup_fraction = warmup_fraction
        # A bound method, so that the compiled wrapper is not a second submodule.
        self.step_fn = torch.compile(mae.forward) if compile_step else mae.forward

    def training_step(self, batch: tuple[list[Tensor], Tensor, list[str]], batch_idx: int):
        views, targets = batch[0], batch[1]
        images = views[0]  # a list holding the one view
        loss = self.step_fn(images)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, batch_size=len(targets))
        return loss

    def configure_optimizers(self):
        # As mae.py: no weight decay for norm layers and biases.
        params, params_no_weight_decay = utils.get_weight_decay_parameters(
            [self.mae.backbone, self.mae.decoder, self.mae.decoder_embed, self.mae.decoder_pred]
        )
        optimizer = AdamW(
            [
                {"name": "mae", "params": params},
                {
                    "name": "mae_no_weight_decay",
                    "params": params_no_weight_decay,
                    "weight_decay": 0.0,
                },
            ],
            lr=self.blr * self.batch_size_per_device * self.trainer.world_size / 256,
            weight_decay=0.05,
            betas=(0.9, 0.95),
        )
        total_steps = self.trainer.estimated_stepping_batches
        # mae.py warms up for 40 epochs of an 800-epoch run: the same 5 % here (as ours).
        scheduler = {
            "scheduler": CosineWarmupScheduler(
                optimizer=optimizer,
                warmup_epochs=total_steps * self.warmup_fraction,
                max_epochs=total_steps,
            ),
            "interval": "step",
        }
        return [optimizer], [scheduler]


class EpochTimer(pl.Callback):
    """Times epochs as ``ssl_mae_plugin.training.EpochMetrics`` does for ours.

    The same hooks, clock and formula; on CUDA it also waits for the GPU at the epoch end.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.rows: list[dict[str, Any]] = []
        self._start = 0.0
        self._first_step = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.reset_peak_memory_stats()
        self._first_step = trainer.global_step
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            memory = torch.cuda.max_memory_allocated() / 2**20
        else:
            memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        seconds = time.perf_counter() - self._start
        steps = trainer.global_step - self._first_step
        loss = trainer.callback_metrics.get("train_loss")
        self.rows.append(
            {
                "epoch": trainer.current_epoch,
                "steps": trainer.global_step,
                "seconds": round(seconds, 3),
                "images_per_second": round(steps * self.batch_size / seconds, 2),
                "loss": float(loss) if loss is not None else None,
                "peak_memory_mb": round(memory, 1),
            }
        )


# ------------------------------------------------------------------------------ runs


def run_process(
    command: list[str], run_dir: Path, env: dict[str, str], timeout: float
) -> dict[str, Any]:
    """Run a child with its output in ``run_dir/log.txt``; status, wall time, error tail."""
    log_path = run_dir / "log.txt"
    start = time.perf_counter()
    with log_path.open("w") as log:
        # Its own session, so that a timeout ends the child and its loader workers together.
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode: int | None = process.wait(timeout=timeout)
            status = "ok" if returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status, returncode = "timeout", None
        except BaseException:  # Ctrl-C: the child is in its own session, end it too
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    result: dict[str, Any] = {
        "status": status,
        "returncode": returncode,
        "process_seconds": round(time.perf_counter() - start, 2),
        "command": " ".join(command),
    }
    if status != "ok":
        result["error"] = log_path.read_text(errors="replace")[-3000:]
    if status == "timeout":
        result["error"] += f"\ntimed out after {timeout:.0f} s (--timeout)"
    return result


def timed_epochs(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs after the first (warm-up)."""
    return result.get("epochs", [])[1:]


def finish_run(result: dict[str, Any]) -> None:
    """Add the run's summary numbers (median images/s of the epochs after the first)."""
    epochs = result.get("epochs", [])
    timed = timed_epochs(result)
    if result["status"] != "ok" or not timed:
        if result["status"] == "ok":
            result.update(status="failed", error="no timed epochs recorded")
        return
    result["images_per_second"] = statistics.median(e["images_per_second"] for e in timed)
    result["first_epoch_images_per_second"] = epochs[0]["images_per_second"]
    result["final_loss"] = epochs[-1]["loss"]
    memory = [e["peak_memory_mb"] for e in epochs if e.get("peak_memory_mb") is not None]
    result["peak_memory_mb"] = max(memory) if memory else None


def child_env(name: str, base: dict[str, str], same_omp_env: bool) -> dict[str, str]:
    env = dict(base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if name == "lightly" and same_omp_env:
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def effective_omp_wait_policy(name: str, env: dict[str, str]) -> str:
    """OMP_WAIT_POLICY as the child's OpenMP runtime sees it."""
    if "OMP_WAIT_POLICY" in env:
        return env["OMP_WAIT_POLICY"]
    return "PASSIVE (set by importing ssl_mae_plugin)" if name == "ours" else "unset (ACTIVE)"


# ------------------------------------------------------------------------------ report


def summarize_runs(runs: list[dict[str, Any]], order: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name in order:
        ok = [r for r in runs if r["implementation"] == name and r["status"] == "ok"]
        entry: dict[str, Any] = {
            "runs_ok": len(ok),
            "runs_failed": sum(1 for r in runs if r["implementation"] == name) - len(ok),
        }
        if ok:
            rates = [r["images_per_second"] for r in ok]
            stats = summarize(rates)
            epochs = [e["images_per_second"] for r in ok for e in timed_epochs(r)]
            entry.update(
                images_per_second_median=stats["median"],
                images_per_second_min=stats["min"],
                images_per_second_max=stats["max"],
                images_per_second_runs=rates,
                timed_epochs_median=statistics.median(epochs),
                first_epoch_images_per_second_median=statistics.median(
                    r["first_epoch_images_per_second"] for r in ok
                ),
                process_seconds_median=statistics.median(r["process_seconds"] for r in ok),
                peak_memory_mb_max=max(
                    (r["peak_memory_mb"] for r in ok if r["peak_memory_mb"] is not None),
                    default=None,
                ),
                final_loss_median=median_or_none(r["final_loss"] for r in ok),
            )
        summary[name] = entry
    ours, lightly = summary.get("ours", {}), summary.get("lightly", {})
    if "images_per_second_median" in ours and "images_per_second_median" in lightly:
        summary["ours_vs_lightly"] = (
            ours["images_per_second_median"] / lightly["images_per_second_median"]
        )
    return summary


def results_table(summary: dict[str, Any], order: list[str], memory_kind: str) -> str:
    columns = [
        "implementation",
        "runs",
        "images/s (median of runs)",
        "min – max",
        "vs lightly",
        "first epoch images/s",
        "process wall (s)",
        f"peak memory (MB, {memory_kind})",
        "final loss",
    ]
    reference = summary.get("lightly", {}).get("images_per_second_median")
    rows = []
    for name in order:
        entry = summary[name]
        runs = str(entry["runs_ok"])
        if entry["runs_failed"]:
            runs += f" (+{entry['runs_failed']} failed)"
        if "images_per_second_median" not in entry:
            rows.append([name, runs, "failed"])
            continue
        median = entry["images_per_second_median"]
        rows.append(
            [
                name,
                runs,
                f"{median:.1f}",
                f"{entry['images_per_second_min']:.1f} – {entry['images_per_second_max']:.1f}",
                ratio(median, reference),
                f"{entry['first_epoch_images_per_second_median']:.1f}",
                f"{entry['process_seconds_median']:.1f}",
                cell(entry["peak_memory_mb_max"], ".0f"),
                cell(entry["final_loss_median"], ".4f"),
            ]
        )
    return markdown_table(columns, rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        lightly_child(args.child)
        return
    base_env = dict(os.environ)  # before anything could change it
    spec = spec_of(args)
    if not (Path(spec["data"]) / "train").is_dir():
        raise SystemExit(f"no {Path(spec['data']) / 'train'} (pass the CIFAR-10 ImageFolder root)")
    info = machine_info(PACKAGES, driver=args.device == "cuda")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ssl-mae-e2e-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"end-to-end MAE pretraining: {spec['images']} images, batch {spec['batch']}, "
        f"{spec['epochs']} epochs, {spec['num_workers']} workers, {args.device} "
        f"{args.precision}, compile {args.compile}, arch {spec['arch']}"
    )
    print(
        f"machine: {info['cpu']} x{info['cpu_cores']} (affinity {info['affinity_cores']}), "
        f"gpu {info['gpu']}, torch {info['torch']}, lightly {info['libraries']['lightly']}; "
        f"runs in {workdir}",
        flush=True,
    )
    runners = {"ours": run_ours, "lightly": run_lightly}
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        for name in args.order:
            run_dir = workdir / f"{repeat:02d}-{name}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            env = child_env(name, base_env, args.same_omp_env)
            result = runners[name](spec, run_dir, env, args.timeout)
            finish_run(result)
            result.update(
                implementation=name,
                repeat=repeat,
                omp_wait_policy=effective_omp_wait_policy(name, env),
            )
            if not args.keep:
                shutil.rmtree(run_dir, ignore_errors=True)
            runs.append(result)
            if result["status"] == "ok":
                per_epoch = ", ".join(f"{e['images_per_second']:.1f}" for e in result["epochs"])
                print(
                    f"  [{repeat + 1}/{args.repeats}] {name:>7}: "
                    f"{result['images_per_second']:8.1f} images/s after warm-up "
                    f"(epochs: {per_epoch}; process {result['process_seconds']:.0f} s)",
                    flush=True,
                )
            else:
                error = (result.get("error") or "").strip().splitlines()
                print(
                    f"  [{repeat + 1}/{args.repeats}] {name:>7}: {result['status'].upper()}: "
                    f"{error[-1] if error else ''}",
                    flush=True,
                )
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()
    lightly_runs = [r for r in runs if r["implementation"] == "lightly" and r["status"] == "ok"]
    summary = summarize_runs(runs, args.order)
    memory_kind = "GPU allocated" if args.device == "cuda" else "process max RSS"
    result = {
        "benchmark": "MAE pretraining images/s with data loading (CIFAR-10 JPEGs): "
        "ssl-mae pretrain vs lightly's MAE benchmark code path",
        "timing": "per epoch, on_train_epoch_start -> on_train_epoch_end, steps x batch / s; "
        "a run's number is the median over the epochs after the first",
        "machine": info,
        "settings": {**spec, "repeats": args.repeats, "order": args.order},
        "sides": {
            "ours": {
                "command": "python -m ssl_mae_plugin.cli pretrain <recipe>",
                "recipe": ours_recipe(spec, Path("<run dir>")),
                "loader": {
                    "batch_size": spec["batch"],
                    "sampler": "EpochSampler (seeded shuffle, drop last)",
                    "num_workers": spec["num_workers"],
                    "persistent_workers": spec["num_workers"] > 0,
                    "pin_memory": args.device == "cuda",
                },
            },
            "lightly": {
                "module": "LightlyMAE (lightly benchmarks/imagenet/vitb16/mae.py wiring, "
                "throughput.LightlyStep, norm-pix target), LightlyDataset + MAETransform + "
                "MultiViewCollate, AdamW + CosineWarmupScheduler",
                "loader": lightly_runs[0].get("loader") if lightly_runs else None,
                "strategy": "auto (single device; main.py's default is "
                "ddp_find_unused_parameters_true, for several GPUs)",
            },
        },
        "command": command_line(),
        "summary": summary,
        "runs": runs,
    }
    out = write_json(args.out, result)
    print()
    print(results_table(summary, args.order, memory_kind))
    if "ours_vs_lightly" in summary:
        print(f"\nours / lightly (median images/s after warm-up): {summary['ours_vs_lightly']:.3f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
