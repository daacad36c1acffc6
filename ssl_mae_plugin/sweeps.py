"""Ablation sweeps: a recipe's ``sweep:`` section expanded into one method entry per point.

``sweep: {methods.0.mask_ratio: [0.5, 0.75, 0.9]}`` replaces ``methods.0`` by three entries
labelled ``mae-mask_ratio=0.5`` ... (the paper's Fig. 5 on your data), each trained and
evaluated as a row of its own, per seed. Two keys of one entry sweep their grid. Entries
remember their point (``sweep_point``) so that the report can draw accuracy against the
swept value; expansion happens before validation, so every point is checked before any
work starts.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

SWEEP_KEY = re.compile(r"methods\.(\d+)\.(\w+)")
MAX_KEYS_PER_ENTRY = 2
FIXED_KEYS = ("name", "label", "sweep_point")


def flatten_sweep(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"methods": {"0": {"x": [..]}}}`` (a CLI override's shape) -> ``{"methods.0.x": [..]}``."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_sweep(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _error(message: str) -> PydanticCustomError:
    return PydanticCustomError("recipe", message)


def parse_sweep(spec: Any, methods: list[Any]) -> dict[int, dict[str, list[Any]]]:
    """``{entry index: {option: values}}`` of a ``sweep:`` section, its shape checked.

    Raises:
        PydanticCustomError: For a key that is no ``methods.<index>.<option>`` of the
            recipe, a value that is no non-empty list of distinct values, or more than
            two keys on one entry.
    """
    if not isinstance(spec, Mapping) or not spec:
        raise _error(f"sweep maps methods.<index>.<option> to a list of values, got {spec!r}")
    by_entry: dict[int, dict[str, list[Any]]] = {}
    for key, values in flatten_sweep(spec).items():
        match = SWEEP_KEY.fullmatch(key)
        if not match:
            raise _error(f"sweep.{key}: only method options are swept, as methods.<index>.<option>")
        index, option = int(match[1]), match[2]
        if index >= len(methods):
            raise _error(f"sweep.{key}: the recipe has {len(methods)} method(s)")
        if option in FIXED_KEYS:
            raise _error(f"sweep.{key}: {option!r} cannot be swept")
        if not isinstance(values, list) or not values:
            raise _error(f"sweep.{key} must list at least one value, got {values!r}")
        if len({repr(value) for value in values}) != len(values):
            raise _error(f"sweep.{key} lists a value twice: {values}")
        by_entry.setdefault(index, {})[option] = values
        if len(by_entry[index]) > MAX_KEYS_PER_ENTRY:
            raise _error(f"sweep: methods.{index} has more than {MAX_KEYS_PER_ENTRY} swept keys")
    return by_entry


def entry_origins(data: Mapping[str, Any]) -> list[int]:
    """For each entry of the expanded ``methods``, the index it had in the recipe as written.

    Raises:
        PydanticCustomError: As :func:`parse_sweep`.
    """
    methods = data.get("methods")
    if data.get("sweep") is None or not isinstance(methods, list):
        return list(range(len(methods))) if isinstance(methods, list) else []
    by_entry = parse_sweep(data["sweep"], methods)
    counts = [math.prod(len(v) for v in by_entry.get(i, {}).values()) for i in range(len(methods))]
    return [index for index, count in enumerate(counts) for _ in range(count)]


def written_indices(points_of: list[str | None]) -> list[int]:
    """Like :func:`entry_origins`, from the expanded entries' ``sweep_point.of`` (or None).

    The points of one swept entry are adjacent; every other entry is one of its own.
    """
    indices, previous = [], None
    for of in points_of:
        if of is None or of != previous:
            indices.append(indices[-1] + 1 if indices else 0)
        else:
            indices.append(indices[-1])
        previous = of
    return indices


def _checked_values(
    entry: dict[str, Any], index: int, option: str, values: list[Any], model: type[BaseModel]
) -> list[Any]:
    """The values as the entry's model stores them; one naming the key if it is rejected."""
    if option not in model.model_fields:
        valid = ", ".join(key for key in model.model_fields if key not in FIXED_KEYS)
        raise _error(f"sweep.methods.{index}.{option}: unknown key; valid keys here: {valid}")
    checked = []
    for value in values:
        try:
            checked.append(getattr(model.model_validate({**entry, option: value}), option))
        except ValidationError as error:
            rejected = [e for e in error.errors() if e["loc"] and e["loc"][0] == option]
            if rejected:
                raise _error(
                    f"sweep.methods.{index}.{option}: value {value!r} is rejected: "
                    f"{rejected[0]['msg']}"
                ) from None
            checked.append(value)  # another key of the entry is wrong: validation says so
    return checked


def point_label(base: str, values: Mapping[str, Any]) -> str:
    """``mae-mask_ratio=0.75`` (``/`` in a value becomes ``_``: labels are folder names)."""
    text = "-".join(f"{key}={value}" for key, value in values.items())
    return f"{base}-{text}".replace("/", "_")


def expand_sweep(data: Any, entry_model: Callable[[str], type[BaseModel] | None]) -> Any:
    """A raw recipe with its ``sweep`` expanded into ``methods`` (unchanged without one).

    Args:
        data: The raw recipe mapping.
        entry_model: The entry model of a method name (``None`` for an unknown method,
            which validation then reports).

    Returns:
        A copy whose swept entries are replaced, in place, by one entry per point (the
        product of the values of their keys), each with its ``label`` and ``sweep_point``;
        ``sweep`` holds the flattened spec.
    """
    if not isinstance(data, Mapping) or data.get("sweep") is None:
        return data
    methods = data.get("methods")
    if not isinstance(methods, list) or not all(isinstance(m, Mapping) for m in methods):
        return data  # validation of ``methods`` reports it
    by_entry = parse_sweep(data["sweep"], methods)
    expanded: list[Any] = []
    for index, entry in enumerate(methods):
        model = entry_model(str(entry.get("name")))
        if index not in by_entry or model is None:
            expanded.append(entry)
            continue
        options = {
            option: _checked_values(dict(entry), index, option, values, model)
            for option, values in by_entry[index].items()
        }
        base = entry.get("label") or entry["name"]
        for combination in itertools.product(*options.values()):
            values = dict(zip(options, combination, strict=True))
            point = {"of": base, "values": values}
            label = point_label(base, values)
            expanded.append({**entry, **values, "label": label, "sweep_point": point})
    return {**data, "methods": expanded, "sweep": flatten_sweep(data["sweep"])}
