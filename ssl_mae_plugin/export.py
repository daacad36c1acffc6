"""A pretrained backbone out of a run folder, in the files other tools load.

- ``timm``: the ViT encoder as ``model.safetensors`` and ``config.json`` (the timm model name
  and arguments), for ``timm.create_model(name, pretrained=True,
  pretrained_cfg_overlay={"file": ".../model.safetensors"}, **model_args)``.
- ``hf``: an MAE as transformers' ``ViTMAEForPreTraining`` folder (``save_pretrained``), for
  ``ViTMAEForPreTraining.from_pretrained`` / ``ViTMAEModel.from_pretrained``.
- ``official``: an MAE as facebookresearch/mae's ``{"model": ..., "args": ...}`` ``.pth``,
  for ``models_mae.py`` (and :meth:`ssl_mae_plugin.MAE.from_official`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from ssl_mae_plugin.extras import require
from ssl_mae_plugin.mae import MAE
from ssl_mae_plugin.pretrain.checkpoints import load_pretrained
from ssl_mae_plugin.storage import atomic_path, write_text_atomic

FORMATS = ("timm", "hf", "official")


def vit_arguments(vit: VisionTransformer) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that rebuild ``vit``'s architecture, headless."""
    block = vit.blocks[0]
    return {
        "img_size": list(vit.patch_embed.img_size),
        "patch_size": vit.patch_embed.patch_size[0],
        "in_chans": vit.patch_embed.proj.in_channels,
        "embed_dim": vit.embed_dim,
        "depth": len(vit.blocks),
        "num_heads": block.attn.num_heads,
        "mlp_ratio": block.mlp.fc1.out_features / vit.embed_dim,
        "qkv_bias": block.attn.qkv.bias is not None,
        "dynamic_img_size": bool(getattr(vit, "dynamic_img_size", False)),
        "num_classes": 0,
    }


def to_transformers(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facebookresearch/mae keys -> transformers' ``ViTMAEForPreTraining`` (qkv split by rows)."""
    renames = {
        "cls_token": "vit.embeddings.cls_token",
        "pos_embed": "vit.embeddings.position_embeddings",
        "patch_embed.proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
        "norm.weight": "vit.layernorm.weight",
        "norm.bias": "vit.layernorm.bias",
    }
    out = {}
    for key, value in official.items():
        if not key.startswith(("blocks.", "decoder_blocks.")):
            out[renames.get(key, f"decoder.{key}")] = value
            continue
        prefix, index, rest = key.split(".", 2)
        layer = f"vit.layers.{index}" if prefix == "blocks" else f"decoder.decoder_layers.{index}"
        if rest.startswith("attn.qkv."):
            suffix = rest.removeprefix("attn.qkv.")
            for name, part in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{layer}.attention.{name}_proj.{suffix}"] = part
            continue
        rest = rest.replace("attn.proj", "attention.o_proj")
        rest = rest.replace("norm1", "layernorm_before").replace("norm2", "layernorm_after")
        out[f"{layer}.{rest}"] = value
    return out


def transformers_config(model: MAE) -> Any:
    """The ``ViTMAEConfig`` of ``model`` (square images).

    Raises:
        MissingExtraError: When transformers is not installed.
    """
    transformers = require("transformers", "hf", "--format hf")
    config = model.config
    return transformers.ViTMAEConfig(
        hidden_size=config["embed_dim"],
        num_hidden_layers=config["depth"],
        num_attention_heads=config["num_heads"],
        intermediate_size=int(config["embed_dim"] * config["mlp_ratio"]),
        image_size=config["img_size"][0],
        patch_size=config["patch_size"],
        num_channels=config["in_chans"],
        qkv_bias=True,
        decoder_hidden_size=config["decoder_embed_dim"],
        decoder_num_hidden_layers=config["decoder_depth"],
        decoder_num_attention_heads=config["decoder_num_heads"],
        decoder_intermediate_size=int(config["decoder_embed_dim"] * config["mlp_ratio"]),
        mask_ratio=config["mask_ratio"],
        norm_pix_loss=config["norm_pix_loss"],
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )


def export(checkpoint: str | Path, fmt: str, out: str | Path) -> list[Path]:
    """Write the backbone of one of our checkpoints in format ``fmt`` under ``out``.

    Args:
        checkpoint: A run's ``last.ckpt``.
        fmt: ``timm`` (any ViT backbone), ``hf`` or ``official`` (MAE only).
        out: A folder (``timm``, ``hf``) or a ``.pth`` file (``official``).

    Returns:
        The files written.

    Raises:
        ValueError: For an unknown format, or a model the format cannot hold.
        MissingExtraError: For ``hf`` without transformers.
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    method, info = load_pretrained(checkpoint)
    out = Path(out)
    if fmt == "timm":
        vit = method.backbone
        if not isinstance(vit, VisionTransformer):
            raise ValueError(
                f"{checkpoint}: --format timm exports ViT backbones, not {type(vit).__name__}"
            )
        from safetensors.torch import save_file

        weights = out / "model.safetensors"
        with atomic_path(weights) as partial:
            save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, partial)
        config = {
            "architecture": "vit_base_patch16_224",  # any ViT name: model_args fix the size
            "model_args": vit_arguments(vit),
            "mean": info.get("mean"),
            "std": info.get("std"),
            "source": str(checkpoint),
        }
        return [weights, write_text_atomic(out / "config.json", json.dumps(config, indent=2))]
    model = getattr(method, "model", None)
    if not isinstance(model, MAE):
        raise ValueError(f"{checkpoint}: --format {fmt} exports MAE models, not {method.name!r}")
    if fmt == "official":
        args = argparse.Namespace(norm_pix_loss=model.norm_pix_loss, input_size=model.img_size[0])
        with atomic_path(out) as partial:
            torch.save({"model": model.official_state_dict(), "args": args}, partial)
        return [out]
    config = transformers_config(model)
    theirs = require("transformers", "hf", "--format hf").ViTMAEForPreTraining(config)
    theirs.load_state_dict(to_transformers(model.official_state_dict()), strict=True)
    theirs.save_pretrained(out)
    return sorted(out.iterdir())
