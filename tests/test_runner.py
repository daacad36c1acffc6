"""``ssl-mae run`` end to end on real CIFAR-10 JPEGs: report contents, figures, reuse."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.runner import run_recipe
from tests.conftest import TINY_MAE, TINY_SIMCLR, pretrain_method


def make_recipe(root, output, **eval_changes):
    return recipe_from_dict(
        {
            "name": "cmp",
            "output_dir": str(output),
            "data": {
                "dataset": "imagefolder",
                "root": str(root),
                "val_split": "test",
                "image_size": 32,
                "num_workers": 0,
            },
            "methods": [dict(TINY_MAE), dict(TINY_SIMCLR)],
            "pretrain": {"epochs": 2, "batch_size": 32},
            "trainer": {"accelerator": "cpu", "progress_bar": False},
            "eval": {
                "knn": {"k": 10},
                "linear": {"epochs": 5, "warmup_epochs": 1, "batch_size": 64},
                "finetune": {
                    "epochs": 1,
                    "warmup_epochs": 0,
                    "batch_size": 32,
                    "mixup": 0.0,
                    "cutmix": 0.0,
                },
                "batch_size": 64,
                **eval_changes,
            },
        }
    )


@pytest.fixture(scope="module")
def finished_run(cifar_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs")
    recipe = make_recipe(cifar_folder, output)
    report = run_recipe(recipe, log=lambda _: None)
    return recipe, report


def test_report_has_a_row_per_method_its_own_control_and_the_pixels(finished_run):
    recipe, report = finished_run
    saved = json.loads((recipe.run_dir / "report.json").read_text())
    assert saved["rows"] == report["rows"]
    assert [(row["label"], row["method"], row["control"]) for row in saved["rows"]] == [
        ("mae", "mae", "mae (untrained)"),
        ("simclr", "simclr", "simclr (untrained)"),
        ("mae (untrained)", "random_init", None),
        ("simclr (untrained)", "random_init", None),
        ("pixels", "pixels", None),
    ]
    for row in saved["rows"]:
        for part in ("knn", "linear"):
            assert 0.0 <= row[part]["top1"] <= row[part]["top5"] <= 1.0
    for row in saved["rows"][:4]:
        assert row["backbone"] == "vit_tiny/8 d1 w32 h2" and row["params"] > 0
    assert saved["rows"][4]["backbone"] == "raw pixels (3x32x32)"
    assert saved["rows"][4]["finetune"] is None and saved["rows"][2]["controls"] == ["mae"]
    mae, _, random_init = saved["rows"][:3]
    assert mae["pretrain"]["epochs"] == 2 and mae["pretrain"]["images_per_second"] > 0
    assert mae["pretrain"]["final_loss"] > 0 and mae["pretrain"]["peak_memory_mb"] > 0
    assert random_init["pretrain"] is None
    assert 0.0 <= mae["finetune"]["top1"] <= 1.0 and mae["linear"]["mode"] == "cached"
    assert saved["dataset"] == {
        "name": "imagefolder",
        "root": str(recipe.data.root),
        "train_images": 160,
        "val_images": 50,
        "classes": 10,
        "image_size": 32,
    }
    assert saved["machine"]["cpu_cores"] >= 1 and saved["recipe"]["name"] == "cmp"


def test_markdown_report_and_figures(finished_run):
    recipe, report = finished_run
    text = (recipe.run_dir / "report.md").read_text()
    assert "| row | backbone | control |" in text and "| mae (untrained) |" in text
    assert "## Paired differences" in text and "## Pretraining" in text
    assert "k-NN: k=10" in text and "```yaml" in text
    for name in report["figures"].values():
        path = recipe.run_dir / "figures" / name
        assert f"figures/{name}" in text
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300
    assert set(report["figures"].values()) == {
        "loss_curves.png",
        "accuracy.png",
        "mae_reconstructions.png",
    }


def test_rerun_reuses_checkpoints_and_evaluations(finished_run):
    recipe, report = finished_run
    checkpoint = recipe.method_dir(0) / "checkpoints" / "last.ckpt"
    evaluations = recipe.method_dir(0) / "eval.json"
    stamps = checkpoint.stat().st_mtime_ns, evaluations.stat().st_mtime_ns
    again = run_recipe(recipe, log=lambda _: None)
    assert (checkpoint.stat().st_mtime_ns, evaluations.stat().st_mtime_ns) == stamps
    assert again["rows"] == report["rows"]


def test_a_changed_protocol_redoes_only_that_part(finished_run, cifar_folder):
    recipe, report = finished_run
    changed = make_recipe(
        cifar_folder, recipe.output_dir, linear={"epochs": 3, "warmup_epochs": 1, "batch_size": 64}
    )
    rows = run_recipe(changed, log=lambda _: None)["rows"]
    assert rows[0]["linear"]["epochs"] == 3 and report["rows"][0]["linear"]["epochs"] == 5
    assert rows[0]["knn"] == report["rows"][0]["knn"]
    assert rows[0]["finetune"] == report["rows"][0]["finetune"]


def test_half_finished_run_trains_only_what_is_missing(cifar_folder, tmp_path):
    recipe = make_recipe(cifar_folder, tmp_path, finetune=None)
    pretrain_method(recipe, 0)  # the first method was done before the run stopped
    first = recipe.method_dir(0) / "checkpoints" / "last.ckpt"
    stamp = first.stat().st_mtime_ns
    report = run_recipe(recipe, log=lambda _: None)
    assert first.stat().st_mtime_ns == stamp
    assert (recipe.method_dir(1) / "checkpoints" / "last.ckpt").is_file()
    assert [row["label"] for row in report["rows"]][:2] == ["mae", "simclr"]


def test_two_process_ddp_run_writes_one_report(cifar_folder, tmp_path):
    recipe = {
        "name": "ddp",
        "output_dir": str(tmp_path / "runs"),
        "data": {"dataset": "imagefolder", "root": str(cifar_folder), "image_size": 32},
        "methods": [dict(TINY_MAE)],
        "pretrain": {"epochs": 1, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "progress_bar": False},
        "eval": {
            "knn": {"k": 10},
            "linear": {"epochs": 2, "warmup_epochs": 1, "batch_size": 64},
            "batch_size": 64,
        },
    }
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "ssl_mae_plugin.cli", "run", str(path), "data.num_workers=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("pretraining mae") == 1  # rank 1 runs the command silently
    report = json.loads((tmp_path / "runs" / "ddp" / "report.json").read_text())
    assert [row["method"] for row in report["rows"]] == ["mae", "random_init", "pixels"]
    assert report["dataset"]["val_images"] == 50  # imagefolder root with test/ only


def test_every_accuracy_carries_an_interval_and_rows_are_paired(finished_run):
    _, report = finished_run
    for row in report["rows"]:
        for part in ("knn", "linear"):
            result = row[part]
            assert "predictions" not in result
            for key in ("top1", "top5"):
                lo, hi = result["ci95"][key]
                assert lo <= result[key] <= hi
            assert (
                result["ci95_kind"] == "Wilson over 50 validation images (test-set sampling only)"
            )
    pairs = {(p["row"], p["versus"], p["part"]) for p in report["paired"]}
    assert ("mae", "mae (untrained)", "linear") in pairs and ("simclr", "mae", "knn") in pairs
    assert ("pixels", "mae", "knn") in pairs
    for entry in report["paired"]:
        assert entry["ci95"][0] <= entry["difference"] <= entry["ci95"][1]
        assert entry["excludes_zero"] == (entry["ci95"][0] > 0 or entry["ci95"][1] < 0)


def test_two_seeds_give_means_per_seed_values_and_t_intervals(cifar_folder, tmp_path):
    recipe = make_recipe(cifar_folder, tmp_path, finetune=None, linear=None)
    recipe = recipe_from_dict({**recipe.model_dump(), "seeds": [0, 1], "methods": [dict(TINY_MAE)]})
    report = run_recipe(recipe, log=lambda _: None)
    assert report["seeds"] == [0, 1] and recipe.seed == 0
    assert (recipe.run_dir / "mae" / "seed-1" / "checkpoints" / "last.ckpt").is_file()
    mae, control = report["rows"][:2]
    per_seed = mae["knn"]["per_seed"]["top1"]
    assert len(per_seed) == 2 and mae["knn"]["top1"] == pytest.approx(sum(per_seed) / 2)
    assert mae["knn"]["ci95_kind"] == "Student t over 2 seeds" and mae["seeds"] == 2
    assert len(mae["pretrain"]["final_loss_per_seed"]) == 2
    assert control["method"] == "random_init" and len(control["knn"]["per_seed"]["top1"]) == 2
    (paired,) = [p for p in report["paired"] if p["versus"] == "mae (untrained)"]
    assert paired["ci95_kind"] == "Student t over 2 paired seeds" and len(paired["per_seed"]) == 2
    assert "## Per seed" in (recipe.run_dir / "report.md").read_text()


def test_feature_protocol_and_layer_sweep_from_a_recipe(finished_run, cifar_folder):
    recipe, report = finished_run
    protocol = make_recipe(
        cifar_folder,
        recipe.output_dir,
        features={"pool": "cls+mean", "blocks": 1},
        layer_sweep=True,
        finetune=None,
    )
    swept = run_recipe(protocol, do_pretrain=False, log=lambda _: None)
    rows = {row["label"]: row for row in swept["rows"]}
    assert report["rows"][0]["features"] == "the model's own"
    assert rows["mae"]["features"] == "cls+mean, last block of 1"
    assert rows["mae"]["knn"] != report["rows"][0]["knn"]  # the features are in the cache key
    assert rows["pixels"]["layer_sweep"] is None
    for label in ("mae", "simclr", "mae (untrained)"):
        sweep = rows[label]["layer_sweep"]
        assert [(p["pool"], p["block"]) for p in sweep["points"]] == [
            ("cls", 0), ("mean", 0), ("cls+mean", 0)
        ]  # fmt: skip
        assert 0.0 <= sweep["points"][0]["linear"]["ci95"]["top1"][0] <= 1.0
    assert (
        rows["mae"]["layer_sweep"]["points"][2]["knn"]["top1"] == rows["mae"]["knn"]["top1"]
    )  # the sweep's cls+mean point is the protocol's feature
    text = (protocol.run_dir / "report.md").read_text()
    assert "## Layer sweep" in text and "| mae | k-NN | cls, block 1:" in text
    assert (protocol.run_dir / "figures" / "layer_sweep_0.png").stat().st_size > 10_000


def test_transfer_rows_per_dataset_in_both_directions(finished_run, cifar_folder, tmp_path):
    recipe, _ = finished_run
    digits = {"dataset": "mnist5k", "max_train_images": 200, "max_val_images": 100}
    transfer = make_recipe(cifar_folder, recipe.output_dir, datasets=[digits], finetune=None)
    result = run_recipe(transfer, do_pretrain=False, log=lambda _: None)
    section = result["transfer"]["datasets"]["mnist5k"]
    assert section["dataset"]["val_images"] == 100 and section["dataset"]["classes"] == 10
    assert [row["label"] for row in section["rows"]] == [row["label"] for row in result["rows"]]
    assert section["rows"][0]["knn"]["ci95"]["top1"][0] <= section["rows"][0]["knn"]["top1"]
    assert section["rows"][0]["knn"] != result["rows"][0]["knn"]  # other images, other result
    assert {(p["row"], p["versus"]) for p in section["paired"]} >= {("mae", "mae (untrained)")}
    assert (recipe.method_dir(0) / "transfer" / "mnist5k" / "eval.json").is_file()
    assert "transfer" not in result["rows"][0]
    means = result["transfer"]["summary"]
    assert means["over"] == [cifar_folder.name, "mnist5k"]
    expected = (result["rows"][0]["knn"]["top1"] + section["rows"][0]["knn"]["top1"]) / 2
    assert means["rows"][0]["knn"] == pytest.approx(expected)
    text = (transfer.run_dir / "report.md").read_text()
    assert "## Transfer" in text and "### mnist5k" in text and "### Across datasets" in text

    # the other way: pretrained on the digits, evaluated on the CIFAR-10 JPEGs too
    raw = {
        "name": "digits",
        "output_dir": str(tmp_path),
        "data": {"dataset": "mnist5k", "image_size": 32, "num_workers": 0, **digits},
        "methods": [dict(TINY_MAE)],
        "pretrain": {"epochs": 1, "batch_size": 32},
        "trainer": {"accelerator": "cpu", "progress_bar": False},
        "eval": {
            "knn": {"k": 10},
            "linear": {"epochs": 2},
            "datasets": [{"root": str(cifar_folder), "val_split": "test", "name": "cifar"}],
        },
    }
    back = run_recipe(recipe_from_dict(raw), log=lambda _: None)["transfer"]
    assert back["summary"]["over"] == ["mnist5k", "cifar"]
    assert back["datasets"]["cifar"]["dataset"]["train_images"] == 160


def test_knn_monitor_curve_lands_in_the_row_and_a_figure(cifar_folder, tmp_path):
    monitor = {"every_n_epochs": 1, "bank_images": 100, "query_images": 50}
    recipe = make_recipe(cifar_folder, tmp_path, finetune=None)
    recipe = recipe_from_dict(
        {**recipe.model_dump(mode="json"), "methods": [dict(TINY_MAE)],
         "pretrain": {"epochs": 2, "batch_size": 32, "knn_monitor": monitor}}
    )  # fmt: skip
    report = run_recipe(recipe, log=lambda _: None)
    curve = report["rows"][0]["knn_monitor"]
    assert [point["epoch"] for point in curve] == [1, 2]
    assert all(0.0 <= point["top1"] <= 1.0 for point in curve)
    assert report["rows"][1]["method"] == "random_init" and "knn_monitor" not in report["rows"][1]
    assert report["figures"]["k-NN during pretraining"] == "knn_curves.png"
    assert (recipe.run_dir / "figures" / "knn_curves.png").is_file()
