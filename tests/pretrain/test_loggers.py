"""Experiment loggers through Lightning: files written offline, and a missing package named."""

import sys

import yaml

from ssl_mae_plugin.cli import main
from tests.conftest import pretrain_method, tiny_recipe


def test_every_logger_writes_the_loss_offline(cifar_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 2, "batch_size": 32})
    raw["trainer"].update(log_every_n_steps=2, logger=["csv", "tensorboard", "wandb", "mlflow"])
    pretrain_method(raw)
    method_dir = tmp_path / "t" / "mae"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (method_dir / "tensorboard").rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert {"train/loss", "train/loss_step", "train/lr"} <= set(accumulator.Tags()["scalars"])
    assert len(accumulator.Scalars("train/loss")) == 2  # one mean per epoch

    import mlflow

    client = mlflow.tracking.MlflowClient((method_dir / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "t"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "mae-seed0" and "train/loss" in run.data.metrics
    assert run.data.params["mask_ratio"] == "0.75"

    assert list((method_dir / "wandb").rglob("*.wandb"))  # the offline run's log
    assert (method_dir / "logs").is_dir() and (method_dir / "metrics.csv").is_file()


def test_a_missing_logger_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing it now fails
    raw = tiny_recipe(tmp_path, tmp_path / "runs", data={"dataset": "mnist5k", "image_size": 32})
    raw["trainer"]["logger"] = "wandb"
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "ssl-mae: error: trainer.logger=wandb needs the wandb package: "
        "pip install 'ssl-mae-plugin[wandb]'"
    )
    assert not (tmp_path / "runs" / "t" / "mae").exists()
