"""Where this process runs: the GPUs it may use and the launcher that started it.

Launchers: SLURM, torchrun, Lightning's own variables, or none (alone).

Lightning detects the cluster when its Trainer starts; these helpers read the same
variables earlier, so that a recipe whose ``trainer.devices x trainer.num_nodes`` does not
match the launch stops before any work, and so that only the global rank 0 prints and
moves folders from the very first line.
"""

from __future__ import annotations

import os

import torch
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


def check_accelerator(trainer: TrainerConfig) -> None:
    """Fail before any work if ``trainer`` asks for GPUs this machine does not have.

    Raises:
        RecipeError: Naming ``trainer.accelerator`` or ``trainer.devices``.
    """
    if trainer.accelerator not in ("gpu", "cuda"):
        return
    available = torch.cuda.device_count()
    if available == 0:
        raise RecipeError(
            f"trainer.accelerator is {trainer.accelerator!r} but no CUDA GPU is visible; "
            "use trainer.accelerator=cpu (or auto)"
        )
    if isinstance(trainer.devices, int) and trainer.devices > available:
        raise RecipeError(
            f"trainer.devices={trainer.devices} but this machine has {available} CUDA GPU(s)"
        )
