"""Pretraining through a real Lightning Trainer: loss, metrics, resume, DDP."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ssl_mae_plugin.callbacks import read_metrics
from ssl_mae_plugin.recipes import recipe_from_dict
from ssl_mae_plugin.training import data_position, pretrain

TINY_MAE = {
    "name": "mae",
    "backbone": "vit_tiny",
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 2,
    "blr": 5e-3,
    "warmup_epochs": 0,
}


def tiny_recipe(root: Path, output: Path, **sections) -> dict:
    recipe = {
        "name": "t",
        "output_dir": str(output),
        "data": {
            "dataset": "imagefolder",
            "root": str(root),
            "val_split": "test",
            "image_size": 32,
            "num_workers": 0,
        },
        "methods": [dict(TINY_MAE)],
        "pretrain": {"epochs": 3, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "progress_bar": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe


def test_mae_pretrains_on_real_images_with_falling_loss(cifar_folder, tmp_path):
    recipe = recipe_from_dict(tiny_recipe(cifar_folder, tmp_path))
    result = pretrain(recipe, 0)
    rows = read_metrics(tmp_path / "t" / "mae" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    losses = [float(r["loss"]) for r in rows]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert result.epochs == 3 and result.final_loss == pytest.approx(losses[-1])
    assert result.images_per_second > 0 and result.peak_memory_mb > 0
    assert Path(result.checkpoint).is_file()
    assert data_position(Path(result.checkpoint)) == (3, 0)
    # a finished run is not trained again
    mtime = Path(result.checkpoint).stat().st_mtime
    assert pretrain(recipe, 0).final_loss == result.final_loss
    assert Path(result.checkpoint).stat().st_mtime == mtime


def test_one_epoch_run_with_long_warmup_works(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 1, "warmup_epochs": 40})
    raw["methods"][0].pop("warmup_epochs")
    with pytest.warns(UserWarning, match="clipped to the run length"):
        result = pretrain(recipe_from_dict(raw), 0)
    assert result.epochs == 1


def run_cli(recipe_path: Path, *overrides: str, wait: bool = True) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "ssl_mae_plugin.cli", "pretrain", str(recipe_path), *overrides]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if wait:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    return process


def final_weights(output: Path) -> dict[str, torch.Tensor]:
    checkpoint = output / "t" / "mae" / "checkpoints" / "last.ckpt"
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(cifar_folder, tmp_path):
    raw = tiny_recipe(
        cifar_folder,
        tmp_path / "x",
        pretrain={"epochs": 4, "batch_size": 16, "checkpoint_every_n_steps": 3},
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    run_cli(recipe_path, f"output_dir={uninterrupted}")

    process = run_cli(recipe_path, f"output_dir={interrupted}", wait=False)
    checkpoint = interrupted / "t" / "mae" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    epoch, batches_done = data_position(checkpoint)
    assert (epoch, batches_done) < (4, 0), "the run finished before it could be killed"
    assert batches_done > 0 or epoch > 0

    run_cli(recipe_path, f"output_dir={interrupted}")  # the same command again
    reference, resumed = final_weights(uninterrupted), final_weights(interrupted)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    rows = read_metrics(interrupted / "t" / "mae" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path / "x", pretrain={"epochs": 2, "batch_size": 16})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    run_cli(recipe_path, f"output_dir={tmp_path / 'one'}")
    run_cli(
        recipe_path,
        f"output_dir={tmp_path / 'two'}",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    one, two = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=2e-4, rtol=1e-3, msg=key)
    losses = [
        [float(r["loss"]) for r in read_metrics(tmp_path / run / "t" / "mae" / "metrics.csv")]
        for run in ("one", "two")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
