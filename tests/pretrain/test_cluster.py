"""Launchers: SLURM, torchrun and hand-started nodes read as Lightning reads them; two nodes."""

import json
import signal

import pytest
import torch
import yaml
from lightning_fabric.plugins.environments.lightning import find_free_network_port
from lightning_utilities.core.rank_zero import rank_zero_only as utilities_rank_zero_only
from pytorch_lightning.utilities import rank_zero_only

from ssl_mae_plugin.cli import main
from ssl_mae_plugin.pretrain.callbacks import read_metrics
from ssl_mae_plugin.pretrain.cluster import check_launch, launch_rank, launched_processes
from ssl_mae_plugin.pretrain.trainer import build_trainer
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from tests.conftest import final_weights, run_cli, tiny_recipe, wait_for

SLURM = {
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "2",
    "SLURM_JOB_NAME": "mae",
    "SLURM_JOB_ID": "7",
    "SLURM_NODELIST": "node[01-02]",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
}
TORCHRUN = {
    "TORCHELASTIC_RUN_ID": "run",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "GROUP_RANK": "1",
    "WORLD_SIZE": "4",
    "LOCAL_WORLD_SIZE": "2",
    "MASTER_ADDR": "10.0.0.1",
    "MASTER_PORT": "29500",
}
BY_HAND = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "4"}
BY_HAND_NODE_1 = {**BY_HAND, "NODE_RANK": "1", "LOCAL_RANK": "1"}


@pytest.fixture(autouse=True)
def restore_the_rank():
    """A Trainer built under a simulated launch sets the process-wide rank; put it back."""
    saved = rank_zero_only.rank, utilities_rank_zero_only.rank
    yield
    rank_zero_only.rank, utilities_rank_zero_only.rank = saved


def two_by_two(cifar_folder, tmp_path, **trainer):
    return recipe_from_dict(
        tiny_recipe(
            cifar_folder,
            tmp_path,
            trainer={"devices": 2, "num_nodes": 2, "strategy": "ddp", **trainer},
        )
    )


@pytest.mark.parametrize(
    ("variables", "launcher", "environment"),
    [
        (SLURM, "SLURM_NTASKS", "SLURMEnvironment"),
        (TORCHRUN, "WORLD_SIZE (torchrun)", "TorchElasticEnvironment"),
        (BY_HAND_NODE_1, "WORLD_SIZE", "LightningEnvironment"),
    ],
)
def test_each_launcher_is_read_as_lightning_reads_it(
    variables, launcher, environment, cifar_folder, tmp_path, monkeypatch
):
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    recipe = two_by_two(cifar_folder, tmp_path)
    assert launched_processes() == (launcher, 4)
    check_launch(recipe.trainer)  # 2 devices x 2 nodes: as launched
    trainer = build_trainer(recipe, 0, steps_per_epoch=5, run_info={})
    assert type(trainer.strategy.cluster_environment).__name__ == environment
    assert launch_rank(recipe.trainer) == trainer.global_rank == 3
    assert (trainer.world_size, trainer.node_rank, trainer.local_rank) == (4, 1, 1)


def test_alone_there_is_no_launcher_and_rank_0(cifar_folder, tmp_path, monkeypatch):
    for name in {*SLURM, *TORCHRUN, "NODE_RANK"}:
        monkeypatch.delenv(name, raising=False)
    recipe = two_by_two(cifar_folder, tmp_path)
    assert launched_processes() is None and launch_rank(recipe.trainer) == 0
    check_launch(recipe.trainer)


def test_a_launch_that_does_not_match_the_recipe_stops_before_any_work(
    cifar_folder, tmp_path, monkeypatch, capsys
):
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RecipeError, match=r"^trainer.devices=1 x trainer.num_nodes=2 = 2 "):
        check_launch(two_by_two(cifar_folder, tmp_path, devices=1).trainer)
    raw = tiny_recipe(cifar_folder, tmp_path, trainer={"devices": 8, "strategy": "ddp"})
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "8 processes, but the launcher started 4 (SLURM_NTASKS)" in line
    assert not (tmp_path / "t").exists()


def start_two_nodes(recipe_path, output):
    """Two single-process "nodes" on the loopback address, started by hand as on a cluster."""
    port = str(find_free_network_port())
    return [
        run_cli(
            "run",
            str(recipe_path),
            f"output_dir={output}",
            "trainer.num_nodes=2",
            "trainer.devices=1",
            "trainer.strategy=ddp",
            wait=False,
            env={
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "NODE_RANK": str(node),
                "LOCAL_RANK": "0",
            },
        )
        for node in (0, 1)
    ]


def test_two_nodes_train_resume_after_a_kill_and_write_one_report(cifar_folder, tmp_path):
    raw = tiny_recipe(
        cifar_folder,
        tmp_path / "x",
        pretrain={"epochs": 2, "batch_size": 16, "checkpoint_every_n_steps": 3},
        eval={"linear": {"epochs": 5}, "pixels": False},
    )
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(raw))
    one_node = tmp_path / "one-node"
    run_cli(
        "pretrain",
        str(recipe_path),
        f"output_dir={one_node}",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )

    two_nodes = tmp_path / "two-nodes"
    checkpoint = two_nodes / "t" / "mae" / "checkpoints" / "last.ckpt"
    nodes = start_two_nodes(recipe_path, two_nodes)
    wait_for(checkpoint, nodes[0])
    for node in nodes:
        node.send_signal(signal.SIGKILL)
        node.communicate()
    assert checkpoint.exists() and not (two_nodes / "t" / "report.json").exists()

    nodes = start_two_nodes(recipe_path, two_nodes)
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "[1/1] pretraining mae" in outputs[0]
    assert "pretraining" not in outputs[1] and "wrote" not in outputs[1]  # rank 1 is quiet
    reference, resumed = final_weights(one_node), final_weights(two_nodes)
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], atol=2e-4, rtol=1e-3, msg=key)
    rows = read_metrics(two_nodes / "t" / "mae" / "metrics.csv")
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    report = json.loads((two_nodes / "t" / "report.json").read_text())
    assert [row["label"] for row in report["rows"]] == ["mae", "mae (untrained)"]
