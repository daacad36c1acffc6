"""Convert between our state dicts and facebookresearch/mae's checkpoints.

Our :class:`~ssl_mae_plugin.mae.model.MAE` holds a timm ``VisionTransformer`` as
``encoder`` (whose keys are already the official encoder keys) and an ``MAEDecoder`` as
``decoder`` (``decoder.embed`` is the official ``decoder_embed`` and so on).
"""

from __future__ import annotations

import argparse
import math
import re
import warnings
from os import PathLike
from typing import TYPE_CHECKING, Any

import torch
from timm.layers import resample_abs_pos_embed

from ssl_mae_plugin.mae.encoder import VIT_SIZES

if TYPE_CHECKING:
    from ssl_mae_plugin.mae.model import MAE

POS_TABLE_KEYS = ("pos_embed", "decoder_pos_embed")
# Head counts of the published architectures; shapes alone do not tell them.
ENCODER_HEADS = {size["embed_dim"]: size["num_heads"] for size in VIT_SIZES.values()}
DECODER_HEADS = {256: 8, 512: 16}  # ours for Tiny / Small, the paper's for B / L / H


def to_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename our keys to facebookresearch/mae's (``decoder.embed`` -> ``decoder_embed``)."""
    return {_official_name(key): value for key, value in state_dict.items()}


def from_official(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename facebookresearch/mae keys to ours; the inverse of :func:`to_official`."""
    return {_our_name(key): value for key, value in state_dict.items()}


def _official_name(key: str) -> str:
    if key.startswith("encoder."):
        return key.removeprefix("encoder.")
    if key == "decoder.mask_token":
        return "mask_token"
    if key.startswith("decoder."):
        return "decoder_" + key.removeprefix("decoder.")
    raise ValueError(f"unexpected key {key!r} in an MAE state dict")


def _our_name(key: str) -> str:
    if key == "mask_token":
        return "decoder.mask_token"
    if key.startswith("decoder_"):
        return "decoder." + key.removeprefix("decoder_")
    return "encoder." + key


def is_decoder_key(official_key: str) -> bool:
    """Whether an official key belongs to the decoder (``mask_token`` included)."""
    return official_key == "mask_token" or official_key.startswith("decoder_")


def read_official(
    source: str | PathLike | dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an official checkpoint and infer the architecture from its tensor shapes.

    Args:
        source: A ``.pth`` path, a state dict, or ``{"model": state_dict, "args": ...}``.

    Returns:
        The official state dict and the :class:`MAE` arguments it implies (``img_size``
        only when the position table is a square grid).
    """
    if isinstance(source, (str, PathLike)):
        with torch.serialization.safe_globals([argparse.Namespace]):
            source = torch.load(source, map_location="cpu", weights_only=True)
    if not isinstance(source, dict):
        raise ValueError(f"an MAE checkpoint must be a dict, got {type(source).__name__}")
    args = source.get("args")
    state_dict = source.get("model", source)
    for required in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"):
        if required not in state_dict:
            raise ValueError(f"not an MAE checkpoint: key {required!r} is missing")

    embed_dim, in_chans, patch_size, _ = state_dict["patch_embed.proj.weight"].shape
    config: dict[str, Any] = {
        "patch_size": int(patch_size),
        "in_chans": int(in_chans),
        "embed_dim": int(embed_dim),
        "depth": _count_blocks(state_dict, "blocks"),
        "num_heads": ENCODER_HEADS.get(int(embed_dim), max(1, int(embed_dim) // 64)),
        "mlp_ratio": state_dict["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
    }
    side = _square_side(state_dict["pos_embed"].shape[1] - 1)
    if side is not None:
        config["img_size"] = side * int(patch_size)
    if "decoder_embed.weight" in state_dict:
        decoder_dim = int(state_dict["decoder_embed.weight"].shape[0])
        config["decoder_embed_dim"] = decoder_dim
        config["decoder_depth"] = _count_blocks(state_dict, "decoder_blocks")
        config["decoder_num_heads"] = DECODER_HEADS.get(decoder_dim, max(1, decoder_dim // 64))
    if args is not None and hasattr(args, "norm_pix_loss"):
        config["norm_pix_loss"] = bool(args.norm_pix_loss)
    return state_dict, config


def load_official_into(model: MAE, state_dict: dict[str, torch.Tensor]) -> None:
    """Load official weights into ``model``, resizing position tables to its grid.

    Raises:
        ValueError: On an unexpected key, a missing encoder key or a shape mismatch,
            naming the key.
    """
    expected = model.official_state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise ValueError(f"unexpected key {unexpected[0]!r} in the checkpoint")
    missing = sorted(set(expected) - set(state_dict))
    missing_encoder = [key for key in missing if not is_decoder_key(key)]
    if missing_encoder:
        raise ValueError(f"the checkpoint is missing key {missing_encoder[0]!r}")
    if missing:
        warnings.warn(
            "the checkpoint has no decoder weights; the decoder is freshly initialised. "
            f"Missing: {', '.join(missing)}",
            stacklevel=3,
        )

    converted = {}
    for key, value in state_dict.items():
        target_shape = expected[key].shape
        if key in POS_TABLE_KEYS and value.shape != target_shape:
            value = resize_pos_table(key, value, model.grid_size)
        if value.shape != target_shape:
            raise ValueError(
                f"key {key!r} has shape {tuple(value.shape)} in the checkpoint, "
                f"the model expects {tuple(target_shape)}"
            )
        converted[key] = value
    model.load_state_dict(from_official(converted), strict=False)


def resize_pos_table(key: str, table: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
    """Resize a ``[1, 1 + side * side, D]`` table (cls row first) to ``grid_size``, bicubic.

    Raises:
        ValueError: Naming ``key`` when the table is not a square grid.
    """
    side = _square_side(table.shape[1] - 1)
    if side is None:
        raise ValueError(
            f"key {key!r} holds {table.shape[1] - 1} positions, not a square grid; "
            "it cannot be resized"
        )
    return resample_abs_pos_embed(
        table,
        new_size=list(grid_size),
        old_size=[side, side],
        num_prefix_tokens=1,
        interpolation="bicubic",
        antialias=False,
    )


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def _square_side(num_positions: int) -> int | None:
    side = math.isqrt(num_positions)
    return side if side * side == num_positions else None
