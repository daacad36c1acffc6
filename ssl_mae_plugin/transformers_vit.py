"""transformers' ViT and ViTMAE encoders as timm ``VisionTransformer`` s.

A folder written by ``save_pretrained`` of ``ViTMAEModel``, ``ViTMAEForPreTraining`` or
``ViTModel`` (any class whose ``base_model`` is one of ``ViTModel`` and ``ViTMAEModel``) is
loaded with transformers; its encoder becomes a timm ViT built by
:func:`~ssl_mae_plugin.mae.encoder.vit_encoder`, so that our ViT feature protocols and
fine-tuning apply. The key mapping is the inverse of
:func:`ssl_mae_plugin.export.to_transformers`: each timm (= facebookresearch/mae) encoder key
goes through it and its parts (q, k and v of ``qkv``) are concatenated back. ViTModel's
pooler is not part of the encoder and is ignored.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from ssl_mae_plugin.export import to_transformers
from ssl_mae_plugin.extras import require
from ssl_mae_plugin.mae.checkpoints import resize_pos_table
from ssl_mae_plugin.mae.encoder import vit_encoder

ENCODERS = ("ViTModel", "ViTMAEModel")


def read_pretrained(folder: Path) -> tuple[Any, set[str]]:
    """The encoder (eval mode) of a ``save_pretrained`` folder and its keys the files lacked.

    The class named first in ``config.architectures`` loads the folder (``AutoModel`` when
    none is named); its ``base_model`` is the encoder.

    Raises:
        MissingExtraError: When transformers is not installed.
        ValueError: For a folder transformers cannot load or a model that is no ViT.
    """
    transformers = require("transformers", "hf", "models: format huggingface")
    try:
        config = transformers.AutoConfig.from_pretrained(folder)
        name = (config.architectures or ["AutoModel"])[0]
        model, info = getattr(transformers, name).from_pretrained(folder, output_loading_info=True)
    except (OSError, ValueError, AttributeError, RuntimeError) as error:
        raise ValueError(f"transformers cannot load it: {' '.join(str(error).split())}") from error
    encoder = model.base_model
    if type(encoder).__name__ not in ENCODERS:
        raise ValueError(f"it holds a {type(encoder).__name__}, not one of {', '.join(ENCODERS)}")
    prefix = "" if encoder is model else f"{model.base_model_prefix}."
    missing = {key.removeprefix(prefix) for key in info["missing_keys"]}
    return encoder.eval(), missing


def to_timm(encoder: Any, image_size: int, missing: Collection[str] = ()) -> VisionTransformer:
    """A timm ViT (eval mode) at ``image_size`` with the weights of a transformers encoder.

    The LayerNorm eps is ``config.layer_norm_eps``; the position table is resized to the
    grid of ``image_size`` as for facebookresearch/mae checkpoints.

    Args:
        encoder: A ``ViTModel`` or ``ViTMAEModel``.
        image_size: Input size of the result.
        missing: Keys of ``encoder`` its files lacked (freshly initialised by transformers).

    Raises:
        ValueError: For an activation other than GELU, no qkv bias, a key in ``missing`` or
            an image size the patches do not tile.
    """
    config = encoder.config
    if config.hidden_act != "gelu":
        raise ValueError(f"hidden_act is {config.hidden_act!r}; only 'gelu' converts to timm")
    if not config.qkv_bias:
        raise ValueError("qkv_bias is false; only ViTs with qkv bias convert to timm")
    vit = vit_encoder(
        img_size=image_size,
        patch_size=config.patch_size,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        in_chans=config.num_channels,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        norm_eps=config.layer_norm_eps,
        weight_init="skip",
    )
    theirs = encoder.state_dict()
    ours = {}
    for key, target in vit.state_dict().items():
        names = [name.removeprefix("vit.") for name in to_transformers({key: target})]
        absent = [name for name in names if name in missing]
        if absent:
            raise ValueError(f"the weights lack {absent[0]!r}")
        ours[key] = torch.cat([theirs[name] for name in names])  # [q; k; v] rows for qkv
    if ours["pos_embed"].shape != vit.pos_embed.shape:
        ours["pos_embed"] = resize_pos_table(
            "pos_embed", ours["pos_embed"], vit.patch_embed.grid_size
        )
    vit.load_state_dict(ours)
    return vit.eval()
