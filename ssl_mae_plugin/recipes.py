"""The recipe schema: a typed, validated :class:`Recipe` (pydantic).

Every key is typed and has its default in exactly one place: the data, budget and trainer
sections below; each method's keys come from its constructor (so a registered method's
arguments become recipe keys); the evaluation sections from the signatures of the
functions that run them. Values are checked by the same code that uses them (a method's
:meth:`~ssl_mae_plugin.methods.base.SSLMethod.check_options`, the protocols' ``check_*``
functions), called here before any work starts. :mod:`ssl_mae_plugin.recipe_loading`
reads YAML files and overrides and turns every problem into a one-line
:class:`RecipeError` naming the key and the value.
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import pydantic
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ssl_mae_plugin.data import DATASETS, default_normalization
from ssl_mae_plugin.evaluation.classifier import check_training_options
from ssl_mae_plugin.evaluation.finetune import check_finetune_options, finetune
from ssl_mae_plugin.evaluation.knn import check_knn_options, knn_classify
from ssl_mae_plugin.evaluation.linear import augmented_linear_probe, linear_probe
from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.registry import get_method, list_methods
from ssl_mae_plugin.sweeps import expand_sweep, written_indices


class RecipeError(ValueError):
    """A recipe problem; the message names the key and the offending value."""


class Section(pydantic.BaseModel):
    """A recipe section: typed (no silent conversions), unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _number_as_text(value: Any) -> Any:
    """YAML reads ``precision: 32`` as a number; the key is a string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


RGB = Annotated[list[float], Field(min_length=3, max_length=3)]
Positive = Annotated[int, Field(gt=0)]


class DataConfig(Section):
    """``data:`` where images come from and how big they are."""

    dataset: Literal[DATASETS] = "imagefolder"  # type: ignore[valid-type]
    root: str | None = None  # imagefolder: holds <train_split>/<class>/* and <val_split>/...
    train_split: str = "train"
    val_split: str | None = None  # null: "test"; imagefolder: "val" ("test" if only that exists)
    image_size: Positive = 224
    num_workers: Annotated[int, Field(ge=0)] = 4
    download: bool = False  # cifar10/cifar100/stl10: download into root when missing
    on_bad_image: Literal["skip", "error"] = "skip"
    mean: RGB | None = None  # normalisation; null: the dataset's usual one
    std: RGB | None = None
    max_train_images: Positive | None = None  # a fixed, class-balanced subset (quick runs)
    max_val_images: Positive | None = None
    in_memory: bool = False  # decode the training images once, crop + flip on the device
    # reduced: draw MAE's crop box first, then decode the JPEG at 1/2, 1/4 or 1/8 of its
    # size where the box keeps the output size (imagefolder; see pretrain/decoding.py)
    decode: Literal["full", "reduced"] = "full"

    @model_validator(mode="after")
    def _resolve(self) -> DataConfig:
        if self.dataset != "mnist5k" and self.root is None:
            raise PydanticCustomError("recipe", f"root is required for dataset {self.dataset!r}")
        if self.decode == "reduced" and (self.dataset != "imagefolder" or self.in_memory):
            raise PydanticCustomError(
                "recipe",
                "decode 'reduced' reads image files: it needs dataset 'imagefolder' and "
                "in_memory false",
            )
        if self.val_split is None:
            root = Path(self.root or ".").expanduser()
            test_only = (root / "test").is_dir() and not (root / "val").is_dir()
            folder = self.dataset == "imagefolder" and not test_only
            self.val_split = "val" if folder else "test"
        usual = default_normalization(self.dataset)
        self.mean = self.mean or list(usual.mean)
        self.std = self.std or list(usual.std)
        return self


class PretrainConfig(Section):
    """``pretrain:`` the shared budget; each method's own keys override the shared ones."""

    epochs: Positive = 100
    batch_size: Positive = 256  # global batch of one forward/backward pass
    # Gradients of this many batches are summed before each optimizer step (the official
    # code's accum_iter): the learning rate and the schedule follow the effective batch.
    accumulate_grad_batches: Positive = 1
    checkpoint_every_n_steps: Positive | None = None  # besides the end of every epoch
    # A checkpoint trained with other settings than the recipe's stops the run (exit 2);
    # true moves such a method's folder aside (<label>.stale-<time>) and trains it anew.
    retrain: bool = False
    # Shared method keys: null leaves each method its own default.
    blr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    min_lr: float | None = None
    online_probe: bool | None = None

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step: ``batch_size * accumulate_grad_batches``."""
        return self.batch_size * self.accumulate_grad_batches

    SHARED: ClassVar[tuple[str, ...]] = (
        "blr",
        "weight_decay",
        "warmup_epochs",
        "min_lr",
        "online_probe",
    )


LoggerName = Literal["csv", "tensorboard", "wandb", "mlflow"]


class TrainerConfig(Section):
    """``trainer:`` the Lightning Trainer."""

    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: Positive | Literal["auto"] = 1
    num_nodes: Positive = 1
    precision: Annotated[
        Literal["32", "bf16-mixed", "16-mixed", "bf16-true"], BeforeValidator(_number_as_text)
    ] = "32"
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"] = "auto"
    progress_bar: bool = True
    log_every_n_steps: Positive = 50
    # Lightning loggers: csv (logs/ beside metrics.csv), tensorboard, wandb (offline with
    # WANDB_MODE=offline), mlflow (a file store in the method's folder unless
    # MLFLOW_TRACKING_URI says otherwise); one or a list.
    logger: LoggerName | list[LoggerName] = "csv"

    @property
    def loggers(self) -> list[str]:
        """The logger names as a list."""
        return [self.logger] if isinstance(self.logger, str) else list(self.logger)

    @property
    def show_progress(self) -> bool:
        """Progress bars when the recipe asks for them and a terminal is there to show them."""
        return self.progress_bar and sys.stderr.isatty()


# -- sections from signatures --------------------------------------------------------------


def signature_fields(
    functions: list[Callable[..., Any]], keys: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Pydantic fields ``{name: (type, default)}`` from the parameters of ``functions``.

    Later functions override earlier ones (pass a class hierarchy base first). Without
    ``keys`` every named parameter with a type hint is taken.
    """
    fields: dict[str, Any] = {}
    for function in functions:
        hints = typing.get_type_hints(function)
        for name, param in inspect.signature(function).parameters.items():
            if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            if (keys is None and name in hints) or (keys is not None and name in keys):
                required = param.default is inspect.Parameter.empty
                fields[name] = (hints.get(name, Any), ... if required else param.default)
    return fields


class ProtocolSection(Section):
    """An evaluation section: its keys are arguments of the function that runs it."""

    check: ClassVar[Callable[..., None]]

    @model_validator(mode="after")
    def _check_values(self) -> ProtocolSection:
        values = self.model_dump(exclude={"mode"})
        try:
            type(self).check(**values)
        except ValueError as error:
            raise PydanticCustomError("recipe", str(error)) from error
        return self

    def options(self) -> dict[str, Any]:
        """The keyword arguments of the protocol function."""
        return self.model_dump(exclude={"mode"})


def _protocol(name: str, function: Callable, keys: tuple[str, ...], check: Callable, **extra):
    model = create_model(
        name, __base__=ProtocolSection, **signature_fields([function], keys), **extra
    )
    model.check = staticmethod(check)
    return model


TRAINING_KEYS = ("epochs", "warmup_epochs", "batch_size", "blr", "weight_decay")
KNNConfig = _protocol("KNNConfig", knn_classify, ("k", "temperature"), check_knn_options)
CachedLinearConfig = _protocol(
    "CachedLinearConfig",
    linear_probe,
    TRAINING_KEYS,
    check_training_options,
    mode=(Literal["cached"], "cached"),
)
AugmentedLinearConfig = _protocol(
    "AugmentedLinearConfig",
    augmented_linear_probe,
    TRAINING_KEYS,
    check_training_options,
    mode=(Literal["augmented"], "augmented"),
)
FINETUNE_KEYS = (
    *TRAINING_KEYS,
    *("min_lr", "layer_decay", "drop_path", "mixup", "cutmix", "label_smoothing"),
    *("auto_augment", "re_prob", "global_pool"),
)
FinetuneConfig = _protocol("FinetuneConfig", finetune, FINETUNE_KEYS, check_finetune_options)


def _linear_mode(value: Any) -> str:
    mode = value.get("mode", "cached") if isinstance(value, dict) else getattr(value, "mode", "")
    return str(mode)


LinearConfig = Annotated[
    Union[  # noqa: UP007 (a tagged union)
        Annotated[CachedLinearConfig, Tag("cached")],
        Annotated[AugmentedLinearConfig, Tag("augmented")],
    ],
    Discriminator(_linear_mode),
]


class EvalConfig(Section):
    """``eval:`` what to measure after pretraining (null disables a part)."""

    knn: KNNConfig | None = Field(default_factory=KNNConfig)  # type: ignore[valid-type]
    linear: LinearConfig | None = Field(default_factory=CachedLinearConfig)  # type: ignore
    finetune: FinetuneConfig | None = None  # type: ignore[valid-type]
    random_init: bool = True  # also evaluate each method's untrained control
    pixels: bool = True  # a raw-pixels row (k-NN, cached probe) for images up to 64 px
    reference: str | None = None  # the row the paired table compares with; null: the first
    batch_size: Positive = 256  # feature extraction
    cache_features: bool = True


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


class Recipe(Section):
    """A whole recipe: data, the methods to compare, the budget, the trainer, evaluation."""

    name: str
    methods: list[MethodEntry] = Field(min_length=1)
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
            if entry.label in seen or entry.label == "random_init" or "/" in entry.label:
                raise PydanticCustomError(
                    "recipe",
                    f"methods.{index}.label {entry.label!r} is taken or reserved; "
                    "give each entry a distinct 'label'",
                )
            seen.add(entry.label)
            self._check_method(index, entry)
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


@functools.cache
def _recipe_model(methods: tuple[tuple[str, type[SSLMethod]], ...]) -> type[Recipe]:
    entries = [Annotated[method_entry_model(n, m), Tag(n)] for n, m in methods]
    entry_type = Annotated[Union[tuple(entries)], Discriminator(_method_name)]  # noqa: UP007
    return create_model("Recipe", __base__=Recipe, methods=(list[entry_type], Field(min_length=1)))


def _known_entry_model(name: str) -> type[MethodEntry] | None:
    """The entry model of a registered method, ``None`` for another name."""
    return method_entry_model(name, get_method(name)) if name in list_methods() else None


def _method_name(value: Any) -> str | None:
    name = value.get("name") if isinstance(value, dict) else getattr(value, "name", None)
    return name if isinstance(name, str) else None


def recipe_model() -> type[Recipe]:
    """The :class:`Recipe` model for the methods registered now."""
    return _recipe_model(tuple((name, get_method(name)) for name in list_methods()))
