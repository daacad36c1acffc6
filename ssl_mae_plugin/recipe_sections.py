"""The sections of a recipe besides its methods: data, pretrain, trainer and eval.

Typed pydantic models, each default written once; the evaluation sections take their keys
and defaults from the signatures of the functions that run them, and their values are
checked by those functions' own ``check_*`` helpers. :mod:`ssl_mae_plugin.recipes` puts
them together with the method entries into a :class:`~ssl_mae_plugin.recipes.Recipe`.
"""

from __future__ import annotations

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

from ssl_mae_plugin.data import DATASETS, FOLDER_DATASETS, default_normalization
from ssl_mae_plugin.evaluation.classifier import check_training_options
from ssl_mae_plugin.evaluation.finetune import check_finetune_options, finetune
from ssl_mae_plugin.evaluation.knn import check_knn_options, knn_classify
from ssl_mae_plugin.evaluation.linear import augmented_linear_probe, linear_probe
from ssl_mae_plugin.evaluation.vit_features import Pool


class RecipeError(ValueError):
    """A recipe problem; the message names the key and the offending value."""


class Section(pydantic.BaseModel):
    """A recipe section: typed (no silent conversions), unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _number_as_text(value: Any) -> Any:
    """YAML reads ``precision: 32`` as a number; the key is a string."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


RGB = Annotated[list[float], Field(min_length=3, max_length=3)]
# The weight files ``models:`` entries read (see ssl_mae_plugin.model_sources.FORMATS).
WeightsFormat = Literal["auto", "official", "timm", "huggingface", "checkpoint", "state_dict"]
Positive = Annotated[int, Field(gt=0)]


class DataConfig(Section):
    """``data:`` where images come from and how big they are."""

    dataset: Literal[DATASETS] = "imagefolder"  # type: ignore[valid-type]
    root: str | None = None  # imagefolder: holds <train_split>/<class>/* and <val_split>/...;
    # shards: <train_split>/ and <val_split>/ written by `ssl-mae shards` (or an s3:// URL)
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
    # size where the box keeps the output size (imagefolder, shards; see pretrain/decoding.py);
    # device: decode the JPEGs on the training device, nvJPEG on a GPU, and crop there
    # (imagefolder, shards; see pretrain/device_decode.py)
    decode: Literal["full", "reduced", "device"] = "full"

    @model_validator(mode="after")
    def _resolve(self) -> DataConfig:
        if self.dataset != "mnist5k" and self.root is None:
            raise PydanticCustomError("recipe", f"root is required for dataset {self.dataset!r}")
        if self.decode != "full" and (self.dataset not in FOLDER_DATASETS or self.in_memory):
            raise PydanticCustomError(
                "recipe",
                f"decode {self.decode!r} reads encoded images: it needs dataset 'imagefolder' "
                "or 'shards' and in_memory false",
            )
        if self.val_split is None:
            root = Path(self.root or ".").expanduser()
            test_only = (root / "test").is_dir() and not (root / "val").is_dir()
            folder = self.dataset in FOLDER_DATASETS and not test_only
            self.val_split = "val" if folder else "test"
        usual = default_normalization(self.dataset)
        self.mean = self.mean or list(usual.mean)
        self.std = self.std or list(usual.std)
        return self


class KNNMonitorConfig(Section):
    """``pretrain.knn_monitor:`` k-NN top-1 while pretraining, a curve over the epochs.

    With ``k`` and ``temperature`` of ``eval.knn``, on a fixed class-balanced subset of the
    training split (the bank) and of the validation split (the queries), each capped at the
    split's size. It only watches: it is no training setting, and the reported numbers
    stay the final model's (see :class:`ssl_mae_plugin.pretrain.knn_monitor.KNNMonitor`).
    """

    every_n_epochs: Positive = 5  # after epochs n, 2n, ... and after the last one
    bank_images: Positive = 5000
    query_images: Positive = 1000


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
    # null: off; else k-NN accuracy every n epochs into metrics.csv (not a training setting)
    knn_monitor: KNNMonitorConfig | None = None

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


class FeaturesConfig(Section):
    """``eval.features:`` the ViT features k-NN and both linear probes see.

    Applies to every row with a ViT backbone (ConvNets keep their pooled output): each
    block's tokens through the final norm, pooled, the blocks' features concatenated.
    """

    pool: Pool = "cls"  # cls | mean | cls+mean
    blocks: Positive | list[int] = 1  # the last n blocks, or block indices (-1: the last)


class TransferConfig(Section):
    """One ``eval.datasets`` entry: another dataset on which every row is evaluated.

    Images are resized to ``data.image_size`` and normalised as in pretraining (what the
    models were trained on); the other keys mean what they mean under ``data:``.
    """

    name: str | None = None  # its table and cache folder; null: the dataset (or root folder)
    dataset: Literal[DATASETS] = "imagefolder"  # type: ignore[valid-type]
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = None
    max_train_images: Positive | None = None
    max_val_images: Positive | None = None
    download: bool = False

    @model_validator(mode="after")
    def _resolve(self) -> TransferConfig:
        if self.dataset != "mnist5k" and self.root is None:
            raise PydanticCustomError("recipe", f"root is required for dataset {self.dataset!r}")
        if self.name is None:
            folder = self.dataset in FOLDER_DATASETS
            self.name = Path(self.root).expanduser().resolve().name if folder else self.dataset
        if not self.name or "/" in self.name:
            raise PydanticCustomError("recipe", f"name must be a folder name, got {self.name!r}")
        return self

    def data_section(self, data: DataConfig) -> DataConfig:
        """``data`` with this dataset's images (same size, normalisation and loading)."""
        changes = {"in_memory": False, "decode": "full", **self.model_dump(exclude={"name"})}
        return DataConfig.model_validate({**data.model_dump(), **changes})


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
    # null: each model's own features (MAE: its ``pool`` option; others: the backbone's output)
    features: FeaturesConfig | None = None
    # probe every block of each ViT row with every pooling (k-NN and the cached linear probe)
    layer_sweep: bool = False
    # more datasets on which every row is evaluated (a table each and a summary across them)
    datasets: list[TransferConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_datasets(self) -> EvalConfig:
        names = [entry.name for entry in self.datasets]
        if len(set(names)) != len(names):
            raise PydanticCustomError(
                "recipe", f"datasets: names {names} repeat; give each entry a distinct 'name'"
            )
        return self
