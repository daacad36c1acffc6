"""Frozen features of a backbone over a dataset, optionally cached on disk.

The backbone protocol: any ``torch.nn.Module`` with ``forward_features(images) -> [N, D]``.
For :class:`ssl_mae_plugin.MAE`, whose ``forward_features`` takes a ``pool`` argument, wrap
it with :class:`PooledBackbone`.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ssl_mae_plugin.storage import atomic_path, digest

PRECISIONS = ("32", "bf16")


class PooledBackbone(nn.Module):
    """Adapts a model whose ``forward_features`` takes ``pool=`` to the backbone protocol.

    Args:
        model: E.g. an :class:`ssl_mae_plugin.MAE`.
        pool: ``"cls"`` (the paper's linear-probe feature [0]) or ``"mean"``.
    """

    def __init__(self, model: nn.Module, pool: str = "cls") -> None:
        super().__init__()
        self.model = model
        self.pool = pool

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` pooled features of ``images``."""
        return self.model.forward_features(images, pool=self.pool)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(images)


class FlattenedPixels(nn.Module):
    """The backbone protocol on no network: the normalised image, flattened, as its feature.

    The "does pretraining beat pixels?" row of small-image reports.
    """

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, C * H * W]`` normalised pixels."""
        return images.flatten(1)


@contextlib.contextmanager
def frozen_eval(module: nn.Module):
    """Put every submodule in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sampler_indices(dataloader: DataLoader) -> list[int] | None:
    """The dataset indices the loader visits, in order, if its sampler tells them."""
    sampler = getattr(dataloader, "sampler", None)
    if sampler is None or not isinstance(sampler, Iterable):
        return None
    indices = list(iter(sampler))
    if not all(isinstance(i, int) for i in indices):
        return None
    return indices


def _gather(tensor: torch.Tensor, comm_device: torch.device) -> torch.Tensor:
    """Concatenate a tensor of any first-dim length from all ranks, in rank order."""
    world = dist.get_world_size()
    local = tensor.to(comm_device)
    size = torch.tensor([len(local)], device=comm_device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_size = int(max(int(s) for s in sizes))
    padded = local.new_zeros((max_size, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)]).cpu()


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataloader: DataLoader,
    device: torch.device | str | None = None,
    precision: str = "32",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a frozen backbone over a loader of ``(images, labels, ...)`` batches.

    The backbone is put in eval mode (no dropout, BatchNorm running statistics; MAE models
    do no masking in ``forward_features``) and every submodule's previous train/eval mode is
    restored afterwards. Features are computed under ``torch.inference_mode`` and returned
    as float32 on the CPU.

    Under DDP (``torch.distributed`` initialised, world size > 1) every rank processes its
    shard and the result is gathered on all ranks. The loader must then use a
    ``DistributedSampler(dataset, shuffle=False)``: the indices it yields are gathered with
    the features, so padding duplicates are dropped and dataset order is restored.

    Args:
        backbone: Module with ``forward_features(images) -> [N, D]``.
        dataloader: Yields ``(images, labels)`` (extra elements are ignored).
        device: Where to compute; the backbone is moved there (in place). The device of the
            backbone's parameters when omitted.
        precision: ``"32"`` or ``"bf16"`` (autocast, on CPU too).
        progress: Show a tqdm progress bar (rank 0 only).

    Returns:
        ``features [N, D]`` float32 and ``labels [N]`` int64, on the CPU, in loader order
        (dataset order under DDP).

    Raises:
        ValueError: On an unknown ``precision`` or if the backbone does not return 2-D
            features.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device) if device is not None else _device_of(backbone)
    backbone.to(device)
    distributed = _is_distributed()
    show = progress and (not distributed or dist.get_rank() == 0)

    from tqdm.auto import tqdm

    features, labels = [], []
    with frozen_eval(backbone), torch.inference_mode():
        for batch in tqdm(dataloader, desc="features", disable=not show, leave=False):
            images, targets = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            with torch.autocast(
                device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
            ):
                out = backbone.forward_features(images)
            if out.ndim != 2:
                raise ValueError(
                    f"backbone.forward_features must return [N, D], got {tuple(out.shape)}; "
                    "wrap models with a pool argument in PooledBackbone"
                )
            features.append(out.float().cpu())
            labels.append(torch.as_tensor(targets).to(torch.int64).cpu())
    feats = torch.cat(features) if features else torch.zeros(0, 0)
    labs = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64)
    if not distributed:
        return feats, labs
    return _gather_in_dataset_order(feats, labs, dataloader, device)


def _gather_in_dataset_order(
    feats: torch.Tensor, labs: torch.Tensor, dataloader: DataLoader, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    indices = _sampler_indices(dataloader)
    if indices is None or len(indices) != len(feats):
        raise ValueError(
            "under DDP the dataloader must use a DistributedSampler(shuffle=False) whose "
            "indices match the batches (drop_last=False)"
        )
    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    all_feats = _gather(feats, comm_device)  # [world * n, D]
    all_labels = _gather(labs, comm_device)
    all_indices = _gather(torch.tensor(indices, dtype=torch.int64), comm_device)
    size = int(all_indices.max()) + 1
    out_feats = all_feats.new_zeros((size, all_feats.shape[1]))
    out_labels = all_labels.new_zeros(size)
    # Padding repeats indices with identical rows, so the duplicates overwrite harmlessly.
    out_feats[all_indices] = all_feats
    out_labels[all_indices] = all_labels
    return out_feats, out_labels


def _broadcast_decision(value: bool) -> bool:
    if not _is_distributed():
        return value
    decision = [value]
    dist.broadcast_object_list(decision, src=0)
    return bool(decision[0])


def cached_features(
    cache_dir: str | os.PathLike,
    key_parts: dict[str, Any],
    compute: Callable[[], tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``(features, labels)`` from ``cache_dir`` or compute and store them.

    The file is ``features-<sha256 of key_parts>.pt``; it is written to a temporary file in
    the same folder and moved into place with ``os.replace``, so readers never see a
    partial file. Under DDP rank 0 decides hit or miss for all ranks (``compute`` may hold
    collectives) and only rank 0 writes.

    Args:
        cache_dir: Folder for the cache files (created if missing).
        key_parts: What identifies the features (JSON-friendly).
        compute: Called on a miss; returns ``(features, labels)``.

    Returns:
        ``(features, labels)`` as stored (CPU tensors).
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"features-{digest(key_parts)[:32]}.pt"
    key_text = json.dumps(key_parts, sort_keys=True, default=str)
    if _broadcast_decision(path.is_file()):
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if stored.get("key") == key_text:
            return stored["features"], stored["labels"]
    features, labels = compute()
    if not _is_distributed() or dist.get_rank() == 0:
        payload = {"features": features.cpu(), "labels": labels.cpu(), "key": key_text}
        with atomic_path(path) as partial:
            torch.save(payload, partial)
    return features, labels
