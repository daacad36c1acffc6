"""Recipes: YAML -> a typed, validated :class:`Recipe`, with dotted command-line overrides.

Every key and its default is declared once, in the dataclasses below. Unknown keys, wrong
types and impossible values are :class:`RecipeError` naming the key, raised before any
work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssl_mae_plugin.backbones import available_backbones, is_known_backbone, is_vit
from ssl_mae_plugin.data import BAD_IMAGE_POLICIES, DATASETS
from ssl_mae_plugin.methods.base import OPTIMIZERS, SSLMethod
from ssl_mae_plugin.methods.registry import UnknownMethodError, get_method


class RecipeError(ValueError):
    """A recipe problem; the message names the key and the offending value."""


def _choice(default: Any, choices: tuple[Any, ...]) -> Any:
    """A field whose value must be one of ``choices``."""
    return field(default=default, metadata={"choices": choices})


@dataclass
class DataConfig:
    """``data:`` where images come from and how big they are."""

    dataset: str = _choice("imagefolder", DATASETS)
    root: str | None = None  # imagefolder: holds <train_split>/<class>/* and <val_split>/...
    train_split: str = "train"
    val_split: str | None = None  # null: "test"; imagefolder: "val" ("test" if only that exists)
    image_size: int = 224
    num_workers: int = 4
    download: bool = False  # cifar10/cifar100/stl10: download into root when missing
    on_bad_image: str = _choice("skip", BAD_IMAGE_POLICIES)
    mean: list[float] | None = None  # normalisation; the dataset's usual one when null
    std: list[float] | None = None
    max_train_images: int | None = None  # a fixed, class-balanced subset (quick runs)
    max_val_images: int | None = None
    in_memory: bool = False  # decode the training images once, crop + flip on the device


@dataclass
class PretrainConfig:
    """``pretrain:`` the shared budget; per-method keys override blr/decay/warmup."""

    epochs: int = 100
    batch_size: int = 256  # global batch; lr = blr * batch_size / 256
    blr: float | None = None  # null: each method's paper default
    weight_decay: float | None = None
    warmup_epochs: float | None = None  # null: each method's default fraction of epochs
    min_lr: float = 0.0
    online_probe: bool = False
    checkpoint_every_n_steps: int | None = None  # besides the end of every epoch


@dataclass
class TrainerConfig:
    """``trainer:`` the Lightning Trainer."""

    accelerator: str = _choice("auto", ("auto", "cpu", "gpu", "cuda", "mps"))
    devices: int | str = 1
    num_nodes: int = 1
    precision: str = _choice("32", ("32", "bf16-mixed", "16-mixed", "bf16-true"))
    strategy: str = _choice("auto", ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"))
    progress_bar: bool = True
    log_every_n_steps: int = 50


@dataclass
class KNNConfig:
    """``eval.knn:`` weighted k-NN on frozen features."""

    k: int = 200
    temperature: float = 0.1


@dataclass
class LinearConfig:
    """``eval.linear:`` linear probe on frozen features (BatchNorm + Linear, as the paper).

    ``cached``: features computed once, SGD, 100 epochs, batch 1024, blr 0.1.
    ``augmented``: the paper's protocol, RandomResizedCrop + flip every epoch, LARS,
    90 epochs (10 warmup), batch 16384, blr 0.1. ``null`` takes the mode's default.
    """

    mode: str = _choice("cached", ("cached", "augmented"))
    epochs: int | None = None
    batch_size: int | None = None
    blr: float | None = None


@dataclass
class FinetuneConfig:
    """``eval.finetune:`` end-to-end fine-tuning (ViT backbones)."""

    epochs: int = 100
    batch_size: int = 1024
    blr: float = 5e-4
    layer_decay: float = 0.75
    drop_path: float = 0.1
    warmup_epochs: float = 5
    weight_decay: float = 0.05
    mixup: float = 0.8
    cutmix: float = 1.0
    label_smoothing: float = 0.1
    global_pool: bool = True


@dataclass
class EvalConfig:
    """``eval:`` what to measure after pretraining (null disables a part)."""

    knn: KNNConfig | None = field(default_factory=KNNConfig)
    linear: LinearConfig | None = field(default_factory=LinearConfig)
    finetune: FinetuneConfig | None = None
    random_init: bool = True  # also evaluate each backbone untrained
    batch_size: int = 256  # feature extraction
    cache_features: bool = True


@dataclass
class Recipe:
    """A whole recipe: data, the methods to compare, the budget, the trainer, evaluation."""

    name: str
    methods: list[dict[str, Any]]
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``."""
        return Path(self.output_dir) / self.name

    def method_dir(self, index: int) -> Path:
        """``<output_dir>/<name>/<label>`` of method ``index``."""
        return self.run_dir / self.methods[index]["label"]


# Keys of a method entry that the recipe fills in from other sections.
INJECTED_KEYS = {
    "image_size": "data.image_size",
    "num_classes": "the dataset",
    "batch_size": "pretrain.batch_size",
    "seed": "seed",
}
# Keys of a method entry that default to the pretrain section.
SHARED_KEYS = ("blr", "weight_decay", "warmup_epochs", "min_lr", "online_probe")
ENTRY_KEYS = ("name", "label")


# -- loading --------------------------------------------------------------------------------


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

    The value is parsed as YAML (``0.9`` a float, ``true`` a bool, ``null`` None).
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
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]))
    last = parts[-1]
    if isinstance(node, list):
        index = _list_index(node, last, key)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise RecipeError(f"override {key!r}: {'.'.join(parts[:-1])} is not a mapping or list")


def _child(node: Any, part: str, path: str) -> Any:
    """The item ``part`` of a mapping or list; a missing (or null) section becomes ``{}``."""
    if isinstance(node, list):
        return node[_list_index(node, part, path)]
    if not isinstance(node, dict):
        raise RecipeError(f"override {path!r}: the parent is not a mapping or list")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _list_index(node: list[Any], part: str, path: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise RecipeError(f"override {path!r}: no list item {part!r} (the list has {len(node)})")
    return int(part)


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Type-check and validate a raw recipe mapping."""
    recipe = _build(Recipe, raw, "")
    _fill_defaults(recipe)
    _check_values(recipe)
    recipe.methods = [
        _method_entry(entry, recipe, f"methods.{index}")
        for index, entry in enumerate(recipe.methods)
    ]
    _check_labels(recipe)
    return recipe


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the recipe"
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {_show(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise RecipeError(
            f"unknown key '{prefix}{unknown[0]}'; valid keys here: {', '.join(fields)}"
        )
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            missing = spec.default is dataclasses.MISSING
            if missing and spec.default_factory is dataclasses.MISSING:
                raise RecipeError(f"missing key {key!r}")
            continue
        value = _convert(hints[name], raw[name], key)
        choices = spec.metadata.get("choices")
        if choices is not None and value not in choices:
            raise RecipeError(
                f"{key} must be one of {', '.join(map(str, choices))}: {_show(value)}"
            )
        values[name] = value
    return cls(**values)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, key)
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except RecipeError as error:
                errors.append(error)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise RecipeError(f"{key} must be {names}, got {_show(value)}") from errors[-1]
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, f"{key}.")
    if origin is list:
        if not isinstance(value, list):
            raise RecipeError(f"{key} must be a list, got {_show(value)}")
        return [_convert(args[0], item, f"{key}.{i}") for i, item in enumerate(value)]
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise RecipeError(f"{key} must be a mapping, got {_show(value)}")
        return value
    return _scalar(hint, value, key)


# YAML types each scalar type accepts (a YAML number is a fine string: ``precision: 32``).
ACCEPTED_TYPES: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str, int, float),
}


def _scalar(hint: type, value: Any, key: str) -> Any:
    accepted = ACCEPTED_TYPES.get(hint, (hint,))
    if isinstance(value, accepted) and (hint is bool or not isinstance(value, bool)):
        return hint(value)
    raise RecipeError(f"{key} must be {_type_name(hint)}, got {_show(value)}")


def _type_name(hint: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "null"


def _fill_defaults(recipe: Recipe) -> None:
    if recipe.data.val_split is None:
        recipe.data.val_split = "test"
        if recipe.data.dataset == "imagefolder":
            root = Path(recipe.data.root or ".").expanduser()
            has_test_only = (root / "test").is_dir() and not (root / "val").is_dir()
            recipe.data.val_split = "test" if has_test_only else "val"


def _check_values(recipe: Recipe) -> None:
    positive = {
        "data.image_size": recipe.data.image_size,
        "pretrain.epochs": recipe.pretrain.epochs,
        "pretrain.batch_size": recipe.pretrain.batch_size,
        "eval.batch_size": recipe.eval.batch_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise RecipeError(f"{key} must be positive, got {value}")
    if recipe.data.num_workers < 0:
        raise RecipeError(f"data.num_workers must be >= 0, got {recipe.data.num_workers}")
    for key in ("max_train_images", "max_val_images"):
        value = getattr(recipe.data, key)
        if value is not None and value <= 0:
            raise RecipeError(f"data.{key} must be positive, got {value}")
    for key in ("mean", "std"):
        value = getattr(recipe.data, key)
        if value is not None and len(value) != 3:
            raise RecipeError(f"data.{key} must list 3 numbers (RGB), got {value}")
    if recipe.data.dataset != "mnist5k" and recipe.data.root is None:
        raise RecipeError(f"data.root is required for dataset {recipe.data.dataset!r}")
    if not recipe.name or "/" in recipe.name:
        raise RecipeError(f"name must be a non-empty folder name, got {recipe.name!r}")
    if not recipe.methods:
        raise RecipeError("methods must list at least one method")
    devices = recipe.trainer.devices
    if isinstance(devices, str) and devices != "auto" and not devices.isdigit():
        raise RecipeError(f"trainer.devices must be a number or 'auto', got {devices!r}")
    if isinstance(devices, int) and devices > 0:
        world = devices * recipe.trainer.num_nodes
        if recipe.pretrain.batch_size % world:
            raise RecipeError(
                f"pretrain.batch_size={recipe.pretrain.batch_size} is not divisible by the "
                f"{world} devices"
            )
    if recipe.eval.knn is not None and recipe.eval.knn.k <= 0:
        raise RecipeError(f"eval.knn.k must be positive, got {recipe.eval.knn.k}")


def method_parameters(method: type[SSLMethod]) -> dict[str, inspect.Parameter]:
    """Constructor parameters of a method, its own and the shared :class:`SSLMethod` ones."""
    parameters: dict[str, inspect.Parameter] = {}
    for cls in reversed(method.__mro__):
        if isinstance(cls, type) and issubclass(cls, SSLMethod):
            for name, param in inspect.signature(cls.__init__).parameters.items():
                if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    parameters[name] = param
    return parameters


def _method_entry(entry: Any, recipe: Recipe, key: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise RecipeError(f"{key} must be a mapping with a 'name', got {_show(entry)}")
    if "name" not in entry:
        raise RecipeError(f"missing key '{key}.name'")
    try:
        method = get_method(str(entry["name"]))
    except UnknownMethodError as error:
        raise RecipeError(f"{key}.name: {error}") from error
    parameters = method_parameters(method)
    hints = _constructor_hints(method)
    checked: dict[str, Any] = {"name": str(entry["name"]), "label": str(entry["name"])}
    for name, value in entry.items():
        if name in ENTRY_KEYS:
            checked[name] = str(value)
            continue
        if name in INJECTED_KEYS:
            raise RecipeError(f"{key}.{name} is set by {INJECTED_KEYS[name]}, not per method")
        if name not in parameters:
            valid = [p for p in parameters if p not in INJECTED_KEYS]
            raise RecipeError(
                f"unknown key '{key}.{name}' for method {checked['name']!r}; "
                f"valid keys: {', '.join([*ENTRY_KEYS, *valid])}"
            )
        hint = hints.get(name, Any)
        checked[name] = _convert(hint, value, f"{key}.{name}")
    for shared in SHARED_KEYS:
        if shared not in entry:
            checked[shared] = getattr(recipe.pretrain, shared)
    _check_method_values(checked, method, parameters, recipe, key)
    return checked


def _constructor_hints(method: type[SSLMethod]) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for cls in reversed(method.__mro__):
        if isinstance(cls, type) and issubclass(cls, SSLMethod):
            hints.update(typing.get_type_hints(cls.__init__))
    hints.pop("return", None)
    return hints


def _check_method_values(
    entry: dict[str, Any],
    method_class: type[SSLMethod],
    parameters: dict[str, inspect.Parameter],
    recipe: Recipe,
    key: str,
) -> None:
    backbone = entry.get("backbone", parameters["backbone"].default)
    if not is_known_backbone(backbone):
        raise RecipeError(
            f"{key}.backbone: unknown backbone {backbone!r}; choose from "
            f"{', '.join(available_backbones())} or a timm model name"
        )
    patch_size = entry.get("patch_size", parameters["patch_size"].default)
    if is_vit(backbone) and recipe.data.image_size % patch_size:
        raise RecipeError(
            f"data.image_size={recipe.data.image_size} is not divisible by "
            f"{key}.patch_size={patch_size}"
        )
    if recipe.data.in_memory and method_class.device_crop_scale is None:
        raise RecipeError(
            f"data.in_memory makes MAE's crop + flip views on the device; {key}.name "
            f"{entry['name']!r} needs its own transform (set data.in_memory=false)"
        )
    mask_ratio = entry.get("mask_ratio")
    if mask_ratio is not None and not 0 <= mask_ratio < 1:
        raise RecipeError(f"{key}.mask_ratio must be in [0, 1), got {mask_ratio}")
    optimizer = entry.get("optimizer")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise RecipeError(f"{key}.optimizer must be one of {', '.join(OPTIMIZERS)}: {optimizer!r}")


def _check_labels(recipe: Recipe) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(recipe.methods):
        if entry["label"] in seen:
            raise RecipeError(
                f"methods.{index}: a second {entry['label']!r}; give it a distinct 'label'"
            )
        if entry["label"] == "random_init" or "/" in entry["label"]:
            raise RecipeError(f"methods.{index}.label {entry['label']!r} is not allowed")
        seen.add(entry["label"])
