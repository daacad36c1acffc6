"""Evaluate one model the way a recipe asks: k-NN, linear probe, fine-tuning, with caches.

Works on any module with ``forward_features(images) -> [N, D]`` (fine-tuning also needs a
timm ``VisionTransformer`` as its ``backbone``). Frozen features are computed once per
model and cached on disk; each part's result is cached under a key that covers every
setting it depends on, so a re-run recomputes exactly what a changed setting invalidates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.data import (
    Normalization,
    build_dataset,
    eval_transform,
    limit_dataset,
    resolve_root,
)
from ssl_mae_plugin.evaluation.classifier import FitOptions
from ssl_mae_plugin.evaluation.features import cached_features, extract_features
from ssl_mae_plugin.evaluation.finetune import finetune
from ssl_mae_plugin.evaluation.knn import knn_classify
from ssl_mae_plugin.evaluation.layer_sweep import sweep_blocks
from ssl_mae_plugin.evaluation.linear import augmented_linear_probe, linear_probe
from ssl_mae_plugin.evaluation.transforms import TransformedDataset
from ssl_mae_plugin.evaluation.vit_features import OWN_FEATURES, EveryBlock, feature_view
from ssl_mae_plugin.recipes import DataConfig, Recipe, RecipeError
from ssl_mae_plugin.storage import digest, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    """The splits a recipe evaluates on and what identifies them for caches.

    Attributes:
        train: Training split, ``(PIL image, label)`` items.
        val: Validation split, the same.
        normalization: The input normalisation.
        num_classes: Number of classes.
        key: Everything that decides which images these are (dataset, root, splits, sizes,
            subset seed), for cache keys.
        transfer: The ``eval.datasets`` of the recipe by name: their recipe and splits
            (see :func:`transfer_data`).
    """

    train: Dataset
    val: Dataset
    normalization: Normalization
    num_classes: int
    key: dict[str, Any]
    transfer: dict[str, tuple[Recipe, EvalData]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The dataset as a report names it: what, where, how many images and classes."""
        return {
            "name": self.key["dataset"],
            "root": self.key["root"],
            "train_images": len(self.train),
            "val_images": len(self.val),
            "classes": self.num_classes,
        }


def load_splits(data: DataConfig, subset_seed: int, bad_image_log: Path) -> EvalData:
    """Both splits of a data section (``max_*_images`` subsets drawn with ``subset_seed``).

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
    """
    splits = []
    for split, max_images in ((data.train_split, data.max_train_images),
                              (data.val_split, data.max_val_images)):  # fmt: skip
        dataset = build_dataset(
            data.dataset,
            split,
            root=data.root,
            download=data.download,
            on_bad_image=data.on_bad_image,
            bad_image_log=bad_image_log,
        )
        # The same subset for every seed: rows of different seeds are paired image by image.
        splits.append(limit_dataset(dataset, max_images, seed=subset_seed))
    train, val = splits
    key = {
        "dataset": data.dataset,
        "root": resolve_root(data.root) if data.root else None,
        "splits": (data.train_split, data.val_split),
        "sizes": (len(train), len(val)),
        "subset_seed": subset_seed,
    }
    normalization = Normalization(tuple(data.mean), tuple(data.std))
    return EvalData(train, val, normalization, len(train.classes), key)


def check_batches(recipe: Recipe, data: EvalData, pretraining: bool = True) -> None:
    """Refuse batches larger than the training split (incomplete batches are dropped).

    Raises:
        RecipeError: Naming the key, its batch and the split's size.
    """
    batches = {"pretrain.batch_size": recipe.pretrain.batch_size} if pretraining else {}
    for name in ("linear", "finetune"):
        section = getattr(recipe.eval, name)
        if section is not None and getattr(section, "mode", "trained") != "cached":
            batches[f"eval.{name}.batch_size"] = section.batch_size
    for key, batch in batches.items():
        if batch > len(data.train):
            raise RecipeError(
                f"{key}={batch} is larger than the {len(data.train)} training images "
                f"of {data.key['dataset']} (incomplete batches are dropped)"
            )


def prepare_data(recipe: Recipe) -> EvalData:
    """Build both splits and check them against the recipe before any work starts.

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
        RecipeError: For a batch larger than the training split.
    """
    data = load_splits(recipe.data, recipe.all_seeds[0], recipe.run_dir / "bad_images.txt")
    check_batches(recipe, data)
    data.transfer = transfer_data(recipe)
    return data


def transfer_data(recipe: Recipe) -> dict[str, tuple[Recipe, EvalData]]:
    """The recipe and splits of each ``eval.datasets`` entry, by its name, checked.

    Each entry's recipe evaluates at the pretraining image size and normalisation (what
    the models were trained on), without the layer sweep.

    Raises:
        DatasetUnavailableError: For a missing root, split or class folder.
        RecipeError: For a batch larger than a training split.
    """
    out = {}
    for entry in recipe.eval.datasets:
        transferred = recipe.model_copy(
            update={
                "data": entry.data_section(recipe.data),
                "eval": recipe.eval.model_copy(update={"layer_sweep": False, "datasets": []}),
            }
        )
        log = recipe.run_dir / "transfer" / entry.name / "bad_images.txt"
        data = load_splits(transferred.data, recipe.all_seeds[0], log)
        check_batches(transferred, data, pretraining=False)
        out[entry.name] = (transferred, data)
    return out


class Evaluator:
    """Evaluates models the same way (k-NN, linear probe, fine-tuning), with caches.

    Args:
        recipe: The validated recipe (its ``eval`` section, data loading and trainer).
        data: Its splits.
    """

    def __init__(self, recipe: Recipe, data: EvalData) -> None:
        self.recipe = recipe
        self.data = data
        gpu = torch.cuda.is_available() and recipe.trainer.accelerator in ("auto", "gpu", "cuda")
        self.device = torch.device("cuda" if gpu else "cpu")
        self.fit = FitOptions(
            accelerator="gpu" if gpu else "cpu",
            precision=recipe.trainer.precision,
            progress=recipe.trainer.show_progress,
        )
        self.transform = eval_transform(recipe.data.image_size, data.normalization)

    def evaluate(
        self,
        model: nn.Module,
        folder: Path,
        identity: dict[str, Any],
        frozen_only: bool = False,
    ) -> dict:
        """k-NN / linear / fine-tune results of ``model``, reusing cached parts.

        Args:
            model: Has ``forward_features``; ``backbone`` (a timm ViT) for fine-tuning.
            folder: Where the caches of this model live.
            identity: What identifies the weights (checkpoint file or untrained seed).
            frozen_only: Only what runs on cached features (k-NN, the cached linear
                probe), e.g. for a model that is no network.
        """
        cache_path = folder / "eval.json"
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        model = model.to(self.device).eval()
        config = self.recipe.eval
        vit = getattr(model, "backbone", None)
        protocol = config.features
        probed, described = feature_view(
            model, protocol and protocol.pool, protocol.blocks if protocol else 1
        )
        if described != OWN_FEATURES:
            identity = {**identity, "features": described}
        results: dict[str, Any] = {"features": described}
        features: tuple[torch.Tensor, ...] | None = None
        for part, section in (
            ("knn", config.knn),
            ("linear", config.linear),
            ("finetune", config.finetune),
        ):
            cached = part != "finetune" and getattr(section, "mode", "cached") == "cached"
            if (
                section is None
                or (frozen_only and not cached)
                or (part == "finetune" and not isinstance(vit, VisionTransformer))
            ):
                results[part] = None
                continue
            key = digest({"identity": identity, "part": self._settings(part, section)})
            if cache.get(part, {}).get("key") == key:
                results[part] = cache[part]["result"]
                continue
            if cached:
                features = features or self._features(probed, folder, identity)
            logger.debug("evaluating %s: %s", folder.name, part)
            results[part] = self._run(
                part, section, model if part == "finetune" else probed, features
            )
            cache[part] = {"key": key, "result": results[part]}
            write_text_atomic(cache_path, json.dumps(cache))
        sweep = config.layer_sweep and isinstance(vit, VisionTransformer)
        results["layer_sweep"] = self._layer_sweep(vit, folder, identity, cache) if sweep else None
        return results

    def _layer_sweep(
        self, vit: VisionTransformer, folder: Path, identity: dict[str, Any], cache: dict
    ) -> list[dict[str, Any]]:
        """Every block and pooling of ``vit`` probed (see :func:`sweep_blocks`), cached."""
        config = self.recipe.eval
        probes = (("knn", config.knn), ("linear", config.linear))
        settings = [self._settings(part, section) for part, section in probes if section]
        key = digest({"identity": identity, "layer_sweep": settings})
        if cache.get("layer_sweep", {}).get("key") != key:
            sweep = EveryBlock(vit)
            points = sweep_blocks(
                sweep,
                self._features(sweep, folder, {**identity, "features": "every block"}),
                knn=config.knn and config.knn.options(),
                linear=config.linear and config.linear.options(),
                device=self.device,
                seed=self.recipe.seed,
            )
            cache["layer_sweep"] = {"key": key, "result": points}
            write_text_atomic(folder / "eval.json", json.dumps(cache))
        return cache["layer_sweep"]["result"]

    def _settings(self, part: str, section: Any) -> dict[str, Any]:
        """Everything a part's result depends on besides the weights: its cache key.

        The part's own options, which images (:attr:`EvalData.key`), how they are resized
        and normalised (the evaluation transform), the seed of heads and data order, the
        precision and the device kind. Not in it, as they do not change results: the
        feature batch size, loader workers, progress bars.
        """
        return {
            "part": part,
            "options": section.model_dump(),
            "data": self.data.key,
            "transform": repr(self.transform),
            "seed": self.recipe.seed,
            "precision": self.fit.precision,
            "device": self.device.type,
        }

    def _features(
        self, model: nn.Module, folder: Path, identity: dict[str, Any]
    ) -> tuple[torch.Tensor, ...]:
        precision = "bf16" if str(self.fit.precision).startswith("bf16") else "32"
        out: list[torch.Tensor] = []
        for split, dataset in (("train", self.data.train), ("val", self.data.val)):
            key = {  # what the features depend on besides the weights (see _settings)
                "identity": identity,
                "split": split,
                "data": self.data.key,
                "transform": repr(self.transform),
                "precision": precision,
                "device": self.device.type,
            }
            loader = DataLoader(
                TransformedDataset(dataset, self.transform),
                batch_size=self.recipe.eval.batch_size,
                num_workers=self.recipe.data.num_workers,
                pin_memory=self.device.type == "cuda",
            )

            def compute(loader: DataLoader = loader) -> tuple[torch.Tensor, torch.Tensor]:
                return extract_features(
                    model,
                    loader,
                    device=self.device,
                    precision=precision,
                    progress=self.fit.progress,
                )

            if self.recipe.eval.cache_features:
                out.extend(cached_features(folder / "features", key, compute))
            else:
                out.extend(compute())
        return tuple(out)

    def _run(
        self, part: str, section: Any, model: nn.Module, features: tuple[torch.Tensor, ...] | None
    ) -> dict[str, Any]:
        common = {"num_classes": self.data.num_classes, **section.options()}
        if part == "knn":
            result = knn_classify(*features, device=self.device, **common)
        elif part == "linear" and section.mode == "cached":
            result = linear_probe(*features, device=self.device, seed=self.recipe.seed, **common)
        else:
            run = finetune if part == "finetune" else augmented_linear_probe
            result = run(
                model.backbone if part == "finetune" else model,
                self.data.train,
                self.data.val,
                image_size=self.recipe.data.image_size,
                normalization=self.data.normalization,
                num_workers=self.recipe.data.num_workers,
                fit=self.fit,
                seed=self.recipe.seed,
                **common,
            )
        result.pop("history", None)
        return {"mode": section.mode, **result} if part == "linear" else result
