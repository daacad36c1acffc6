"""Our Lightning checkpoints: where they live, what they hold, loading them back.

A run's method keeps ``<output_dir>/<name>/<label>/checkpoints/last.ckpt``; besides
Lightning's state it records the method's registered name (``ssl_method``), where in the
data the run stands (``data_position``) and the input normalisation (``ssl_mae_run``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ssl_mae_plugin.data import IMAGENET_NORM, Normalization
from ssl_mae_plugin.mae import MAE
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.registry import get_method
from ssl_mae_plugin.pretrain.callbacks import RUN_INFO_KEY

CHECKPOINT_NAME = "last"


def checkpoint_path(method_dir: Path) -> Path:
    """``<method_dir>/checkpoints/last.ckpt``."""
    return method_dir / "checkpoints" / f"{CHECKPOINT_NAME}.ckpt"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw contents of one of our checkpoints (memory-mapped, CPU).

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it is not one of ours.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if "ssl_method" not in state:
        raise ValueError(f"{path} is not an ssl-mae checkpoint (no 'ssl_method' entry)")
    return state


def load_pretrained(path: str | Path) -> tuple[SSLMethod, dict[str, Any]]:
    """A method (CPU, eval mode) and its run info from one of our checkpoints."""
    state = read_checkpoint(path)
    method = get_method(state["ssl_method"])
    module = method.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    return module.eval(), state.get(RUN_INFO_KEY, {})


def data_position(checkpoint: Path) -> tuple[int, int]:
    """``(epoch, batches done in it)`` recorded in one of our checkpoints."""
    state = read_checkpoint(checkpoint)
    position = state.get("data_position", {"epoch": state.get("epoch", 0) + 1, "batches_done": 0})
    return int(position["epoch"]), int(position["batches_done"])


def load_mae(path: str | Path) -> tuple[MAE, Normalization]:
    """An MAE (eval mode) and its normalisation from one of our ``.ckpt`` or an official ``.pth``.

    Official facebookresearch/mae files are ImageNet-normalised.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If it holds no MAE.
    """
    path = Path(path)
    if path.suffix != ".ckpt":
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return MAE.from_official(path).eval(), IMAGENET_NORM
    method, info = load_pretrained(path)
    model = getattr(method, "model", None)
    if not isinstance(model, MAE):
        raise ValueError(f"{path} holds a {method.name!r} model, not an MAE")
    mean, std = info.get("mean"), info.get("std")
    normalization = Normalization(tuple(mean), tuple(std)) if mean and std else IMAGENET_NORM
    return model.eval(), normalization
