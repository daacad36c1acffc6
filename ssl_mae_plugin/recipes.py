"""The recipe schema: a typed, validated :class:`Recipe` (pydantic).

Every key is typed and has its default in exactly one place: the data, budget and trainer
sections below; each method's keys come from its constructor (so a registered method's
arguments become recipe keys); the evaluation sections from the signatures of the
functions that run them. Values are checked by the same code that uses them (a method's
:meth:`~ssl_mae_plugin.methods.base.SSLMethod.check_options`, the protocols' ``check_*``
functions), called here before any work starts. :mod:`ssl_mae_plugin.recipe_loading`
reads YAML files and overrides and turns every problem into a one-line
:class:`RecipeError` naming the key and the value. The sections other than the methods are
in :mod:`ssl_mae_plugin.recipe_sections`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.registry import get_method, list_methods
from ssl_mae_plugin.recipe_sections import (
    RGB,
    DataConfig,
    EvalConfig,
    PretrainConfig,
    RecipeError,
    Section,
    TrainerConfig,
    WeightsFormat,
    signature_fields,
)
from ssl_mae_plugin.sweeps import expand_sweep, written_indices

# The sections are defined in recipe_sections and are part of this module's API.
__all__ = [
    "DataConfig",
    "EvalConfig",
    "MethodEntry",
    "ModelEntry",
    "PretrainConfig",
    "Recipe",
    "RecipeError",
    "SweepPoint",
    "TrainerConfig",
    "method_entry_model",
    "recipe_model",
]


# -- methods ---------------------------------------------------------------------------------

# Constructor arguments that the recipe fills in from other sections.
INJECTED_KEYS = {
    "image_size": "data.image_size",
    "num_classes": "the dataset",
    "batch_size": "pretrain.batch_size x pretrain.accumulate_grad_batches",
    "seed": "seed",
}


class SweepPoint(Section):
    """Which entry of a sweep an expanded entry is, and its swept values."""

    of: str  # the label of the swept entry
    values: dict[str, Any]


class MethodEntry(Section):
    """One entry of ``methods:``; each registered method gets a subclass with its keys."""

    name: str
    label: str | None = None  # the row and folder name; the method's name when omitted
    sweep_point: SweepPoint | None = None  # set by the expansion of ``sweep:``

    method: ClassVar[type[SSLMethod]]

    def options(self) -> dict[str, Any]:
        """The constructor arguments this entry gives (all of them, defaults included)."""
        return self.model_dump(exclude={"name", "label", "sweep_point"})


def method_entry_model(name: str, method: type[SSLMethod]) -> type[MethodEntry]:
    """The entry model of a method: ``name`` plus its constructor's arguments and defaults."""
    constructors = [
        cls.__init__
        for cls in reversed(method.__mro__)
        if isinstance(cls, type) and issubclass(cls, SSLMethod)
    ]
    fields = signature_fields(constructors)
    for key in INJECTED_KEYS:
        fields.pop(key, None)
    model = create_model(
        f"{method.__name__}Entry", __base__=MethodEntry, name=(Literal[name], ...), **fields
    )
    model.method = method
    return model


class ModelEntry(Section):
    """One entry of ``models:``: weights evaluated like a trained row, without pretraining.

    ``format: auto`` tells the kind from the file: a folder with ``config.json`` is a
    Hugging Face model, a file with our ``ssl_method`` entry one of our checkpoints, a
    facebookresearch/mae state dict an official file, anything else a plain state dict
    (which needs ``architecture``). See :mod:`ssl_mae_plugin.model_sources`.
    """

    label: str
    weights: str | None = None  # a file or folder; null with format timm: timm's download
    format: WeightsFormat = "auto"
    architecture: str | None = None  # timm, state_dict: the model (timm name or ours)
    # The normalisation the weights expect; null: what the source says (official and
    # Hugging Face: ImageNet's or its preprocessor's; timm: its pretrained_cfg; our
    # checkpoints: their run's), else the recipe's data.mean / data.std.
    mean: RGB | None = None
    std: RGB | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelEntry:
        if self.weights is None and self.format != "timm":
            raise PydanticCustomError(
                "recipe", "weights is required (only format 'timm' can download its own)"
            )
        if self.format in ("timm", "state_dict") and not self.architecture:
            raise PydanticCustomError(
                "recipe", f"architecture is required for format {self.format!r} (a model name)"
            )
        if (self.mean is None) != (self.std is None):
            raise PydanticCustomError("recipe", "mean and std go together: set both or neither")
        return self


class Recipe(Section):
    """A whole recipe: data, the methods to compare, the budget, the trainer, evaluation."""

    name: str
    methods: list[MethodEntry] = Field(default_factory=list)
    # Models evaluated beside the trained rows (published weights, earlier runs).
    models: list[ModelEntry] = Field(default_factory=list)
    seed: int = 0
    # Several seeds: each method is pretrained and evaluated once per seed; the report
    # gives means, per-seed values and intervals over seeds. ``seed`` is then the first.
    seeds: list[int] | None = Field(default=None, min_length=1)
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    # ``{methods.<index>.<option>: [values]}``; expanded into ``methods`` on validation
    # (see :mod:`ssl_mae_plugin.sweeps`), so dumps hold the expanded entries instead.
    sweep: dict[str, list[Any]] | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _expand_sweep(cls, data: Any) -> Any:
        return expand_sweep(data, _known_entry_model)

    @property
    def run_dir(self) -> Path:
        """``<output_dir>/<name>``."""
        return Path(self.output_dir) / self.name

    @property
    def all_seeds(self) -> list[int]:
        """The seeds the recipe trains each method with (``seeds``, else ``[seed]``)."""
        return list(self.seeds or [self.seed])

    def with_seed(self, seed: int) -> Recipe:
        """The recipe of one of its seeds (same methods, data and budget)."""
        return self.model_copy(update={"seed": seed})

    def method_dir(self, index: int) -> Path:
        """The folder of method ``index`` for this recipe's seed.

        ``<output_dir>/<name>/<label>`` for the first seed, ``.../<label>/seed-<seed>`` for
        the others.
        """
        folder = self.run_dir / self.methods[index].label
        return folder if self.seed == self.all_seeds[0] else folder / f"seed-{self.seed}"

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if not self.name or "/" in self.name:
            raise PydanticCustomError("recipe", f"name must be a folder name, got {self.name!r}")
        if not self.methods and not self.models:
            raise PydanticCustomError(
                "recipe", "a recipe needs methods to pretrain or models to evaluate (or both)"
            )
        if self.seeds is not None:
            if len(set(self.seeds)) != len(self.seeds):
                raise PydanticCustomError("recipe", f"seeds must differ, got {self.seeds}")
            if "seed" in self.model_fields_set and self.seed != self.seeds[0]:
                raise PydanticCustomError(
                    "recipe", f"seed={self.seed} is not the first of seeds={self.seeds}"
                )
            self.seed = self.seeds[0]
        seen: set[str] = set()
        written = written_indices([e.sweep_point and e.sweep_point.of for e in self.methods])
        for index, entry in zip(written, self.methods, strict=True):
            for key in PretrainConfig.SHARED:
                if key not in entry.model_fields_set and getattr(self.pretrain, key) is not None:
                    setattr(entry, key, getattr(self.pretrain, key))
            entry.label = entry.label or entry.name
            _claim_label(seen, entry.label, f"methods.{index}")
            self._check_method(index, entry)
        for index, model in enumerate(self.models):
            _claim_label(seen, model.label, f"models.{index}")
        reference = self.eval.reference
        if reference is not None and reference not in [*seen, "pixels"]:
            raise PydanticCustomError(
                "recipe",
                f"eval.reference {reference!r} is no row; choose a method label "
                f"({', '.join(seen)}) or 'pixels'",
            )
        devices = self.trainer.devices
        if isinstance(devices, int) and self.pretrain.batch_size % (
            devices * self.trainer.num_nodes
        ):
            raise PydanticCustomError(
                "recipe",
                f"pretrain.batch_size={self.pretrain.batch_size} is not divisible by the "
                f"{devices * self.trainer.num_nodes} devices",
            )
        return self

    def _check_method(self, index: int, entry: MethodEntry) -> None:
        point = entry.sweep_point
        where = f"methods.{index}" if point is None else f"sweep point {entry.label}"
        if point is not None and any(getattr(entry, k, v) != v for k, v in point.values.items()):
            raise PydanticCustomError("recipe", f"{where}: its sweep_point is not its options")
        try:
            entry.method.check_options({**entry.options(), "image_size": self.data.image_size})
        except ValueError as error:
            separator = "." if point is None else ": "
            raise PydanticCustomError("recipe", f"{where}{separator}{error}") from error
        if self.data.in_memory and entry.method.device_crop_scale is None:
            raise PydanticCustomError(
                "recipe",
                f"data.in_memory makes MAE's crop + flip views on the device; methods.{index} "
                f"({entry.name!r}) needs its own transform (set data.in_memory=false)",
            )


def _claim_label(seen: set[str], label: str, where: str) -> None:
    """Add a row label to ``seen``; a taken or reserved one is an error naming ``where``."""
    if label in seen or label == "random_init" or "/" in label:
        raise PydanticCustomError(
            "recipe",
            f"{where}.label {label!r} is taken or reserved; give each row a distinct 'label'",
        )
    seen.add(label)


@functools.cache
def _recipe_model(methods: tuple[tuple[str, type[SSLMethod]], ...]) -> type[Recipe]:
    entries = [Annotated[method_entry_model(n, m), Tag(n)] for n, m in methods]
    entry_type = Annotated[Union[tuple(entries)], Discriminator(_method_name)]  # noqa: UP007
    methods = (list[entry_type], Field(default_factory=list))
    return create_model("Recipe", __base__=Recipe, methods=methods)


def _known_entry_model(name: str) -> type[MethodEntry] | None:
    """The entry model of a registered method, ``None`` for another name."""
    return method_entry_model(name, get_method(name)) if name in list_methods() else None


def _method_name(value: Any) -> str | None:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if isinstance(name, str) else None


def recipe_model() -> type[Recipe]:
    """The :class:`Recipe` model for the methods registered now."""
    return _recipe_model(tuple((name, get_method(name)) for name in list_methods()))
