"""Fitting a state dict saved elsewhere to one of our backbones, strictly.

Wrapper prefixes every key shares (``module.`` of DDP, ``backbone.`` / ``encoder.`` of
method modules) are stripped; lightly's way of saving a ResNet,
``nn.Sequential(*list(resnet.children())[:-1]).state_dict()`` (``0.weight``,
``4.0.conv1.weight``, ...), is renamed by the model's own children; a classifier the model
does not have is dropped. Then every key and shape must match.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssl_mae_plugin.backbones import CIFAR_STEM_MAX_SIZE, RESNETS

WRAPPER_PREFIXES = ("module.", "backbone.", "encoder.")
CLASSIFIER_PREFIXES = ("fc.", "head.")
STEMS = {3: "a CIFAR stem", 7: "an ImageNet stem"}  # by the kernel size of conv1
SHOWN_PROBLEMS = 3


def unwrap(contents: Any) -> dict[str, Tensor]:
    """The state dict of a file's contents: all of it or its ``state_dict`` / ``model`` entry.

    Raises:
        ValueError: When that is no non-empty mapping of names to tensors.
    """
    for key in ("state_dict", "model"):
        if isinstance(contents, dict) and isinstance(contents.get(key), dict):
            contents = contents[key]
            break
    tensors = isinstance(contents, dict) and all(isinstance(v, Tensor) for v in contents.values())
    if not (tensors and contents):
        raise ValueError("not a state dict (a mapping of names to tensors)")
    return contents


def strip_wrappers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Without the :data:`WRAPPER_PREFIXES` that every key shares."""
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key.removeprefix(prefix): value for key, value in state_dict.items()}
    return state_dict


def child_names(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Keys of ``nn.Sequential(*list(model.children())[:k])`` renamed to ``model``'s.

    Index ``i`` is the ``i``-th of ``model.named_children()`` (for torchvision's ResNets
    ``conv1``, ``bn1``, ``relu``, ``maxpool``, ``layer1`` ... ``layer4``, ``avgpool``).
    """
    children = [name for name, _ in model.named_children()]
    heads = [key.partition(".")[0] for key in state_dict]
    if "0" in children or not all(h.isdigit() and int(h) < len(children) for h in heads):
        return state_dict
    return {
        f"{children[int(head)]}.{key.partition('.')[2]}": value
        for head, (key, value) in zip(heads, state_dict.items(), strict=True)
    }


def fit(
    state_dict: dict[str, Tensor], model: nn.Module, architecture: str, image_size: int
) -> dict[str, Tensor]:
    """``state_dict`` renamed to ``model``'s keys, for a strict ``load_state_dict``.

    Args:
        state_dict: The saved weights.
        model: The backbone ``architecture`` built at ``image_size`` (for the messages).
        architecture: Its name.
        image_size: Its input size.

    Raises:
        ValueError: Saying which stem each side has for a ResNet stem mismatch, else naming
            the first missing, unexpected or mis-shaped keys with their shapes.
    """
    own = model.state_dict()
    theirs = child_names(strip_wrappers(state_dict), model)
    for prefix in CLASSIFIER_PREFIXES:
        if not any(key.startswith(prefix) for key in own):
            theirs = {k: v for k, v in theirs.items() if not k.startswith(prefix)}
    stem, saved_stem = own.get("conv1.weight"), theirs.get("conv1.weight")
    if architecture in RESNETS and saved_stem is not None and saved_stem.shape != stem.shape:
        raise ValueError(
            f"conv1.weight has shape {tuple(saved_stem.shape)} "
            f"({STEMS.get(saved_stem.shape[-1], 'another stem')}) but {architecture} at "
            f"image_size {image_size} has {tuple(stem.shape)} ({STEMS[stem.shape[-1]]}); "
            f"image_size <= {CIFAR_STEM_MAX_SIZE} builds the CIFAR stem, larger sizes the "
            "ImageNet stem"
        )
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in own.items() if k not in theirs]
    for key, value in theirs.items():
        if key not in own:
            problems.append(f"unexpected {key} {tuple(value.shape)}")
        elif value.shape != own[key].shape:
            problems.append(f"{key} is {tuple(value.shape)}, the model's {tuple(own[key].shape)}")
    if problems:
        more = len(problems) - SHOWN_PROBLEMS
        raise ValueError(
            f"does not fit {architecture} at image_size {image_size}: "
            + "; ".join(problems[:SHOWN_PROBLEMS])
            + (f"; {more} more" if more > 0 else "")
        )
    return theirs
