"""The ``models:`` of a recipe: weights that were not pretrained here, loaded for its rows.

Each entry is loaded by :func:`ssl_mae_plugin.model_sources.load_model` at the recipe's
image size, identified for caches by its files, and evaluated with the normalisation its
weights expect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_mae_plugin.data import Normalization
from ssl_mae_plugin.model_sources import LoadedModel, WeightsError, detect_format, load_model
from ssl_mae_plugin.recipes import ModelEntry, Recipe, RecipeError


def entry_format(entry: ModelEntry) -> str:
    """The entry's format, told by its file for ``auto``.

    Raises:
        WeightsError: For a missing or unreadable path (naming it).
    """
    return detect_format(entry.weights) if entry.format == "auto" else entry.format


def load_entry(recipe: Recipe, index: int) -> LoadedModel:
    """Model ``index`` of ``recipe.models`` at ``data.image_size``.

    Raises:
        RecipeError: For a missing, unreadable or mismatched file, naming the entry and
            the path.
    """
    entry = recipe.models[index]
    try:
        return load_model(
            entry_format(entry), entry.weights, entry.architecture, recipe.data.image_size
        )
    except WeightsError as error:
        raise RecipeError(f"models.{index} ({entry.label}): {error}") from error


def model_dir(recipe: Recipe, index: int) -> Path:
    """The caches of model ``index``: ``<run>/<label>``, ``.../seed-<seed>`` after the first."""
    folder = recipe.run_dir / recipe.models[index].label
    return folder if recipe.seed == recipe.all_seeds[0] else folder / f"seed-{recipe.seed}"


def weights_identity(entry: ModelEntry, image_size: int) -> dict[str, Any]:
    """What identifies an entry's weights: its files (path, size, time), format, architecture.

    A folder is identified by every file in it. Without weights (timm's download) the
    model name is the identity.
    """
    identity: dict[str, Any] = {
        "format": entry_format(entry),
        "architecture": entry.architecture,
        "image_size": image_size,
    }
    if entry.weights is None:
        return identity
    path = Path(entry.weights).expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamps = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {**identity, "weights": str(path), "files": stamps}


def entry_normalization(
    entry: ModelEntry, loaded: LoadedModel, data: Normalization
) -> Normalization:
    """The entry's ``mean``/``std``, else what its source expects, else the recipe's."""
    if entry.mean is not None and entry.std is not None:
        return Normalization(tuple(entry.mean), tuple(entry.std))
    return loaded.normalization or data
