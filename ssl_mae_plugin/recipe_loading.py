"""Recipe files: YAML, dotted command-line overrides, and one-line errors.

``load_recipe("r.yaml", ["methods.0.mask_ratio=0.9"])`` reads, overrides and validates a
recipe (the schema is :mod:`ssl_mae_plugin.recipes`); every problem becomes a
:class:`~ssl_mae_plugin.recipes.RecipeError` whose one line names the key and the value.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ssl_mae_plugin.methods.registry import get_method, list_methods
from ssl_mae_plugin.recipes import (
    INJECTED_KEYS,
    Recipe,
    RecipeError,
    method_entry_model,
    recipe_model,
)
from ssl_mae_plugin.sweeps import entry_origins


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a YAML recipe, apply ``dotted.key=value`` overrides, validate.

    Raises:
        RecipeError: For a missing file, bad YAML, a bad override or an invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from error
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return recipe_from_dict(raw)


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``dotted.key=value`` in a raw recipe; list items by index (``methods.0.x=1``).

    The value is parsed as YAML (``0.9`` a float, ``true`` a bool, ``null`` None). A
    missing (or null) section on the way is created.
    """
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise RecipeError(f"override {override!r} is not of the form dotted.key=value")
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError as error:
        raise RecipeError(f"override {override!r}: the value is not valid YAML") from error
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"override {where!r}: no list item {part!r} ({len(node)})")
            part = int(part)
        elif not isinstance(node, dict):
            raise RecipeError(f"override {key!r}: {where.rpartition('.')[0]} is not a mapping")
        elif not last and node.get(part) is None:
            node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]


def recipe_from_dict(raw: Mapping[str, Any]) -> Recipe:
    """Validate a raw recipe mapping.

    Raises:
        RecipeError: For the first problem, in one line naming the key and the value.
    """
    try:
        return recipe_model().model_validate(dict(raw))
    except ValidationError as error:
        raise RecipeError(_describe(_as_written(error.errors()[0], raw))) from None


def _as_written(error: Mapping[str, Any], raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """The error with ``methods.<i>`` renumbered as in the recipe (before sweep expansion)."""
    loc = error["loc"]
    if len(loc) < 2 or loc[0] != "methods" or not isinstance(loc[1], int):
        return error
    origins = entry_origins(raw)
    index = origins[loc[1]] if loc[1] < len(origins) else loc[1]
    return {**error, "loc": ("methods", index, *loc[2:])}


def _describe(error: Mapping[str, Any]) -> str:
    """One line for a pydantic error: the dotted key, what is wrong, the value given."""
    raw = error["loc"]
    loc = [  # without the tags of tagged unions: methods.0.mae.x -> methods.0.x
        part
        for i, part in enumerate(raw)
        if not (i == 2 and raw[0] == "methods" and isinstance(raw[1], int))
        and not (i > 0 and raw[i - 1] == "linear")
    ]
    key = ".".join(str(part) for part in loc)
    kind, value = error["type"], error.get("input")
    if kind == "recipe":
        return f"{key}.{error['msg']}" if key else error["msg"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        if loc[0] == "methods" and field in INJECTED_KEYS:
            return f"{key} is set by {INJECTED_KEYS[field]}, not per method"
        return f"unknown key {key!r}; valid keys here: {', '.join(_valid_keys(loc, error['loc']))}"
    if kind == "missing":
        return f"missing key {key!r}"
    if kind in ("union_tag_invalid", "union_tag_not_found") and loc[0] == "methods":
        if kind == "union_tag_not_found":
            return f"missing key '{key}.name'"
        available = ", ".join(list_methods())
        return f"{key}.name: unknown method {error['ctx']['tag']!r}; available: {available}"
    if kind == "union_tag_invalid":
        tags = error["ctx"]["expected_tags"]
        return f"{key}.mode must be one of {tags}, got {error['ctx']['tag']!r}"
    shown = "null" if value is None else f"{type(value).__name__} {value!r}"
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = error["ctx"]["min_length" if kind == "too_short" else "max_length"]
        return f"{key} must list {bound} {count} item(s), got {shown}"
    message = error["msg"]
    if message.startswith("Input should be "):
        return f"{key} must be {message.removeprefix('Input should be ')}, got {shown}"
    return f"{key}: {message}, got {shown}"


def _valid_keys(loc: list[Any], tagged: tuple[Any, ...]) -> list[str]:
    """The keys of the section holding ``loc[-1]`` (a method entry's own for methods.i.x).

    ``tagged`` is pydantic's location, whose ``methods.<i>.<name>`` names the method.
    """
    if loc[0] == "methods":
        name = tagged[2]
        return list(method_entry_model(name, get_method(name)).model_fields)
    models: list[type[BaseModel]] = [recipe_model()]
    for part in (part for part in loc[:-1] if not isinstance(part, int)):  # list items
        annotations = [m.model_fields[part].annotation for m in models if part in m.model_fields]
        models = [m for annotation in annotations for m in _models_in(annotation)]
    return list(dict.fromkeys(key for model in models for key in model.model_fields))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a type (through ``Optional``, ``Annotated``, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]
