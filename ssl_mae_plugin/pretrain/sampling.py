"""Reproducible, resumable sampling for pretraining.

Everything random about a sample derives from ``(seed, epoch, index)``: the order of an
epoch comes from ``(seed, epoch)``, the augmentation of a sample and the MAE mask noise
from its own seed. Nothing depends on global RNG state left over from earlier steps, the
number of workers or the number of processes, so a run killed and resumed from a
checkpoint (even mid-epoch) sees exactly the batches an uninterrupted run sees, and
``k`` processes with batch ``B / k`` together see the batches of one process with ``B``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from ssl_mae_plugin.mae.masking import splitmix64

MASK64 = (1 << 64) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (``index=-1``: the epoch's)."""
    value = splitmix64(seed & MASK64)
    value = splitmix64(value ^ np.uint64(epoch & MASK64))
    value = splitmix64(value ^ np.uint64(index & MASK64))
    return int(value) & ((1 << 63) - 1)


class EpochSampler(Sampler):
    """Shuffles by ``(seed, epoch)``, shards across ranks and can start mid-epoch.

    Yields ``(index, epoch)`` pairs so that the dataset can seed each sample. Rank ``r`` of
    ``R`` takes every ``R``-th index of the epoch's permutation, so batch ``s`` of all ranks
    together is batch ``s`` of a single process with an ``R`` times larger batch.

    Args:
        num_samples: Dataset length.
        batch_size: Per-rank batch size.
        seed: Base seed of the run.
        num_replicas: Number of ranks.
        rank: This rank.
        shuffle: Shuffle each epoch (else the natural order).
        drop_last: Drop the samples that do not fill a whole global batch.
        start_epoch: The epoch the first iteration belongs to (resuming).
        skip_batches: Batches of ``start_epoch`` already trained on (resuming).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        start_epoch: int = 0,
        skip_batches: int = 0,
    ) -> None:
        global_batch = batch_size * num_replicas
        if drop_last and num_samples < global_batch:
            raise ValueError(
                f"batch_size={global_batch} is larger than the dataset ({num_samples} images) "
                "and incomplete batches are dropped"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = start_epoch
        self._resume = (start_epoch, skip_batches)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (Lightning calls this every epoch)."""
        self.epoch = epoch

    def _epoch_indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        global_batch = self.batch_size * self.num_replicas
        if self.drop_last:
            order = order[: self.num_samples // global_batch * global_batch]
        else:  # pad by wrapping around so every rank gets the same number of samples
            total = -(-self.num_samples // self.num_replicas) * self.num_replicas
            order = (order * (total // max(len(order), 1) + 1))[:total]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = self._epoch_indices()
        resume_epoch, skip_batches = self._resume
        if self.epoch == resume_epoch:
            indices = indices[skip_batches * self.batch_size :]
        return iter([(index, self.epoch) for index in indices])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // (self.batch_size * self.num_replicas) * self.batch_size
        return -(-self.num_samples // self.num_replicas)


class SeededViews(Dataset):
    """Applies a (lightly) transform with RNGs seeded per ``(seed, epoch, index)``.

    Items are ``(views, label, sample_seed)``, the triple lightly's ``MultiViewCollate``
    expects (its third slot, usually a filename, carries the seed). The torch, numpy and
    ``random`` generators are reseeded for each sample; in the main process (no loader
    workers) they are restored afterwards, so the caller's global RNG state is untouched.

    Args:
        dataset: Yields ``(image, label)``.
        transform: Maps an image to a list of views (lightly's transforms do).
        seed: Base seed of the run.
    """

    def __init__(self, dataset: Dataset, transform: Callable[[Any], Any], seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[list[torch.Tensor], int, int]:
        index, epoch = key
        seed = sample_seed(self.seed, epoch, index)
        in_main_process = get_worker_info() is None  # a worker's RNGs are its own
        if in_main_process:
            saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        torch.default_generator.manual_seed(seed)  # torchvision draws from it
        random.seed(seed)
        np.random.seed(seed % (1 << 32))  # lightly's blur and solarization draw from it
        image, label = self.dataset[index]  # seeded too: it may crop (reduced decoding)
        views = self.transform(image)
        if in_main_process:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])
        if isinstance(views, torch.Tensor):
            views = [views]
        return list(views), int(label), seed


class SeededIndices(Dataset):
    """``(index, label, sample_seed)`` per ``(index, epoch)`` key, for images kept on device.

    The views are made on the device from the seeds (see :mod:`.augment`).
    """

    def __init__(self, targets: list[int], seed: int = 0) -> None:
        self.targets = list(targets)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key: tuple[int, int]) -> tuple[int, int, int]:
        index, epoch = key
        return index, int(self.targets[index]), sample_seed(self.seed, epoch, index)
