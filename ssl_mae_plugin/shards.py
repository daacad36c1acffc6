"""Sharded image datasets: an image folder written to LitData chunks, and read back by index.

``ssl-mae shards SOURCE OUT`` (:func:`plan_shards`, :func:`write_split`) writes each split
``SOURCE/<split>/<class>/*`` of an image folder to ``OUT/<split>/``: LitData chunk files
(``chunk-*.bin``, by default about 64 MB each) and LitData's ``index.json``, plus our
:data:`SPLIT_INFO` file with the class names, every sample's label, the class counts, the
seed and the source. Each sample holds the file's original bytes (never re-encoded), its
label and its name relative to the split folder. The order is a seeded permutation of the
folder's (which lists class after class), so every chunk holds a mix of classes. A split is
written into ``OUT/.<split>.partial`` and renamed to ``OUT/<split>`` when complete, so an
interrupted run leaves nothing that reads as a split (the next run removes the partial).

Unreadable images are copied as they are: the shards hold exactly the folder's samples,
and a corrupt file is found when it is read, where ``data.on_bad_image`` applies exactly as
for the image folder (:class:`~ssl_mae_plugin.data.EncodedImages`: skipped, logged, named
in the report; or the run stops). Only a file whose bytes cannot be read at all stops the
command.

``data.dataset: shards`` reads them (:class:`ShardDataset`): a map-style dataset of
``(PIL RGB image, label)`` whose ``targets`` come from :data:`SPLIT_INFO` (no image is read
for them), so class-balanced subsets, k-NN and linear evaluation, and the seeded, resumable
sampler of :mod:`ssl_mae_plugin.pretrain.sampling` work unchanged. That sampler picks the
indices of each rank and epoch and resumes mid-epoch exactly; LitData's own shuffling,
distributed chunk assignment and loader state are not used. Since the bytes are the
original JPEGs, ``data.decode: reduced`` works on shards as on folders. Reads in a random
order touch every chunk, and LitData reads a local chunk ahead in full when it maps it
(``MADV_SEQUENTIAL``, ``MADV_WILLNEED``): best when the page cache holds the split
(measured in benchmarks/SHARDS.md).

Why LitData (Lightning AI's streaming format) rather than WebDataset: a LitData
``StreamingDataset`` reads any sample by its index (``dataset[i]``; local chunks are
memory-mapped in place), which our per-sample seeded views, our per-rank index sampler and
the evaluation subsets need, while WebDataset's pipeline reads tar shards as a stream in
order (indexed reads need its separate ``wids`` package and a shard index). LitData also
splits chunks across DDP ranks and loader workers itself, keeps a resumable loader state
(``StreamingDataLoader.state_dict``), streams from ``s3://`` / ``gs://`` URLs, and comes from
the makers of Lightning, whose Trainer runs our pretraining.

Object stores are untested here (no bucket to test with): a ``data.root`` URL is passed to
LitData as it is, and reading by index there fetches each sample's bytes on demand.

References:
    - LitData: https://github.com/Lightning-AI/litData (``StreamingDataset``,
      ``streaming/writer.py`` ``BinaryWriter``)
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.data import (
    DatasetUnavailableError,
    EncodedImages,
    ImageFolderDataset,
    resolve_root,
    split_folders,
)
from ssl_mae_plugin.extras import require

logger = logging.getLogger(__name__)

SPLIT_INFO = "ssl_mae_split.json"  # beside LitData's index.json
PROGRESS_EVERY = 10_000  # images between progress lines while writing
# Chunks a reading process keeps memory-mapped at most (one file descriptor each); LitData
# keeps 4 by default and also bounds them by the RAM.
MAPPED_CHUNKS = 256


def _litdata(what: str) -> Any:
    return require("litdata", "shards", what)


@dataclass(frozen=True)
class SplitPlan:
    """One split to write: its image folder and the folder it becomes."""

    split: str
    images: ImageFolderDataset
    out: Path


def plan_shards(
    source_root: str | Path,
    out_dir: str | Path,
    splits: list[str] | None = None,
    chunk_bytes: str = "64MB",
) -> list[SplitPlan]:
    """Check everything ``ssl-mae shards`` needs before it reads or writes any image.

    Args:
        source_root: An image folder: ``<source_root>/<split>/<class>/<image>``.
        out_dir: Where ``<out_dir>/<split>/`` is written.
        splits: The splits to write; ``None``: every sub-folder of ``source_root``.
        chunk_bytes: The size of a chunk file, as LitData reads it (``"64MB"``).

    Returns:
        One plan per split, in the order given.

    Raises:
        MissingExtraError: If LitData is not installed.
        DatasetUnavailableError: For a missing source, split or class folder.
        ValueError: For an output split that exists and is not empty, or a chunk size
            LitData does not read.
    """
    _litdata("ssl-mae shards")
    from litdata.utilities.format import _convert_bytes_to_int  # what BinaryWriter applies

    try:
        _convert_bytes_to_int(chunk_bytes)
    except ValueError as error:
        raise ValueError(f"--chunk-bytes {chunk_bytes!r}: {error}") from error
    source_root, out_dir = Path(source_root).expanduser(), Path(out_dir).expanduser()
    if not source_root.is_dir():
        raise DatasetUnavailableError(f"source folder not found: {source_root}")
    if splits is None:
        splits = split_folders(source_root)
        if not splits:
            raise DatasetUnavailableError(f"no split folders in {source_root}")
    plans = []
    for split in splits:
        folder, out = source_root / split, out_dir / split
        if not folder.is_dir():
            raise DatasetUnavailableError(
                f"split folder not found: {folder} (splits in {source_root}: "
                f"{', '.join(split_folders(source_root)) or 'none'}; choose them with --splits)"
            )
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ValueError(f"output split exists and is not empty: {out}")
        plans.append(SplitPlan(split, ImageFolderDataset(folder), out))
    return plans


class _SourceBytes(Dataset):
    """The bytes, label and name of the folder's samples, in the order to be written."""

    def __init__(self, images: ImageFolderDataset, order: np.ndarray) -> None:
        self.images, self.order = images, order
        self.prefix = len(str(images.root)) + 1  # paths are <root>/<class>/<file>

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> dict[str, Any]:
        path, label = self.images.samples[int(self.order[position])]
        with open(path, "rb") as file:
            data = file.read()
        return {"image": data, "label": label, "name": path[self.prefix :].replace(os.sep, "/")}


def write_split(
    plan: SplitPlan, chunk_bytes: str = "64MB", workers: int = 4, seed: int = 0
) -> dict[str, Any]:
    """Write one split as LitData chunks in a seeded order; see the module docstring.

    Args:
        plan: From :func:`plan_shards`.
        chunk_bytes: The size of a chunk file (LitData's ``chunk_bytes``).
        workers: Processes reading the files (0: this process); more help on network
            file systems.
        seed: Seed of the order.

    Returns:
        What :data:`SPLIT_INFO` holds, without the per-sample labels.
    """
    _litdata("ssl-mae shards")
    from litdata.streaming.writer import BinaryWriter

    images = plan.images
    order = np.random.default_rng(seed).permutation(len(images))
    partial = plan.out.parent / f".{plan.out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)  # left by an interrupted run
    try:
        writer = BinaryWriter(str(partial), chunk_bytes=chunk_bytes)
        # in order, read ahead by the workers; lists of samples (fewer messages than one each)
        batches = DataLoader(
            _SourceBytes(images, order), batch_size=64, num_workers=workers, collate_fn=list
        )
        position = 0
        for batch in batches:
            for sample in batch:
                writer[position] = sample
                position += 1
                if position % PROGRESS_EVERY == 0:
                    logger.info("%s: %d / %d images", plan.split, position, len(order))
        writer.done()
        writer.merge()
        targets = [images.targets[i] for i in order.tolist()]
        info = {
            "classes": list(images.classes),
            "counts": np.bincount(targets, minlength=len(images.classes)).tolist(),
            "images": len(targets),
            "chunks": len(json.loads((partial / "index.json").read_text())["chunks"]),
            "seed": seed,
            "source": str(images.root.resolve()),
        }
        (partial / SPLIT_INFO).write_text(json.dumps({**info, "targets": targets}))
        if plan.out.is_dir():  # empty (checked by plan_shards)
            plan.out.rmdir()
        os.rename(partial, plan.out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return info


class ShardDataset(EncodedImages):
    """One split written by ``ssl-mae shards``, read by index: ``(PIL RGB image, label)``.

    Samples are read through LitData's ``StreamingDataset`` (one per process, made on first
    use, so loader workers each open their own), one sample per read (``batch_decode=0``:
    LitData would otherwise deserialize a window of up to 256 small samples per read). A
    local split's chunks stay memory-mapped once read, up to :data:`MAPPED_CHUNKS` (LitData
    keeps 4: reads in a random order would map a chunk anew for almost every sample).

    Args:
        root: The split's folder (``<data.root>/<split>``), or a URL LitData reads.
        on_bad_image: ``"skip"`` or ``"error"`` (see :class:`EncodedImages`).
        bad_image_log: Where skipped samples are listed, as ``<root>[<index>]=<name>``.

    Raises:
        MissingExtraError: If LitData is not installed.
        DatasetUnavailableError: If the folder is missing or not a finished split.
    """

    def __init__(
        self,
        root: str,
        on_bad_image: str = "skip",
        bad_image_log: str | Path | None = None,
    ) -> None:
        super().__init__(on_bad_image, bad_image_log)
        _litdata("data.dataset: shards")
        self.root = resolve_root(root)
        info = _read_split_info(self.root)
        self.classes, self.targets = list(info["classes"]), list(info["targets"])
        self._options: dict[str, int] = {"batch_decode": 0}
        if "://" not in self.root:  # a URL keeps LitData's default (its chunk downloads)
            self._options["max_pre_download"] = min(info["chunks"], MAPPED_CHUNKS)
        self._stream: Any = None
        self._stream_pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stream": None, "_stream_pid": None}  # reopened per process

    def _streaming(self) -> Any:
        if self._stream is None or self._stream_pid != os.getpid():
            litdata = _litdata("data.dataset: shards")
            self._stream = litdata.StreamingDataset(self.root, **self._options)
            self._stream_pid = os.getpid()
        return self._stream

    def encoded(self, index: int) -> tuple[io.BytesIO, int, str]:
        """``(the image's bytes, label, <root>[<index>]=<source name>)`` of sample ``index``."""
        sample = self._streaming()[index]
        name = f"{self.root}[{index}]={sample['name']}"
        return io.BytesIO(sample["image"]), int(sample["label"]), name


def _read_split_info(folder: str) -> dict[str, Any]:
    """The :data:`SPLIT_INFO` of a split folder (a URL's through LitData's downloader)."""
    if "://" in folder:  # untested: no object store here
        from litdata.streaming.downloader import get_downloader

        with tempfile.TemporaryDirectory() as local:
            path = Path(local) / SPLIT_INFO
            get_downloader(folder, local, []).download_file(f"{folder}/{SPLIT_INFO}", str(path))
            return json.loads(path.read_text())
    path = Path(folder) / SPLIT_INFO
    if path.is_file():
        return json.loads(path.read_text())
    split, root = path.parent, path.parent.parent
    if not root.is_dir():
        raise DatasetUnavailableError(f"data folder not found: {root}")
    if not split.is_dir():
        raise DatasetUnavailableError(
            f"shard folder not found: {split} (splits in {root}: "
            f"{', '.join(split_folders(root)) or 'none'}; write them with `ssl-mae shards`, "
            "choose them with data.train_split / data.val_split)"
        )
    raise DatasetUnavailableError(
        f"not a finished shard folder (no {SPLIT_INFO}): {split}; write it with `ssl-mae shards`"
    )
