"""Pretraining through a real Lightning Trainer: loss, metrics, resume, DDP."""

from pathlib import Path

import pytest
import torch
import yaml

from ssl_mae_plugin.cli import main
from ssl_mae_plugin.pretrain import check_checkpoint
from ssl_mae_plugin.pretrain.callbacks import RUN_INFO_KEY, read_metrics
from ssl_mae_plugin.pretrain.checkpoints import data_position, read_checkpoint
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from tests.conftest import (
    final_weights,
    kill_after_a_checkpoint,
    pretrain_method,
    run_cli,
    tiny_recipe,
)


def test_mae_pretrains_on_real_images_with_falling_loss(cifar_folder, tmp_path):
    recipe = tiny_recipe(cifar_folder, tmp_path)
    result = pretrain_method(recipe)
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
    assert pretrain_method(recipe).final_loss == result.final_loss
    assert Path(result.checkpoint).stat().st_mtime == mtime


def test_one_epoch_run_with_long_warmup_works(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 1, "warmup_epochs": 40})
    raw["methods"][0].pop("warmup_epochs")
    with pytest.warns(UserWarning, match="clipped to the run length"):
        result = pretrain_method(raw)
    assert result.epochs == 1


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(cifar_folder, tmp_path):
    """SIGKILL mid-epoch and the same command: bit-equal weights (accumulating, as hardest)."""
    raw = tiny_recipe(
        cifar_folder,
        tmp_path / "x",
        pretrain={
            "epochs": 3,
            "batch_size": 8,
            "accumulate_grad_batches": 2,
            "checkpoint_every_n_steps": 3,
        },
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    uninterrupted, interrupted = tmp_path / "a", tmp_path / "b"
    run_cli("pretrain", str(recipe_path), f"output_dir={uninterrupted}")

    checkpoint = kill_after_a_checkpoint(recipe_path, interrupted)
    epoch, batches_done = data_position(checkpoint)
    assert (epoch, batches_done) < (3, 0), "the run finished before it could be killed"
    assert batches_done > 0 or epoch > 0
    assert batches_done % 2 == 0  # saved after an optimizer step: 3 steps are 6 batches

    run_cli("pretrain", str(recipe_path), f"output_dir={interrupted}")  # the same command
    reference, resumed = final_weights(uninterrupted), final_weights(interrupted)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key
    rows = read_metrics(interrupted / "t" / "mae" / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path / "x", pretrain={"epochs": 2, "batch_size": 16})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    run_cli("pretrain", str(recipe_path), f"output_dir={tmp_path / 'one'}")
    run_cli(
        "pretrain",
        str(recipe_path),
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


def test_a_checkpoint_trained_otherwise_is_refused_before_any_work(cifar_folder, tmp_path, capsys):
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 1})
    pretrain_method(raw)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    checkpoint = tmp_path / "t" / "mae" / "checkpoints" / "last.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    for overrides, change in [
        (["methods.0.mask_ratio=0.5"], "options.mask_ratio 0.75 -> 0.5"),
        (["pretrain.epochs=2"], "epochs 1 -> 2"),
        (["trainer.precision=bf16-mixed"], "precision '32' -> 'bf16-mixed'"),
    ]:
        assert main(["run", str(path), *overrides]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"methods.0 (mae): {checkpoint} was trained with other settings" in line
        assert change in line and "another label" in line and "pretrain.retrain=true" in line
    assert checkpoint.stat().st_mtime_ns == stamp  # nothing touched


def test_retrain_moves_the_stale_run_aside_and_trains_anew(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 1})
    first = pretrain_method(raw)
    raw["methods"][0]["mask_ratio"] = 0.5
    raw["pretrain"]["retrain"] = True
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path)]) == 0
    (stale,) = (tmp_path / "t").glob("mae.stale-*")
    assert (stale / "checkpoints" / "last.ckpt").is_file()  # the old run is kept
    settings = read_checkpoint(first.checkpoint)[RUN_INFO_KEY]["settings"]
    assert settings["options"]["mask_ratio"] == 0.5  # the new run
    raw["pretrain"]["retrain"] = False
    recipe = recipe_from_dict(raw)
    check_checkpoint(recipe, 0)  # matches now
