"""The k-NN monitor: a curve in metrics.csv during pretraining that changes nothing else."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.multiprocessing as mp
from lightning_fabric.plugins.environments.lightning import find_free_network_port
from pytorch_lightning.callbacks import Callback
from torch import nn
from torch.utils.data import TensorDataset

from ssl_mae_plugin.evaluation.protocols import prepare_data
from ssl_mae_plugin.pretrain import (
    KNNMonitor,
    check_checkpoint,
    knn_curve,
    pretrain,
    training_settings,
)
from ssl_mae_plugin.pretrain.callbacks import KNN_SECONDS, KNN_TOP1, read_metrics
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import Recipe, RecipeError
from ssl_mae_plugin.report.figures import plot_knn_curves
from tests.conftest import TINY_MAE, TINY_VIT, final_weights, minimal_recipe, tiny_recipe

# A ResNet with BatchNorm in the backbone (eval mode must keep its running statistics) and a
# ViT with drop path (the random generator must be left as it was).
TINY_SIMCLR_RESNET = {
    "name": "simclr",
    "backbone": "test_resnet",
    "hidden_dim": 64,
    "output_dim": 32,
}
TINY_DINO = {"name": "dino", **TINY_VIT, "depth": 2, "hidden_dim": 64, "bottleneck_dim": 32,
             "output_dim": 256, "n_local_views": 2, "drop_path_rate": 0.1}  # fmt: skip

SMALL = {"max_train_images": 64, "max_val_images": 20}  # 2 steps an epoch


def monitored_recipe(root: Path, output: Path, monitor: dict | None, **sections: Any) -> Recipe:
    """The tiny recipe with ``pretrain.knn_monitor=monitor`` and a k the small bank allows."""
    pretrain_section = {"knn_monitor": monitor, **sections.pop("pretrain", {})}
    raw = tiny_recipe(root, output, pretrain=pretrain_section, eval={"knn": {"k": 10}}, **sections)
    return recipe_from_dict(raw)


def pretrain_with_val(recipe: Recipe, callbacks: tuple[Callback, ...] = ()) -> Path:
    """Pretrain method 0 with the validation split at hand; its folder."""
    data = prepare_data(recipe)
    pretrain(recipe, 0, data.train, callbacks, val_dataset=data.val)
    return recipe.method_dir(0)


def costly(row: dict[str, str]) -> bool:
    """Whether the monitor took more than 10 % of the epoch of a metrics.csv row."""
    return float(row[KNN_SECONDS]) > 0.1 * float(row["seconds"])


def cost_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The monitor's warnings about its cost."""
    return [r.getMessage() for r in caplog.records if "pretrain.knn_monitor took" in r.message]


class StopAfter(Callback):
    """Stop the run after ``epochs`` epochs, as a kill after that epoch's checkpoint would."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = trainer.current_epoch + 1 >= self.epochs


def test_the_curve_lands_in_the_rows_of_the_measured_epochs_across_a_resume(
    cifar_folder, tmp_path, caplog
):
    monitor = {"every_n_epochs": 2, "bank_images": 40}  # queries: all 20 of the split
    recipe = monitored_recipe(cifar_folder, tmp_path, monitor, data=SMALL)
    with caplog.at_level(logging.WARNING, logger="ssl_mae_plugin.pretrain.knn_monitor"):
        folder = pretrain_with_val(recipe, (StopAfter(2),))
        assert len(read_metrics(folder / "metrics.csv")) == 2
        pretrain_with_val(recipe)  # resumes: the third epoch
    rows = read_metrics(folder / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    measured = [row for row in rows if row[KNN_TOP1]]
    assert [int(row["epoch"]) + 1 for row in measured] == [2, 3]  # every 2nd and the last
    assert not rows[0][KNN_SECONDS]
    for row in measured:
        assert 0.0 <= float(row[KNN_TOP1]) <= 1.0 and float(row[KNN_SECONDS]) > 0
        assert float(row["loss"]) > 0  # EpochMetrics's row, completed
    curve = knn_curve(folder / "metrics.csv")
    assert curve == [{"epoch": int(r["epoch"]) + 1, "top1": float(r[KNN_TOP1])} for r in measured]
    # each of the two calls measured once: a warning for each that cost more than 10 %
    warnings = cost_warnings(caplog)
    assert len(warnings) == sum(costly(row) for row in measured)
    assert all("bank_images (40) or query_images (20)" in w for w in warnings)

    other = [{"epoch": p["epoch"], "top1": p["top1"] / 2} for p in curve]
    png = plot_knn_curves({"mae": curve, "simclr": other, "empty": []}, tmp_path / "knn.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert plot_knn_curves({"mae": []}, tmp_path / "none.png") is None


@pytest.mark.parametrize(
    "entry", [TINY_MAE, TINY_SIMCLR_RESNET, TINY_DINO], ids=lambda e: e["name"]
)
def test_monitoring_every_epoch_leaves_the_trained_weights_exactly_equal(
    cifar_folder, tmp_path, caplog, entry
):
    runs = {
        name: monitored_recipe(
            cifar_folder,
            tmp_path / name,
            monitor,
            methods=[dict(entry)],
            pretrain={"epochs": 2},
            data=SMALL,
        )
        for name, monitor in (("plain", None), ("monitored", {"every_n_epochs": 1}))
    }
    with caplog.at_level(logging.WARNING, logger="ssl_mae_plugin.pretrain.knn_monitor"):
        for recipe in runs.values():
            pretrain_with_val(recipe)
    rows = read_metrics(runs["monitored"].method_dir(0) / "metrics.csv")
    assert [row[KNN_TOP1] != "" for row in rows] == [True, True]
    assert len(cost_warnings(caplog)) == any(costly(row) for row in rows)  # once a run
    plain, monitored = (final_weights(tmp_path / name, entry["name"]) for name in runs)
    assert plain.keys() == monitored.keys()
    for key in plain:  # buffers too (BatchNorm running statistics)
        assert torch.equal(plain[key], monitored[key]), key
    # switching it on later keeps the plain run's checkpoint current
    assert training_settings(runs["plain"], 0) == training_settings(runs["monitored"], 0)
    check_checkpoint(
        runs["monitored"].model_copy(update={"output_dir": str(tmp_path / "plain")}), 0
    )


def test_the_recipe_key_is_typed_and_checked():
    recipe = recipe_from_dict(minimal_recipe(pretrain={"knn_monitor": {"bank_images": 100}}))
    assert recipe.pretrain.knn_monitor.model_dump() == {
        "every_n_epochs": 5,
        "bank_images": 100,
        "query_images": 1000,
    }
    assert recipe_from_dict(minimal_recipe()).pretrain.knn_monitor is None
    for monitor, message in [
        ({"every_n_epochs": 0}, "pretrain.knn_monitor.every_n_epochs must be greater than 0"),
        ({"every_n_epochs": 1.5}, "pretrain.knn_monitor.every_n_epochs must be a valid integer"),
        ({"query_images": -1}, "pretrain.knn_monitor.query_images must be greater than 0"),
        ({"k": 5}, "unknown key 'pretrain.knn_monitor.k'; valid keys here: every_n_epochs"),
    ]:
        with pytest.raises(RecipeError, match=message):
            recipe_from_dict(minimal_recipe(pretrain={"knn_monitor": monitor}))


def test_the_monitor_uses_eval_knn_and_fixed_subsets_of_both_splits(cifar_folder, tmp_path):
    monitor = {"bank_images": 40, "query_images": 1000}
    recipe = monitored_recipe(cifar_folder, tmp_path, monitor, seeds=[0, 1])
    data = prepare_data(recipe)
    built = KNNMonitor.from_recipe(recipe, 0, data.train, data.val)
    assert (built.k, built.temperature, built.every_n_epochs) == (10, 0.1, 5)
    assert len(built.query) == len(data.val) == 50  # capped at the split
    assert sorted(Counter(built.bank.dataset.targets).values()) == [4] * 10  # class-balanced
    again = KNNMonitor.from_recipe(recipe.with_seed(1), 0, data.train, data.val)
    assert again.bank.dataset.indices == built.bank.dataset.indices  # the first seed's subset
    image, label = built.bank[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    no_knn = recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"knn": None})})
    assert KNNMonitor.from_recipe(no_knn, 0, data.train, data.val).k == 200  # eval.knn defaults


def test_pretraining_with_the_monitor_needs_the_validation_split(cifar_folder, tmp_path):
    recipe = monitored_recipe(cifar_folder, tmp_path, {"every_n_epochs": 1})
    with pytest.raises(ValueError, match="knn_monitor needs the validation split"):
        pretrain(recipe, 0, prepare_data(recipe).train)


class DropoutFeatures(pl.LightningModule):
    """``forward_features`` with dropout: random, unless in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5))

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def _monitor(tmp_path: Path) -> KNNMonitor:
    generator = torch.Generator().manual_seed(0)
    bank = TensorDataset(torch.randn(9, 6, generator=generator), torch.arange(9) % 3)
    query = TensorDataset(torch.randn(7, 6, generator=generator), torch.arange(7) % 3)
    return KNNMonitor(
        bank,
        query,
        tmp_path / "metrics.csv",
        num_classes=3,
        every_n_epochs=1,
        k=3,
        temperature=0.1,
        batch_size=2,
    )


def _ddp_worker(rank: int, world: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # forked like a DataLoader worker: keep OpenMP out of it
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        module = DropoutFeatures().train()
        state = torch.random.get_rng_state()
        top1 = _monitor(Path(folder)).measure(module)[KNN_TOP1]
        untouched = torch.equal(state, torch.random.get_rng_state()) and module.net[1].training
        torch.save((top1, untouched), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_ddp_every_rank_gets_the_single_process_value(tmp_path):
    torch.manual_seed(0)
    expected = _monitor(tmp_path).measure(DropoutFeatures())[KNN_TOP1]
    # 9 bank and 7 query items on 2 ranks: each sampler pads one duplicate
    args = (2, find_free_network_port(), str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert results == [(expected, True), (expected, True)]
