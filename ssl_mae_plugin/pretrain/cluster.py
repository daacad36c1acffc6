"""How this process was launched: SLURM, torchrun, Lightning's own variables, or alone.

Lightning detects the cluster when its Trainer starts; these helpers read the same
variables earlier, so that a recipe whose ``trainer.devices x trainer.num_nodes`` does not
match the launch stops before any work, and so that only the global rank 0 prints and
moves folders from the very first line.
"""

from __future__ import annotations

import os

from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

from ssl_mae_plugin.recipes import RecipeError, TrainerConfig


def launched_processes() -> tuple[str, int] | None:
    """``(variable, processes)`` of the launcher that started this process, if any."""
    if SLURMEnvironment.detect():
        return "SLURM_NTASKS", int(os.environ["SLURM_NTASKS"])
    if TorchElasticEnvironment.detect():
        return "WORLD_SIZE (torchrun)", int(os.environ["WORLD_SIZE"])
    if "WORLD_SIZE" in os.environ and "NODE_RANK" in os.environ:  # Lightning's variables
        return "WORLD_SIZE", int(os.environ["WORLD_SIZE"])
    return None


def launch_rank(trainer: TrainerConfig) -> int:
    """This process's global rank, from the launcher's variables (0 when alone).

    Lightning's variables give only the node and the local rank when each node is started
    by hand (``NODE_RANK``, ``LOCAL_RANK``): the global rank is then
    ``node_rank x devices + local_rank``.
    """
    for variable in ("RANK", "SLURM_PROCID"):
        if variable in os.environ:
            return int(os.environ[variable])
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    return int(os.environ.get("NODE_RANK", 0)) * devices + int(os.environ.get("LOCAL_RANK", 0))


def check_launch(trainer: TrainerConfig) -> None:
    """Stop when the launcher started another number of processes than the recipe asks.

    Raises:
        RecipeError: Naming ``trainer.devices``, ``trainer.num_nodes`` and the variable.
    """
    launched = launched_processes()
    if launched is None or not isinstance(trainer.devices, int):
        return
    variable, processes = launched
    wanted = trainer.devices * trainer.num_nodes
    if processes != wanted:
        raise RecipeError(
            f"trainer.devices={trainer.devices} x trainer.num_nodes={trainer.num_nodes} = "
            f"{wanted} processes, but the launcher started {processes} ({variable}); set "
            "them to the devices per node and the nodes of the job"
        )
