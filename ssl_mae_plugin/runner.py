"""Pretrain -> evaluate -> report, for every method of a recipe.

Everything a run produces lives under ``<output_dir>/<name>/``; a re-run reuses finished
checkpoints, cached features and cached evaluation results, and only redoes what is
missing or what a changed setting invalidates.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.backbones import is_vit
from ssl_mae_plugin.data import Normalization, eval_transform
from ssl_mae_plugin.evaluation import (
    TransformedDataset,
    augmented_linear_probe,
    cached_features,
    extract_features,
    feature_cache_key,
    finetune,
    knn_classify,
    linear_probe,
)
from ssl_mae_plugin.mae.visualize import save_reconstruction_figure
from ssl_mae_plugin.methods.base import SSLMethod, count_parameters
from ssl_mae_plugin.methods.mae import MAEMethod
from ssl_mae_plugin.recipes import Recipe, RecipeError
from ssl_mae_plugin.report import (
    FIGURES,
    machine_description,
    plot_accuracy_bars,
    plot_loss_curves,
    write_atomic,
    write_report,
)
from ssl_mae_plugin.training import (
    CHECKPOINT_NAME,
    build_method,
    build_split,
    data_position,
    load_pretrained,
    normalization_of,
    pretrain,
    show_progress,
    summarize,
)

logger = logging.getLogger(__name__)

# Defaults of the linear probe modes: cached features (fast) or the paper's protocol.
LINEAR_DEFAULTS = {
    "cached": {"epochs": 100, "batch_size": 1024, "blr": 0.1, "warmup_epochs": 5},
    "augmented": {"epochs": 90, "batch_size": 16384, "blr": 0.1, "warmup_epochs": 10},
}
RECONSTRUCTION_IMAGES = 6


@dataclass
class RunData:
    """The recipe's train and validation splits and how images are normalised."""

    train: Dataset
    val: Dataset
    normalization: Normalization
    num_classes: int


def prepare_data(recipe: Recipe) -> RunData:
    """Build both splits and check them against the recipe before any work starts.

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
        RecipeError: For a batch larger than the training split.
    """
    train = build_split(recipe, recipe.data.train_split, recipe.data.max_train_images)
    val = build_split(recipe, recipe.data.val_split, recipe.data.max_val_images)
    if recipe.pretrain.batch_size > len(train):
        raise RecipeError(
            f"pretrain.batch_size={recipe.pretrain.batch_size} is larger than the "
            f"{len(train)} training images (incomplete batches are dropped)"
        )
    linear = recipe.eval.linear
    if linear is not None and linear.mode == "augmented":
        batch = linear.batch_size or LINEAR_DEFAULTS["augmented"]["batch_size"]
        if batch > len(train):
            raise RecipeError(
                f"eval.linear.batch_size={batch} is larger than the {len(train)} training "
                "images; set eval.linear.batch_size"
            )
    if recipe.eval.finetune is not None and recipe.eval.finetune.batch_size > len(train):
        raise RecipeError(
            f"eval.finetune.batch_size={recipe.eval.finetune.batch_size} is larger than the "
            f"{len(train)} training images"
        )
    return RunData(train, val, normalization_of(recipe), len(train.classes))


def describe_backbone(entry: dict[str, Any]) -> str:
    """A short backbone name for tables: ``vit_tiny/4`` or ``vit_tiny/4 d4 w128``."""
    name = entry.get("backbone", "vit_tiny")
    if not is_vit(name):
        return name
    text = f"{name}/{entry.get('patch_size', 16)}"
    for key, short in (("depth", "d"), ("embed_dim", "w"), ("num_heads", "h")):
        if entry.get(key) is not None:
            text += f" {short}{entry[key]}"
    return text


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Evaluator:
    """Evaluates backbones the same way (k-NN, linear probe, fine-tuning), with caches.

    Args:
        recipe: The validated recipe.
        data: Its datasets.
    """

    def __init__(self, recipe: Recipe, data: RunData) -> None:
        self.recipe = recipe
        self.data = data
        accelerator = recipe.trainer.accelerator
        gpu = torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")
        self.device = torch.device("cuda" if gpu else "cpu")
        self.accelerator = "gpu" if gpu else "cpu"
        self.precision = recipe.trainer.precision
        self.transform = eval_transform(recipe.data.image_size, data.normalization)

    def evaluate(self, module: SSLMethod, folder: Path, identity: dict[str, Any]) -> dict:
        """k-NN / linear / fine-tune results of ``module``, reusing cached parts.

        Args:
            module: A method whose ``forward_features`` gives the evaluated features.
            folder: Where the caches of this model live.
            identity: What identifies the weights (checkpoint file or random-init seed).
        """
        cache_path = folder / "eval.json"
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        module = module.to(self.device).eval()
        results: dict[str, Any] = {}
        features: tuple[torch.Tensor, ...] | None = None
        eval_config = self.recipe.eval
        for part, config, run in (
            ("knn", eval_config.knn, self._knn),
            ("linear", eval_config.linear, self._linear),
            ("finetune", eval_config.finetune, self._finetune),
        ):
            if config is None:
                results[part] = None
                continue
            key = _digest({"identity": identity, "config": asdict(config), "data": self._data_key})
            if cache.get(part, {}).get("key") == key:
                results[part] = cache[part]["result"]
                continue
            if part == "finetune" and not isinstance(module.backbone, VisionTransformer):
                results[part] = None
                continue
            needs_features = part == "knn" or (part == "linear" and config.mode == "cached")
            if needs_features and features is None:
                features = self._features(module, folder, identity)
            logger.debug("evaluating %s: %s", folder.name, part)
            results[part] = run(module, config, features)
            cache[part] = {"key": key, "result": results[part]}
            write_atomic(cache_path, json.dumps(cache, indent=2))
        return results

    @property
    def _data_key(self) -> dict[str, Any]:
        data = self.recipe.data
        return {
            "dataset": data.dataset,
            "root": str(Path(data.root).resolve()) if data.root else None,
            "splits": (data.train_split, data.val_split),
            "sizes": (len(self.data.train), len(self.data.val)),
            "image_size": data.image_size,
            "normalization": asdict(self.data.normalization),
            "seed": self.recipe.seed,
        }

    def _features(
        self, module: SSLMethod, folder: Path, identity: dict[str, Any]
    ) -> tuple[torch.Tensor, ...]:
        precision = "bf16" if self.precision.startswith("bf16") else "32"
        out: list[torch.Tensor] = []
        for split, dataset in (("train", self.data.train), ("val", self.data.val)):
            key = feature_cache_key(
                split=split,
                length=len(dataset),
                transform=self.transform,
                identity=identity,
                data=self._data_key,
                precision=precision,
            )
            loader = DataLoader(
                TransformedDataset(dataset, self.transform),
                batch_size=self.recipe.eval.batch_size,
                num_workers=self.recipe.data.num_workers,
                pin_memory=self.device.type == "cuda",
            )

            def compute(loader: DataLoader = loader) -> tuple[torch.Tensor, torch.Tensor]:
                return extract_features(
                    module,
                    loader,
                    device=self.device,
                    precision=precision,
                    progress=show_progress(self.recipe),
                )

            if self.recipe.eval.cache_features:
                out.extend(cached_features(folder / "features", key, compute))
            else:
                out.extend(compute())
        return tuple(out)

    def _knn(self, module: SSLMethod, config: Any, features: tuple[torch.Tensor, ...]) -> dict:
        train_features, train_labels, val_features, val_labels = features
        return knn_classify(
            train_features,
            train_labels,
            val_features,
            val_labels,
            k=config.k,
            temperature=config.temperature,
            num_classes=self.data.num_classes,
            device=self.device,
        )

    def _linear(self, module: SSLMethod, config: Any, features: tuple[torch.Tensor, ...]) -> dict:
        defaults = LINEAR_DEFAULTS[config.mode]
        options = {
            "epochs": config.epochs or defaults["epochs"],
            "batch_size": config.batch_size or defaults["batch_size"],
            "blr": config.blr or defaults["blr"],
            "warmup_epochs": defaults["warmup_epochs"],
            "seed": self.recipe.seed,
        }
        if config.mode == "cached":
            train_features, train_labels, val_features, val_labels = features
            result = linear_probe(
                train_features,
                train_labels,
                val_features,
                val_labels,
                num_classes=self.data.num_classes,
                device=self.device,
                **options,
            )
        else:
            result = augmented_linear_probe(
                module,
                self.data.train,
                self.data.val,
                num_classes=self.data.num_classes,
                image_size=self.recipe.data.image_size,
                mean=self.data.normalization.mean,
                std=self.data.normalization.std,
                num_workers=self.recipe.data.num_workers,
                accelerator=self.accelerator,
                precision=self.precision,
                progress=show_progress(self.recipe),
                **options,
            )
        result.pop("history", None)
        return {"mode": config.mode, **result}

    def _finetune(self, module: SSLMethod, config: Any, features: Any) -> dict:
        result = finetune(
            module.backbone,
            self.data.train,
            self.data.val,
            num_classes=self.data.num_classes,
            image_size=self.recipe.data.image_size,
            mean=self.data.normalization.mean,
            std=self.data.normalization.std,
            epochs=config.epochs,
            warmup_epochs=config.warmup_epochs,
            batch_size=config.batch_size,
            blr=config.blr,
            weight_decay=config.weight_decay,
            layer_decay=config.layer_decay,
            drop_path_rate=config.drop_path,
            mixup=config.mixup,
            cutmix=config.cutmix,
            smoothing=config.label_smoothing,
            global_pool=config.global_pool,
            num_workers=self.recipe.data.num_workers,
            accelerator=self.accelerator,
            precision=self.precision,
            seed=self.recipe.seed,
            progress=show_progress(self.recipe),
        )
        result.pop("history", None)
        return result


def checkpoint_of(recipe: Recipe, index: int) -> Path:
    """Where method ``index`` keeps its last checkpoint."""
    return recipe.method_dir(index) / "checkpoints" / f"{CHECKPOINT_NAME}.ckpt"


def _finished_checkpoint(recipe: Recipe, index: int) -> Path:
    checkpoint = checkpoint_of(recipe, index)
    label = recipe.methods[index]["label"]
    if not checkpoint.is_file():
        raise RecipeError(
            f"methods.{index} ({label}): no checkpoint at {checkpoint}; run `ssl-mae pretrain`"
        )
    epoch, _ = data_position(checkpoint)
    if epoch < recipe.pretrain.epochs:
        raise RecipeError(
            f"methods.{index} ({label}): pretrained for {epoch} of {recipe.pretrain.epochs} "
            "epochs; run `ssl-mae pretrain` to finish it"
        )
    return checkpoint


def _identity(checkpoint: Path) -> dict[str, Any]:
    stat = checkpoint.stat()
    return {
        "checkpoint": str(checkpoint.resolve()),
        "mtime_ns": stat.st_mtime_ns,
        "size": stat.st_size,
    }


def _release_process_group() -> bool:
    """After DDP pretraining: leave the process group; True on rank 0 (which goes on)."""
    rank = rank_zero_only.rank
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return rank == 0


def run_recipe(
    recipe: Recipe,
    do_pretrain: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Pretrain (unless ``do_pretrain`` is false), evaluate and report every method.

    Returns:
        The report (also written to ``report.json`` / ``report.md``), or ``None`` on the
        non-zero ranks of a multi-process run.
    """
    data = prepare_data(recipe)
    if not do_pretrain:
        for index in range(len(recipe.methods)):
            _finished_checkpoint(recipe, index)
    started = time.perf_counter()
    pretrain_results = []
    for index, entry in enumerate(recipe.methods):
        if do_pretrain:
            if rank_zero_only.rank == 0:  # DDP's other ranks run this command too
                log(f"[{index + 1}/{len(recipe.methods)}] pretraining {entry['label']}")
            pretrain_results.append(pretrain(recipe, index))
        else:
            pretrain_results.append(summarize(recipe, index))
    if not _release_process_group():
        return None

    evaluator = Evaluator(recipe, data)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    random_init_done: set[str] = set()
    for index, entry in enumerate(recipe.methods):
        checkpoint = _finished_checkpoint(recipe, index)
        module, _ = load_pretrained(checkpoint)
        log(f"evaluating {entry['label']}")
        results = evaluator.evaluate(module, recipe.method_dir(index), _identity(checkpoint))
        pretrained = pretrain_results[index].as_dict()
        rows.append(_row(entry["label"], entry, module, pretrained, results))
        backbone = describe_backbone(entry)
        if recipe.eval.random_init and backbone not in random_init_done:
            random_init_done.add(backbone)
            untrained = build_method(recipe, index, data.num_classes)
            folder = recipe.run_dir / "random_init" / _digest(backbone)[:12]
            log(f"evaluating random_init ({backbone})")
            identity = {"random_init": backbone, "seed": recipe.seed, "method": entry["name"]}
            random_results = evaluator.evaluate(untrained, folder, identity)
            rows.append(_row("random_init", entry, untrained, None, random_results))
        if recipe.eval.finetune is not None and results["finetune"] is None:
            notes.append(f"{entry['label']}: fine-tuning skipped (it needs a ViT backbone)")

    bad_images = recipe.run_dir / "bad_images.txt"
    skipped = sorted(set(bad_images.read_text().split())) if bad_images.is_file() else []
    if skipped:
        notes.append(f"{len(skipped)} unreadable image(s) skipped: " + ", ".join(skipped[:20]))
    figures = _figures(recipe, data, rows)
    report = {
        "name": recipe.name,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_description(),
        "dataset": {
            "name": recipe.data.dataset,
            "root": recipe.data.root,
            "train_images": len(data.train),
            "val_images": len(data.val),
            "classes": data.num_classes,
            "image_size": recipe.data.image_size,
        },
        "protocols": _protocols(recipe),
        "rows": rows,
        "skipped_images": skipped,
        "notes": notes,
        "figures": figures,
        "recipe": _recipe_dict(recipe),
    }
    json_path, md_path = write_report(recipe.run_dir, report)
    log(f"wrote {md_path} and {json_path}")
    return report


def _row(
    method: str,
    entry: dict[str, Any],
    module: SSLMethod,
    pretrain_result: dict[str, Any] | None,
    results: dict[str, Any],
) -> dict[str, Any]:
    return {
        "method": method,
        "backbone": describe_backbone(entry),
        "params": count_parameters(module.backbone),
        "pretrain": pretrain_result,
        "knn": results["knn"],
        "linear": results["linear"],
        "finetune": results["finetune"],
    }


def _protocols(recipe: Recipe) -> dict[str, str]:
    knn, linear = recipe.eval.knn, recipe.eval.linear
    knn_text = "off" if knn is None else f"k={knn.k}, T={knn.temperature}, cosine similarity"
    if linear is None:
        linear_text = "off"
    else:
        defaults = LINEAR_DEFAULTS[linear.mode]
        epochs = linear.epochs or defaults["epochs"]
        how = (
            "cached frozen features, SGD"
            if linear.mode == "cached"
            else "the paper's protocol: RandomResizedCrop + flip, LARS"
        )
        linear_text = f"{how}, {epochs} epochs, BatchNorm + Linear head"
    return {"knn": knn_text, "linear": linear_text}


def _recipe_dict(recipe: Recipe) -> dict[str, Any]:
    raw = asdict(recipe)
    raw["methods"] = [dict(entry) for entry in recipe.methods]
    return raw


def _figures(recipe: Recipe, data: RunData, rows: list[dict[str, Any]]) -> dict[str, str]:
    folder = recipe.run_dir / "figures"
    written: dict[str, str] = {}
    method_dirs = {entry["label"]: recipe.method_dir(i) for i, entry in enumerate(recipe.methods)}
    if plot_loss_curves(method_dirs, folder / FIGURES["loss"]):
        written["pretraining loss"] = FIGURES["loss"]
    if plot_accuracy_bars(rows, folder / FIGURES["accuracy"]):
        written["accuracy"] = FIGURES["accuracy"]
    mae_index = next(
        (i for i, entry in enumerate(recipe.methods) if entry["name"] == MAEMethod.name), None
    )
    if mae_index is not None:
        module, _ = load_pretrained(checkpoint_of(recipe, mae_index))
        images = _reconstruction_images(data, recipe.data.image_size)
        noise = torch.rand(
            len(images), module.model.num_patches, generator=torch.Generator().manual_seed(0)
        )
        save_reconstruction_figure(
            module.model,
            images,
            folder / FIGURES["reconstructions"],
            mean=data.normalization.mean,
            std=data.normalization.std,
            noise=noise,
            title=f"{recipe.methods[mae_index]['label']} on validation images",
        )
        written["MAE reconstructions"] = FIGURES["reconstructions"]
    return written


def _reconstruction_images(data: RunData, image_size: int) -> torch.Tensor:
    transform = eval_transform(image_size, data.normalization)
    step = max(len(data.val) // RECONSTRUCTION_IMAGES, 1)
    picks = range(0, step * RECONSTRUCTION_IMAGES, step)
    return torch.stack([transform(data.val[i][0]) for i in picks if i < len(data.val)])
