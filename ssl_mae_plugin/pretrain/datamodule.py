"""The training split as a Lightning data module: seeded, sharded, resumable batches."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from lightly.data import MultiViewCollate
from torch.utils.data import DataLoader

from ssl_mae_plugin.pretrain.augment import DeviceCropFlip, load_uint8
from ssl_mae_plugin.pretrain.device_decode import DeviceDecodeViews, collate_payloads
from ssl_mae_plugin.pretrain.sampling import EpochSampler, SeededIndices, SeededViews


class PretrainData(pl.LightningDataModule):
    """Seeded, sharded, resumable loading of the training split.

    Args:
        dataset: Yields ``(image, label)``.
        transform: The method's lightly transform.
        batch_size: Global batch size.
        seed: Run seed.
        num_workers: Loader processes per device.
        start_epoch: Epoch to start in (resume).
        skip_batches: Batches of ``start_epoch`` already done (resume).
        device_transform: Keep the images in memory as uint8 and make the views with it on
            the training device instead of ``transform`` in the loader processes.
        device_decode: Read the encoded images of its samples in the loader processes and
            decode them and make the views on the training device (``dataset`` and
            ``transform`` are then not used).
    """

    def __init__(
        self,
        dataset: Any,
        transform: Any,
        batch_size: int,
        seed: int,
        num_workers: int,
        start_epoch: int = 0,
        skip_batches: int = 0,
        device_transform: DeviceCropFlip | None = None,
        device_decode: DeviceDecodeViews | None = None,
    ) -> None:
        super().__init__()
        self.device_transform = device_transform
        self.device_decode = device_decode
        if device_decode is not None:
            self.items: Any = device_decode.samples
        elif device_transform is None:
            self.items = SeededViews(dataset, transform, seed=seed)
        else:
            self.items = SeededIndices(dataset.targets, seed=seed)
            self.images = load_uint8(dataset, num_workers)  # [N, 3, H, W], moved on first use
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.start_epoch = start_epoch
        self.skip_batches = skip_batches

    def train_dataloader(self) -> DataLoader:
        """Per-rank loader over the rank's shard of each epoch."""
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        if self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by {world} devices")
        per_rank = self.batch_size // world
        sampler = EpochSampler(
            len(self.items),
            batch_size=per_rank,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
            start_epoch=self.start_epoch,
            skip_batches=self.skip_batches,
        )
        in_memory = self.device_transform is not None
        workers = 0 if in_memory else self.num_workers  # in memory: only indices to batch
        collate = collate_payloads if self.device_decode is not None else MultiViewCollate()
        return DataLoader(
            self.items,
            batch_size=per_rank,
            sampler=sampler,
            collate_fn=None if in_memory else collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,  # the sampler already yields whole batches
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device decoding: turn the batch's encoded samples into views on the device."""
        if self.device_decode is None:
            return batch
        return self.device_decode(batch, self.trainer.strategy.root_device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """In memory: turn ``(indices, labels, seeds)`` into views on the device."""
        if self.device_transform is None:
            return batch
        indices, labels, seeds = batch
        if self.images.device != indices.device:
            self.images = self.images.to(indices.device)
        seed_list = seeds.tolist()
        return [self.device_transform(self.images[indices], seed_list)], labels, seed_list
