"""The ``ssl-mae`` command as a user runs it: a real subprocess, real files."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ssl_mae_plugin.cli import main
from tests.conftest import TINY_MAE


def ssl_mae(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ssl_mae_plugin.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def test_methods_lists_the_builtins_with_their_recipe_per_family(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(":")[0] for line in lines if not line.startswith(" ")]
    assert {"mae", "simclr", "byol", "dino", "mocov3", "vicreg"} <= set(names)
    simclr = lines[lines.index(next(x for x in lines if x.startswith("simclr:"))) :][:3]
    assert simclr[1].startswith("  ViTs: AdamW") and "MoCo v3" in simclr[1]
    assert simclr[2].startswith("  ConvNets (ResNets): LARS") and "sqrt(batch)" in simclr[2]
    mae = lines[lines.index(next(x for x in lines if x.startswith("mae:"))) :][:3]
    assert "[MAE paper, App. A.1]" in mae[1] and mae[2] == "  ConvNets (ResNets): not supported"


@pytest.mark.parametrize(
    "command", [[], ["run"], ["pretrain"], ["eval"], ["visualize"], ["shards"]]
)
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "usage: ssl-mae" in capsys.readouterr().out


GPUS = torch.cuda.device_count()


def write_recipe(tmp_path: Path, **changes) -> Path:
    raw = {
        "name": "c",
        "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "mnist5k", "image_size": 32, "num_workers": 0},
        "methods": [dict(TINY_MAE)],
        "pretrain": {"epochs": 1, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "progress_bar": False},
        **changes,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.yaml"], "recipe file not found: missing.yaml"),
        (["run", "{recipe}", "pretrain.epochs=zero"], "pretrain.epochs must be a valid integer"),
        (["run", "{recipe}", "methods.0.mask_ratio=1.5"], r"methods.0.mask_ratio must leave"),
        (["run", "{recipe}", "methods.0.mask_ratio=0"], r"methods.0.mask_ratio must leave"),
        (["run", "{recipe}", "methods.0.mask_ratio=1"], r"methods.0.mask_ratio must leave"),
        (["run", "{recipe}", "methods.0.patch_size=5"], "methods.0.patch_size=5 does not divide"),
        (["run", "{recipe}", "methods.0.name=maee"], "unknown method 'maee'"),
        (["pretrain", "{recipe}", "data.colour=red"], "unknown key 'data.colour'"),
        (["eval", "{recipe}"], "no checkpoint at"),
        (["run", "{recipe}", "data.dataset=imagefolder", "data.root=/nope"], "/nope/train"),
        (["visualize", "missing.ckpt", "a.png", "--out", "o.png"], "checkpoint not found"),
        (
            ["pretrain", "{recipe}", "trainer.accelerator=gpu", f"trainer.devices={GPUS + 1}"],
            r"no CUDA GPU is visible|trainer.devices=\d+ but this machine has",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    recipe = write_recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main([a.replace("{recipe}", str(recipe)) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssl-mae: error:"), lines
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "runs" / "c" / "mae" / "checkpoints").exists()


def test_a_real_process_exits_2_without_a_traceback(tmp_path):
    recipe = write_recipe(tmp_path)
    result = ssl_mae("run", str(recipe), "methods.0.mask_ratio=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ssl-mae: error: methods.0.mask_ratio must leave at least one of the 16 patches visible "
        "and remove at least one (1 <= int(16 * (1 - mask_ratio)) < 16), got 2.0"
    ]


def test_an_error_after_work_started_is_a_run_failure_not_bad_input(tmp_path, monkeypatch, capsys):
    """A missing file found mid-run (here: a checkpoint gone during evaluation) is exit 1."""
    import ssl_mae_plugin.runner

    def lose_a_file(*args, **kwargs):
        raise FileNotFoundError(f"checkpoint not found: {tmp_path / 'gone.ckpt'}")

    monkeypatch.setattr(ssl_mae_plugin.runner, "run_recipe", lose_a_file)
    assert main(["run", str(write_recipe(tmp_path))]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"ssl-mae: failed: FileNotFoundError: checkpoint not found: {tmp_path}/gone.ckpt"
