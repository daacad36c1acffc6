"""Faults during a run: interrupts, NaNs, corrupt images, crashes, a failing rank."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ssl_mae_plugin.cli import main
from ssl_mae_plugin.methods.finite import NonFiniteLossError
from ssl_mae_plugin.pretrain.checkpoints import data_position
from ssl_mae_plugin.pretrain.sampling import EpochSampler
from tests.conftest import (
    final_weights,
    make_image_folder,
    pretrain_method,
    run_cli,
    tiny_recipe,
    wait_for,
)

CORRUPT_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40  # a truncated JPEG


@pytest.fixture
def own_folder(tmp_path):
    """A private copy of 16 train / 5 test CIFAR-10 images per class (files, not links)."""
    folder = make_image_folder(tmp_path / "links", {"train": 16, "test": 5})
    copy = tmp_path / "data"
    shutil.copytree(folder, copy, symlinks=False)
    return copy


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes_exactly(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path / "x", pretrain={"epochs": 6, "batch_size": 16})
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    run_cli("pretrain", str(recipe_path), f"output_dir={tmp_path / 'a'}")

    process = run_cli("pretrain", str(recipe_path), f"output_dir={tmp_path / 'b'}", wait=False)
    metrics = tmp_path / "b" / "t" / "mae" / "metrics.csv"
    wait_for(metrics, process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output
    assert "interrupted (SIGINT) at epoch" in output and "run the same command" in output
    checkpoint = tmp_path / "b" / "t" / "mae" / "checkpoints" / "last.ckpt"
    assert (1, 0) <= data_position(checkpoint) < (6, 0)

    run_cli("pretrain", str(recipe_path), f"output_dir={tmp_path / 'b'}")
    reference, resumed = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    cifar_folder, tmp_path
):
    raw = tiny_recipe(
        cifar_folder,
        tmp_path,
        pretrain={"epochs": 3, "batch_size": 16, "checkpoint_every_n_steps": 1},
    )
    raw["methods"][0]["blr"] = 1e5
    expected = r"non-finite (loss|gradients) at step"
    with pytest.raises(NonFiniteLossError, match=expected) as error:
        pretrain_method(raw)
    step = int(re.search(r"at step (\d+) \(epoch 0, batch \1\)", str(error.value)).group(1))
    checkpoint = tmp_path / "t" / "mae" / "checkpoints" / "last.ckpt"
    assert step >= 1 and data_position(checkpoint) == (0, step)  # saved after the last good step
    weights = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert all(torch.isfinite(value).all() for value in weights.values())


def write_recipe(tmp_path: Path, root: Path, **data) -> Path:
    raw = tiny_recipe(root, tmp_path / "runs", pretrain={"epochs": 1, "batch_size": 32})
    raw["data"].update(**data)
    raw["eval"] = {"knn": {"k": 5}, "linear": {"epochs": 2, "warmup_epochs": 1, "batch_size": 32}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_corrupt_images_are_skipped_counted_and_named(own_folder, tmp_path):
    bad = [own_folder / "train" / "cat" / "broken.jpg", own_folder / "test" / "dog" / "zz.jpg"]
    for path in bad:
        path.write_bytes(CORRUPT_JPEG)
    assert main(["run", str(write_recipe(tmp_path, own_folder))]) == 0
    report = json.loads((tmp_path / "runs" / "t" / "report.json").read_text())
    assert sorted(report["skipped_images"]) == sorted(str(path) for path in bad)
    assert any("2 unreadable image(s) skipped" in note for note in report["notes"])
    assert "broken.jpg" in (tmp_path / "runs" / "t" / "report.md").read_text()


def test_on_bad_image_error_fails_naming_the_file(own_folder, tmp_path, capsys):
    (own_folder / "train" / "cat" / "broken.jpg").write_bytes(CORRUPT_JPEG)
    recipe = write_recipe(tmp_path, own_folder, on_bad_image="error")
    assert main(["pretrain", str(recipe)]) == 1
    assert "broken.jpg" in capsys.readouterr().err.strip().splitlines()[-1]


def test_crash_during_evaluation_keeps_pretraining_and_the_rerun_only_evaluates(
    own_folder, tmp_path, capsys
):
    broken = own_folder / "test" / "dog" / "zz.jpg"
    broken.write_bytes(CORRUPT_JPEG)  # read only by the evaluation
    recipe = write_recipe(tmp_path, own_folder, on_bad_image="error")
    assert main(["run", str(recipe)]) == 1
    assert "zz.jpg" in capsys.readouterr().err
    checkpoint = tmp_path / "runs" / "t" / "mae" / "checkpoints" / "last.ckpt"
    stamp = checkpoint.stat().st_mtime_ns
    broken.unlink()
    assert main(["run", str(recipe)]) == 0
    assert checkpoint.stat().st_mtime_ns == stamp
    assert (tmp_path / "runs" / "t" / "report.json").is_file()


def test_leftover_partial_files_do_not_break_the_next_start(cifar_folder, tmp_path):
    recipe = write_recipe(tmp_path, cifar_folder)
    assert main(["run", str(recipe)]) == 0
    run_dir = tmp_path / "runs" / "t"
    # what a kill in the middle of writing would leave behind: only temporary files
    (run_dir / "report.json.partial").write_text('{"rows": [')
    (run_dir / "mae" / "metrics.csv.partial").write_text("epoch,st")
    assert main(["run", str(recipe)]) == 0
    assert json.loads((run_dir / "report.json").read_text())["rows"]


def test_batch_larger_than_the_dataset_is_bad_input(cifar_folder, tmp_path, capsys):
    recipe = write_recipe(tmp_path, cifar_folder)
    assert main(["pretrain", str(recipe), "pretrain.batch_size=512"]) == 2
    error = capsys.readouterr().err
    assert "pretrain.batch_size=512 is larger than the 160 training images" in error


def test_empty_class_folder_is_bad_input(own_folder, tmp_path, capsys):
    (own_folder / "train" / "empty").mkdir()
    assert main(["pretrain", str(write_recipe(tmp_path, own_folder))]) == 2
    assert "class folder has no images" in capsys.readouterr().err


def test_one_failing_rank_ends_the_whole_run_with_its_error(own_folder, tmp_path):
    recipe_path = write_recipe(tmp_path, own_folder, on_bad_image="error")
    dataset_files = sorted((own_folder / "train").rglob("*.jpg"))
    # the second batch of rank 1 (of 2, 16 images per rank and step) reads this file
    index = list(EpochSampler(len(dataset_files), 16, seed=0, num_replicas=2, rank=1))[16][0]
    dataset_files[index].write_bytes(CORRUPT_JPEG)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "ssl_mae_plugin.cli", "pretrain", str(recipe_path)]
    command += ["trainer.devices=2", "trainer.strategy=ddp"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode != 0
    assert dataset_files[index].name in result.stdout + result.stderr
