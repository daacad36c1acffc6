"""Evaluation-only models from published or foreign weight files.

Our evaluation runs on any module with ``forward_features(images) -> [N, D]`` (and a timm
``VisionTransformer`` as ``backbone`` for fine-tuning and the ViT feature protocols).
:func:`load_model` turns a weights source into such a model, plus a description for a
report's backbone column and a builder of the same architecture untrained (the control):

- ``official``: a facebookresearch/mae ``.pth`` (pretrain checkpoint, encoder-only release
  or ``*_visualize_*`` file); the encoder of :meth:`ssl_mae_plugin.MAE.from_official`
  (which infers the head count from the width: the published sizes' counts, else width/64).
  Fine-tuned files (``fc_norm`` / ``head`` keys, no final ``norm``) are refused.
- ``timm``: a timm model name, with weights from a file (or timm's download).
- ``huggingface``: a transformers ``save_pretrained`` folder of a ViT or ViTMAE, converted
  to a timm ViT (see :mod:`ssl_mae_plugin.transformers_vit`).
- ``checkpoint``: one of our ``last.ckpt``; the method module itself.
- ``state_dict``: a backbone's ``state_dict`` (lightly's ``nn.Sequential`` of a ResNet's
  children too) for one of our backbone names or a timm model name, loaded strictly (see
  :mod:`ssl_mae_plugin.state_dicts`).

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ssl_mae_plugin import state_dicts, transformers_vit
from ssl_mae_plugin.backbones import build_backbone, create_timm_model
from ssl_mae_plugin.data import IMAGENET_NORM, Normalization
from ssl_mae_plugin.mae import MAE
from ssl_mae_plugin.pretrain.checkpoints import load_pretrained, read_checkpoint
from ssl_mae_plugin.pretrain.trainer import seeded_method

FORMATS = ("official", "timm", "huggingface", "checkpoint", "state_dict")
MAE_KEYS = ("patch_embed.proj.weight", "pos_embed", "blocks.0.")  # facebookresearch/mae's
FINETUNED_PREFIXES = ("fc_norm.", "head.")  # models_vit.py's pooled norm and classifier


class WeightsError(ValueError):
    """A weights file that cannot be loaded as asked.

    The message names the path and what did not match.
    """


class EvalModel(nn.Module):
    """An evaluation-only model: ``backbone`` and ``forward_features(images) = backbone(images)``.

    The ViTs of ``official`` and ``huggingface`` weights are headless timm
    ``VisionTransformer`` s built by :func:`~ssl_mae_plugin.mae.encoder.vit_encoder`: their
    output is the normalised cls token.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward_features(self, images: Tensor) -> Tensor:
        """``[N, D]`` features of ``[N, C, H, W]`` images."""
        return self.backbone(images)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model, what it is, and how to build it untrained.

    Attributes:
        model: An :class:`EvalModel`, or for ``checkpoint`` our ``SSLMethod`` (eval mode).
        architecture: A short description for a report's backbone column.
        untrained: Builds the same architecture freshly initialised (as its source
            initialises it) from a seed; ``None`` when unknown.
        normalization: The input normalisation the weights expect (official: ImageNet's;
            huggingface: its ``preprocessor_config.json``'s, else ImageNet's; timm: its
            ``pretrained_cfg``'s; checkpoint: its run's); ``None`` when the source does not
            say (state dicts).
        seed: The seed the weights were trained from where the source records it (our
            checkpoints): its control is then that run's own step 0.
    """

    model: nn.Module
    architecture: str
    untrained: Callable[[int], nn.Module] | None
    normalization: Normalization | None = None
    seed: int | None = None


def detect_format(weights: str | Path) -> str:
    """The format of a weights source (one of :data:`FORMATS`).

    A folder with ``config.json`` is ``huggingface``; a file with our ``ssl_method`` entry is
    ``checkpoint``; one with facebookresearch/mae's keys at its top level or under ``model``
    is ``official`` (so is a timm ViT's state dict: they share the keys); any other is
    ``state_dict``.

    Raises:
        WeightsError: For a missing path, a folder without ``config.json`` or an unreadable
            file.
    """
    path = _existing(weights)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "huggingface"
        raise WeightsError(f"{path}: a folder without config.json (no save_pretrained folder)")
    contents = _read(path)
    if isinstance(contents, dict) and "ssl_method" in contents:
        return "checkpoint"
    return "official" if _mae_state_dict(contents) is not None else "state_dict"


def load_model(
    format: str, weights: str | Path | None, architecture: str | None, image_size: int
) -> LoadedModel:
    """Load an evaluation-only model (eval mode, CPU) from a weights source.

    Args:
        format: One of :data:`FORMATS` (see the module's description).
        weights: A file, or for ``huggingface`` a folder; ``None`` only for ``timm`` (timm
            downloads the tagged weights).
        architecture: A timm model name (``timm``), or our backbone name or a timm model
            name (``state_dict``); unused by the other formats.
        image_size: The evaluation's input size; position tables are resized to it.

    Raises:
        WeightsError: For an unknown format, a missing ``architecture`` or ``weights``, a
            missing or unreadable path, or weights that do not fit; naming the path.
    """
    where = "" if weights is None else f"{weights}: "
    if format not in FORMATS:
        raise WeightsError(f"{where}unknown format {format!r}; choose from {FORMATS}")
    if format in ("timm", "state_dict") and not architecture:
        raise WeightsError(f"{where}format {format} needs an architecture (a model name)")
    if weights is None and format != "timm":
        raise WeightsError(f"format {format} needs a weights path")
    path = None if weights is None else _existing(weights)
    loaders = {
        "official": _official,
        "timm": _timm,
        "huggingface": _huggingface,
        "checkpoint": _checkpoint,
        "state_dict": _state_dict,
    }
    return loaders[format](path, architecture, image_size)


# -- the formats ------------------------------------------------------------------------------


def _official(path: Path, architecture: str | None, image_size: int) -> LoadedModel:
    contents = _read(path)
    state_dict = _mae_state_dict(contents)
    if state_dict is None:
        raise WeightsError(f"{path}: not a facebookresearch/mae checkpoint (no {MAE_KEYS} keys)")
    head = sorted(key for key in state_dict if key.startswith(FINETUNED_PREFIXES))
    if head:
        raise WeightsError(
            f"{path}: a fine-tuned facebookresearch/mae checkpoint ({head[0]!r}); format "
            "official loads pretrained encoders (pretrain checkpoints or encoder releases)"
        )
    with warnings.catch_warnings():  # encoder-only releases: the decoder is not needed here
        warnings.filterwarnings("ignore", message="the checkpoint has no decoder weights")
        try:
            mae = MAE.from_official(contents, img_size=image_size)
        except ValueError as error:
            raise WeightsError(f"{path}: {error}") from error
    config = mae.config

    def untrained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return EvalModel(MAE(**config).encoder).eval()  # the paper's initialisation [0]

    name = f"{_vit_name(mae.encoder)} (facebookresearch/mae)"
    return LoadedModel(EvalModel(mae.encoder).eval(), name, untrained, IMAGENET_NORM)


def _timm(path: Path | None, architecture: str, image_size: int) -> LoadedModel:
    # timm loads a file non-strictly when its classifier is dropped (num_classes=0 differs
    # from the pretrained config's); loading the head the file holds keeps the load strict.
    options: dict[str, Any] = {"pretrained": True}
    if path is not None:
        classes = _timm_head_classes(path, architecture)
        overlay = {"file": str(path), "num_classes": classes}
        options |= {"num_classes": classes, "pretrained_cfg_overlay": overlay}
    try:
        model = create_timm_model(architecture, image_size, **options)
    except (RuntimeError, ValueError, KeyError) as error:
        raise WeightsError(f"{path or architecture}: {_one_line(error)}") from error
    model.reset_classifier(0)

    def untrained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return EvalModel(create_timm_model(architecture, image_size, pretrained=False)).eval()

    config = model.pretrained_cfg
    normalization = Normalization(tuple(config["mean"]), tuple(config["std"]))
    return LoadedModel(EvalModel(model).eval(), f"{architecture} (timm)", untrained, normalization)


def _huggingface(path: Path, architecture: str | None, image_size: int) -> LoadedModel:
    try:
        encoder, missing = transformers_vit.read_pretrained(path)
        backbone = transformers_vit.to_timm(encoder, image_size, missing)
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from error

    def untrained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        fresh = type(encoder)(encoder.config)  # transformers' own initialisation
        return EvalModel(transformers_vit.to_timm(fresh, image_size)).eval()

    name = f"{_vit_name(backbone)} (transformers {type(encoder).__name__})"
    processor = path / "preprocessor_config.json"  # written by an image processor, if any
    stats = json.loads(processor.read_text()) if processor.is_file() else {}
    mean, std = stats.get("image_mean"), stats.get("image_std")
    normalization = Normalization(tuple(mean), tuple(std)) if mean and std else IMAGENET_NORM
    return LoadedModel(EvalModel(backbone).eval(), name, untrained, normalization)


def _checkpoint(path: Path, architecture: str | None, image_size: int) -> LoadedModel:
    try:
        options = dict(read_checkpoint(path).get("hyper_parameters", {}))
    except ValueError as error:  # not one of ours; the message names the path
        raise WeightsError(str(error)) from error
    except Exception as error:  # unpickling, zip and OS errors alike
        raise WeightsError(f"{path}: unreadable checkpoint ({_one_line(error)})") from error
    if options.get("image_size") != image_size:
        raise WeightsError(
            f"{path} was pretrained at image_size {options.get('image_size')}, "
            f"not the evaluation's {image_size}"
        )
    method, info = load_pretrained(path)
    trained_from = options.pop("seed", None)

    def untrained(seed: int) -> nn.Module:
        return seeded_method(type(method), seed, **options).eval()

    backbone = method.backbone
    name = _vit_name(backbone) if isinstance(backbone, VisionTransformer) else method.backbone_name
    mean, std = info.get("mean"), info.get("std")
    normalization = Normalization(tuple(mean), tuple(std)) if mean and std else None
    description = f"{name} (ssl-mae {method.name})"
    return LoadedModel(method, description, untrained, normalization, trained_from)


def _state_dict(path: Path, architecture: str, image_size: int) -> LoadedModel:
    contents = _read(path)
    try:
        backbone = build_backbone(architecture, image_size)
        saved = state_dicts.unwrap(contents)
        backbone.load_state_dict(state_dicts.fit(saved, backbone, architecture, image_size))
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from error

    def untrained(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return EvalModel(build_backbone(architecture, image_size)).eval()

    return LoadedModel(EvalModel(backbone).eval(), f"{architecture} (state dict)", untrained)


# -- helpers ----------------------------------------------------------------------------------


def _existing(weights: str | Path) -> Path:
    path = Path(weights).expanduser()
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder")
    return path


def _read(path: Path) -> Any:
    """The contents of a ``.safetensors`` file or of a ``torch.save`` file (tensors only)."""
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        with torch.serialization.safe_globals([argparse.Namespace]):  # facebookresearch/mae args
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip, safetensors and OS errors alike
        raise WeightsError(f"{path}: unreadable weights file ({_one_line(error)})") from error


def _mae_state_dict(contents: Any) -> dict[str, Tensor] | None:
    """The facebookresearch/mae state dict at the top level or under ``model``, if any."""
    for candidate in [contents, contents.get("model")] if isinstance(contents, dict) else []:
        keys = [str(key) for key in candidate] if isinstance(candidate, dict) else []
        if all(any(key.startswith(name) for key in keys) for name in MAE_KEYS):
            return candidate
    return None


def _timm_head_classes(path: Path, architecture: str) -> int:
    """Classes of the classifier the file holds for timm's ``architecture`` (0: none)."""
    config = timm.models.get_pretrained_cfg(architecture)
    classifiers = (config and config.classifier) or ()
    contents = _read(path)
    try:
        state_dict = state_dicts.strip_wrappers(state_dicts.unwrap(contents))
    except ValueError as error:
        raise WeightsError(f"{path}: {error}") from error
    for name in (classifiers,) if isinstance(classifiers, str) else classifiers:
        weight = state_dict.get(f"{name}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return 0


def _vit_name(vit: VisionTransformer) -> str:
    """``ViT <width>x<depth> patch <p>``."""
    return f"ViT {vit.embed_dim}x{len(vit.blocks)} patch {vit.patch_embed.patch_size[0]}"


def _one_line(error: BaseException, limit: int = 300) -> str:
    """An error's message on one line, at most ``limit`` characters."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
