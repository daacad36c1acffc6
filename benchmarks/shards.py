"""Images/s read through shards (``data.dataset: shards``) against the image folder they hold.

The 10,000 CIFAR-10 test JPEGs (32 x 32, about 900 bytes each) of
``../shared/datasets/cifar10/test`` are copied to a fresh folder on the local disk and
written from there to shards by ``ssl-mae shards`` (seed 0) twice: with the default 64 MB
chunks (the whole split is one 9 MB file) and with 512 KB chunks (about 570 images each, as
many as a 64 MB chunk holds of ImageNet's ~110 KB files, so that random reads switch files
as they would on ImageNet). The three sources are read in a seeded random order (a new one
each pass, as our sampler reads an epoch) through a ``DataLoader`` (batches of 256) with 1
and with 2 worker processes, two ways:

- ``bytes``: the encoded image only (the folder: open and read the file; shards: LitData's
  read of the sample), no decoding;
- ``decode``: ``dataset[i]`` (PIL RGB) and our evaluation transform at 32 px (bicubic
  resize, center crop, to tensor, normalise), what evaluation reads.

Cold: the page cache is dropped (``echo 3 > /proc/sys/vm/drop_caches``, needs root) before
that pass; warm: the passes after it. The loader's workers are persistent (as in
pretraining) and started before the first pass, so no pass counts their start-up.

Also how much the page cache grows while a few random samples of ImageNet-sized files are
read (see ``read_amplification``).

Run: ``.venv/bin/python benchmarks/shards.py`` (writes shards.json / SHARDS.md) as root on an
idle machine; ``--dry-run`` checks every piece on 500 images and writes nothing;
``--markdown`` writes SHARDS.md again from shards.json.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import HERE, REPO, machine_info, markdown_table, summarize, write_json
from torch.utils.data import DataLoader, Dataset

from ssl_mae_plugin.data import EncodedImages, build_dataset, default_normalization, eval_transform
from ssl_mae_plugin.evaluation.transforms import TransformedDataset
from ssl_mae_plugin.shards import plan_shards, write_split

SOURCE = REPO.parent / "shared" / "datasets" / "cifar10" / "test"
CHUNK_BYTES = ("64MB", "512KB")  # the default: one file here; ~570 images a file
WORKERS = (1, 2)
WARM_PASSES = 3
BATCH = 256
PACKAGES = ("litdata", "pillow")
LARGE_FILES, LARGE_FILE_BYTES, SAMPLED = 2000, 100_000, 40  # the read-amplification split
OUTPUT_FILES = True


class EncodedBytes(Dataset):
    """The number of encoded bytes of each sample, read but not decoded."""

    def __init__(self, images: EncodedImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> int:
        source = self.images.encoded(index)[0]
        return len(Path(source).read_bytes() if isinstance(source, str) else source.getbuffer())


def drop_page_cache() -> bool:
    """Drop the kernel's page cache (root only); whether it was dropped."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


class Reader:
    """A loader with persistent workers over ``items``, reading a new random order per pass.

    The workers are started before the first pass, so that no pass counts their start-up.
    """

    def __init__(self, items: Dataset, workers: int) -> None:
        self.items, self.order = items, []
        self.loader = DataLoader(
            items,
            batch_size=BATCH,
            sampler=self.order,  # filled in place before each pass
            num_workers=workers,
            persistent_workers=True,
        )
        list(self.loader)  # no index yet: only starts the workers

    def images_per_second(self, epoch: int) -> float:
        """One pass over every image in epoch ``epoch``'s seeded random order."""
        generator = torch.Generator().manual_seed(epoch)
        self.order[:] = torch.randperm(len(self.items), generator=generator).tolist()
        start = time.perf_counter()
        for _ in self.loader:
            pass
        return len(self.order) / (time.perf_counter() - start)


def write_shards(folder: Path, out: Path, chunk_bytes: str) -> float:
    """Seconds the work of ``ssl-mae shards`` takes (2 reader processes), cache dropped first.

    What the command does after its imports: :func:`plan_shards` and :func:`write_split`.
    """
    drop_page_cache()
    start = time.perf_counter()
    for plan in plan_shards(folder, out, chunk_bytes=chunk_bytes):
        write_split(plan, chunk_bytes, workers=2)
    return time.perf_counter() - start


def copy_images(out: Path, per_class: int | None) -> Path:
    """A fresh copy of the test JPEGs (real files, not links to the shared ones)."""
    for class_dir in sorted(SOURCE.iterdir()):
        (out / "test" / class_dir.name).mkdir(parents=True)
        for file in sorted(class_dir.iterdir())[:per_class]:
            shutil.copyfile(file, out / "test" / class_dir.name / file.name)
    return out


def measure(sources: dict[str, EncodedImages], mode: str, workers: int) -> list[dict]:
    """Cold and warm images/s of every source, read ``mode`` with ``workers`` workers.

    Each source's cold pass follows a drop of the page cache; then every source is read
    once untimed (the later drops emptied the earlier sources' cache) and ``WARM_PASSES``
    times timed, the sources taking turns so that a slow spell falls on all.
    """
    transform = eval_transform(32, default_normalization("cifar10"))
    readers = {
        name: Reader(
            EncodedBytes(images) if mode == "bytes" else TransformedDataset(images, transform),
            workers,
        )
        for name, images in sources.items()
    }
    cold = {}
    for name, reader in readers.items():
        cold[name] = reader.images_per_second(epoch=0) if drop_page_cache() else None
    for reader in readers.values():
        reader.images_per_second(epoch=0)
    warm: dict[str, list[float]] = {name: [] for name in readers}
    for epoch in range(1, WARM_PASSES + 1):
        for name, reader in readers.items():
            warm[name].append(reader.images_per_second(epoch))
    return [
        {"mode": mode, "workers": workers, "source": name, "cold": cold[name], "warm": warm[name]}
        for name in readers
    ]


def resident_mb(files: list[Path]) -> float:
    """MB of ``files`` in the page cache (``mincore`` of a read-only mapping of each)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = 0
    for path in files:
        size = path.stat().st_size
        with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = np.frombuffer(m, dtype=np.uint8)
            flags = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
            if libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(size), flags):
                raise OSError(ctypes.get_errno(), f"mincore failed on {path}")
            pages += sum(flag & 1 for flag in flags)
            del view
    return pages * mmap.PAGESIZE / 2**20


def read_amplification(root: Path, count: int) -> dict:
    """How much the page cache grows while ``SAMPLED`` random samples of 100 KB are read.

    ``count`` files of random bytes (ImageNet's mean file size; named .jpg, never decoded)
    in 10 class folders, and their shards in 64 MB chunks: MB of each source's files in the
    page cache after a drop of the cache and the reads.
    """
    rng = np.random.default_rng(0)
    for number in range(count):
        path = root / "large" / "test" / f"class{number % 10}" / f"{number}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(LARGE_FILE_BYTES))
    write_shards(root / "large", root / "large-shards", "64MB")
    sources = {
        "folder": EncodedBytes(build_dataset("imagefolder", "test", root=root / "large")),
        "shards, 64MB chunks": EncodedBytes(
            build_dataset("shards", "test", root=root / "large-shards")
        ),
    }
    chosen = rng.permutation(count)[:SAMPLED].tolist()
    files = {
        "folder": sorted((root / "large" / "test").glob("*/*.jpg")),
        "shards, 64MB chunks": sorted((root / "large-shards" / "test").glob("chunk-*.bin")),
    }
    growth = {}
    for name, items in sources.items():
        drop_page_cache()
        for index in chosen:
            items[index]
        time.sleep(2)  # the read-ahead the reads started
        growth[name] = resident_mb(files[name])
    return {
        "files": count,
        "file_bytes": LARGE_FILE_BYTES,
        "split_mb": count * LARGE_FILE_BYTES / 2**20,
        "samples_read": SAMPLED,
        "sample_mb_read": SAMPLED * LARGE_FILE_BYTES / 2**20,
        "page_cache_growth_mb": growth,
    }


def main() -> None:
    global WARM_PASSES, OUTPUT_FILES
    if "--markdown" in sys.argv:  # SHARDS.md again from shards.json, without measuring
        (HERE / "SHARDS.md").write_text(markdown(json.loads((HERE / "shards.json").read_text())))
        return
    dry = "--dry-run" in sys.argv  # a quick pass on 500 images that writes nothing
    if dry:
        WARM_PASSES, OUTPUT_FILES = 1, False
    torch.set_num_threads(1)
    machine = machine_info(PACKAGES)
    with tempfile.TemporaryDirectory() as tmp:
        folder = copy_images(Path(tmp) / "folder", 50 if dry else None)
        sources: dict[str, EncodedImages] = {
            "folder": build_dataset("imagefolder", "test", root=folder)
        }
        shards = {}
        for chunk_bytes in CHUNK_BYTES:
            out = Path(tmp) / f"shards-{chunk_bytes}"
            seconds = write_shards(folder, out, chunk_bytes)
            chunks = len(list((out / "test").glob("chunk-*.bin")))
            name = f"shards, {chunk_bytes} chunks ({chunks} files)"
            sources[name] = build_dataset("shards", "test", root=out)
            shards[name] = {"chunk_bytes": chunk_bytes, "chunks": chunks, "write_seconds": seconds}
        results = []
        for mode in ("bytes", "decode"):
            for workers in WORKERS:
                results.extend(measure(sources, mode, workers))
                for row in results[-len(sources) :]:
                    print(mode, workers, row["source"], row["cold"], row["warm"])
        images = len(sources["folder"])
        amplification = read_amplification(Path(tmp), 200 if dry else LARGE_FILES)
        print(amplification)
    result = {
        "machine": machine,
        "loadavg_end": os.getloadavg(),
        "images": images,
        "shards": shards,
        "results": results,
        "read_amplification": amplification,
    }
    if OUTPUT_FILES:
        write_json(HERE / "shards.json", result)
        (HERE / "SHARDS.md").write_text(markdown(result))
    else:
        print(markdown(result))


def rate(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def table(result: dict) -> str:
    """A row per read, workers and source: cold and warm images/s."""
    folder_warm = {
        (row["mode"], row["workers"]): summarize(row["warm"])["median"]
        for row in result["results"]
        if row["source"] == "folder"
    }
    rows = []
    for row in result["results"]:
        warm = summarize(row["warm"])
        rows.append(
            [
                row["mode"],
                str(row["workers"]),
                row["source"],
                rate(row["cold"]),
                f"{rate(warm['median'])} ({rate(warm['min'])}-{rate(warm['max'])})",
                f"{warm['median'] / folder_warm[(row['mode'], row['workers'])]:.2f}x",
            ]
        )
    columns = [
        "read",
        "workers",
        "source",
        "cold img/s",
        f"warm img/s, median of {len(result['results'][0]['warm'])} (range)",
        "warm vs folder",
    ]
    return markdown_table(columns, rows, left=3)


def shard_ratios(result: dict) -> dict[tuple[str, str], list[float]]:
    """Shards' images/s over the folder's, per (read, cold or warm), over sources and workers."""
    rates = {}
    for row in result["results"]:
        rates[row["mode"], row["workers"], row["source"]] = {
            "cold": row["cold"],
            "warm": summarize(row["warm"])["median"],
        }
    ratios: dict[tuple[str, str], list[float]] = {}
    for (mode, workers, source), rate_of in rates.items():
        if source != "folder":
            folder = rates[mode, workers, "folder"]
            for kind in ("cold", "warm"):
                if rate_of[kind] and folder[kind]:
                    ratios.setdefault((mode, kind), []).append(rate_of[kind] / folder[kind])
    return ratios


def span(ratios: dict[tuple[str, str], list[float]], mode: str, kind: str) -> str:
    """``1.20-1.50x`` over the ratios of (``mode``, ``kind``)."""
    values = ratios.get((mode, kind))
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "–"


def markdown(result: dict) -> str:
    """The text of ``SHARDS.md`` for a result of ``main``."""
    machine, amplification = result["machine"], result["read_amplification"]
    start, end = machine["loadavg_start"], result["loadavg_end"]
    writes = ", ".join(
        f"{info['write_seconds']:.1f} s ({info['chunk_bytes']} chunks)"
        for info in result["shards"].values()
    )
    growth = amplification["page_cache_growth_mb"]
    ratios = shard_ratios(result)
    return f"""# Shards: reading images by index through LitData against the image folder

Written by `benchmarks/shards.py` (numbers below are that run's). Machine: {machine["cpu"]},
{machine["cpu_cores"]} cores (a VM shared with other work; load average
{start[0]:.2f} / {start[1]:.2f} / {start[2]:.2f} (1 / 5 / 15 min) at the start,
{end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} at the end), local ext4 disk (virtio); torch
{machine["torch"]}, LitData {machine["libraries"].get("litdata")}, Pillow
{machine["libraries"].get("pillow")}.

The {result["images"]:,} CIFAR-10 test JPEGs (32 x 32, ~900 bytes each), copied to a fresh
folder, against their shards written by `ssl-mae shards` with the default 64 MB chunks (the
whole split is one file) and with 512 KB chunks (~570 images a file, as many as a 64 MB
chunk holds of ImageNet's ~110 KB files, so that random reads switch files as they would
there). Each pass reads every image once in a new seeded random order, as our sampler reads
an epoch, through a `DataLoader` (batches of 256) with 1 or 2 worker processes (persistent,
started before the first pass). `bytes`: the encoded image only (open and read the file /
LitData's read of the sample); `decode`: `dataset[i]` (PIL RGB) plus our evaluation
transform at 32 px. Cold: the page cache was dropped (`echo 3 > /proc/sys/vm/drop_caches`)
just before that pass (the VM's; the host may still cache the virtual disk); warm: the next
passes. Writing the shards (the command's work after its imports, cache dropped, 2 reader
processes) took {writes}.

{table(result)}

What it says (this run): from a cold cache, shards read {span(ratios, "bytes", "cold")} the raw
images/s of the folder (one or 19 files against 10,000 small ones) and
{span(ratios, "decode", "cold")} once the images are decoded and transformed (cold passes are
single passes; between two runs of this script they differed by up to a third). With
everything in the page cache the folder reads the raw bytes faster
({span(ratios, "bytes", "warm")} for shards: a cached 900-byte file costs less than LitData's
read of a sample, tens of microseconds of Python), and decoded, shards read at
{span(ratios, "decode", "warm")} the folder's rate, about this machine's noise. Raw bytes read
slower from the 512 KB chunks than from one big file (a random read switches between 19
mapped files). All chunks of a local split stay mapped (`MAPPED_CHUNKS`); LitData keeps 4, and an
earlier run of this script with those read the 512 KB shards at 5,000-6,800 raw images/s
warm with one worker. A network file system pays more per file than this local disk;
that is where shards should gain most, not measured here.

Random reads by index bring whole chunks into the page cache: LitData maps each chunk
with `MADV_SEQUENTIAL` and, when it fits the RAM, `MADV_WILLNEED`. After a drop of the
cache, reading {amplification["samples_read"]} random samples
({amplification["sample_mb_read"]:.1f} MB) of {amplification["files"]:,} files of 100 KB
({amplification["split_mb"]:.0f} MB) left {growth["folder"]:.1f} MB of the folder's files and
{growth["shards, 64MB chunks"]:.0f} MB of its shards' chunk files (64 MB chunks) in the page
cache (`mincore`). Harmless when the page cache holds the split (each chunk is read once,
then served from memory); a split much larger than the RAM, read in a random order over
all its chunks, would be read several times over per epoch.
"""


if __name__ == "__main__":
    main()
