"""Sharded datasets: ``ssl-mae shards`` writes LitData chunks that read back as the folder."""

from __future__ import annotations

import json
import pickle
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lightly.data import MultiViewCollate
from lightly.transforms import MAETransform
from torch.utils.data import DataLoader

from ssl_mae_plugin.cli import main
from ssl_mae_plugin.data import (
    DatasetUnavailableError,
    ImageFolderDataset,
    build_dataset,
    default_normalization,
    eval_transform,
    limit_dataset,
)
from ssl_mae_plugin.evaluation.features import extract_features
from ssl_mae_plugin.evaluation.transforms import TransformedDataset
from ssl_mae_plugin.extras import MissingExtraError
from ssl_mae_plugin.mae import MAE
from ssl_mae_plugin.pretrain.decoding import ReducedDecodeCrops
from ssl_mae_plugin.pretrain.sampling import EpochSampler, SeededViews
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.runner import run_recipe
from ssl_mae_plugin.shards import SPLIT_INFO, ShardDataset, plan_shards, write_split
from tests.conftest import TINY_VIT, tiny_recipe

CHUNK = "16KB"  # about 17 CIFAR JPEGs a chunk: several chunks per split


def write_shards(source: Path, out: Path, *extra: str) -> None:
    assert main(["shards", str(source), str(out), "--chunk-bytes", CHUNK, *extra]) == 0


@pytest.fixture(scope="module")
def shards(cifar_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "cifar"
    write_shards(cifar_folder, out, "--workers", "0")
    return out


def read_all(dataset: ShardDataset) -> list[tuple[bytes, int, str]]:
    """``(bytes, label, source name)`` of every sample, in the shards' order."""
    samples = []
    for index in range(len(dataset)):
        stream, label, name = dataset.encoded(index)
        samples.append((stream.read(), label, name.split("=", 1)[1]))
    return samples


def source_name(folder: ImageFolderDataset, index: int) -> str:
    return Path(folder.samples[index][0]).relative_to(folder.root).as_posix()


def test_the_command_writes_every_split_atomically(shards, capsys):
    assert sorted(p.name for p in shards.iterdir()) == ["test", "train"]  # no partial left
    for split, images in (("train", 160), ("test", 50)):
        files = {p.name for p in (shards / split).iterdir()}
        assert {"index.json", SPLIT_INFO} <= files
        info = json.loads((shards / split / SPLIT_INFO).read_text())
        assert info["chunks"] == sum(name.startswith("chunk-") for name in files) > 2
        assert info["images"] == images and info["counts"] == [images // 10] * 10
        assert info["seed"] == 0 and info["source"].endswith(split)


@pytest.mark.parametrize("split", ["train", "test"])
def test_shards_hold_the_folders_images_bytes_and_labels(cifar_folder, shards, split):
    folder = ImageFolderDataset(cifar_folder / split)
    dataset = build_dataset("shards", split, root=shards)
    assert isinstance(dataset, ShardDataset)
    assert dataset.classes == folder.classes and len(dataset) == len(folder)
    samples = read_all(dataset)
    ours = Counter((data, label) for data, label, _ in samples)
    theirs = Counter((Path(path).read_bytes(), label) for path, label in folder.samples)
    assert ours == theirs  # the original bytes, not re-encoded
    by_name = {
        name: index for index, name in enumerate(source_name(folder, i) for i in range(len(folder)))
    }
    for index, (_, label, name) in enumerate(samples[:20]):
        image, read_label = dataset[index]
        expected, expected_label = folder[by_name[name]]
        assert image.mode == "RGB" and read_label == label == expected_label
        assert np.array_equal(np.asarray(image), np.asarray(expected))
    assert dataset.targets == [label for _, label, _ in samples]


def test_the_order_mixes_classes_and_follows_the_seed(cifar_folder, shards, tmp_path):
    index = json.loads((shards / "train" / "index.json").read_text())
    first = index["chunks"][0]["chunk_size"]
    targets = json.loads((shards / "train" / SPLIT_INFO).read_text())["targets"]
    assert len(set(targets[:first])) >= 5  # a class-ordered folder would give one class
    write_shards(cifar_folder, tmp_path / "again", "--splits", "train", "--workers", "2")
    chunks = sorted(p.name for p in (shards / "train").glob("chunk-*"))
    for name in chunks:  # other reader processes, the same bytes
        assert (tmp_path / "again" / "train" / name).read_bytes() == (
            shards / "train" / name
        ).read_bytes()
    write_shards(
        cifar_folder, tmp_path / "other", "--splits", "train", "--seed", "1", "--workers", "0"
    )
    other = json.loads((tmp_path / "other" / "train" / SPLIT_INFO).read_text())["targets"]
    assert other != targets and sorted(other) == sorted(targets)


def test_targets_and_subsets_need_no_image(shards, monkeypatch):
    dataset = build_dataset("shards", "train", root=shards)
    monkeypatch.setattr(ShardDataset, "_streaming", lambda self: pytest.fail("read an image"))
    subset = limit_dataset(dataset, 30, seed=0)
    assert len(subset) == 30 and Counter(subset.targets) == Counter({c: 3 for c in range(10)})


def test_two_ranks_read_disjoint_indices_covering_the_split(cifar_folder, shards):
    dataset = build_dataset("shards", "train", root=shards)
    names = [name for _, _, name in read_all(dataset)]
    seen = []
    for rank in (0, 1):
        sampler = EpochSampler(len(dataset), batch_size=8, seed=0, num_replicas=2, rank=rank)
        seen.append({names[index] for index, _ in sampler})
    folder = ImageFolderDataset(cifar_folder / "train")
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {source_name(folder, i) for i in range(len(folder))}


def test_a_resumed_epoch_reads_the_views_of_an_uninterrupted_one(shards):
    dataset = build_dataset("shards", "train", root=shards)
    views = SeededViews(dataset, MAETransform(input_size=16), seed=0)

    def batches(skip: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        sampler = EpochSampler(len(dataset), 8, seed=0, start_epoch=1, skip_batches=skip)
        loader = DataLoader(
            views, batch_size=8, sampler=sampler, collate_fn=MultiViewCollate(), num_workers=1
        )
        return [(batch[0][0], batch[1]) for batch in loader]

    whole, resumed = batches(0), batches(3)
    assert len(resumed) == len(whole) - 3 > 0
    for (images, labels), (again, again_labels) in zip(whole[3:], resumed, strict=True):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)


def test_loader_workers_and_copies_read_the_same_samples(shards):
    dataset = build_dataset("shards", "test", root=shards)
    expected = [(np.asarray(image).tobytes(), label) for image, label in dataset]
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    assert [(np.asarray(image).tobytes(), label) for image, label in loader] == expected
    copy = pickle.loads(pickle.dumps(dataset))  # after reads: spawned workers get such copies
    assert [(np.asarray(image).tobytes(), label) for image, label in copy] == expected


def features(model: MAE, dataset) -> tuple[torch.Tensor, torch.Tensor]:
    transform = eval_transform(32, default_normalization("shards"))
    loader = DataLoader(TransformedDataset(dataset, transform), batch_size=64)
    return extract_features(model, loader, progress=False)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_fixed_model_sees_the_same_features_sample_by_sample(cifar_folder, shards, split):
    torch.manual_seed(0)
    vit = {key: value for key, value in TINY_VIT.items() if key != "backbone"}
    model = MAE(img_size=32, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, **vit)
    folder = ImageFolderDataset(cifar_folder / split)
    dataset = build_dataset("shards", split, root=shards)
    by_name = {source_name(folder, i): i for i in range(len(folder))}
    mapping = [by_name[name] for _, _, name in read_all(dataset)]
    (ours, our_labels), (theirs, their_labels) = features(model, dataset), features(model, folder)
    assert torch.equal(ours, theirs[mapping]) and torch.equal(our_labels, their_labels[mapping])


def test_reduced_decoding_crops_shards_as_files(cifar_folder, shards):
    folder = ImageFolderDataset(cifar_folder / "test")
    dataset = build_dataset("shards", "test", root=shards)
    by_name = {source_name(folder, i): i for i in range(len(folder))}
    # 8-pixel crops of 32-pixel JPEGs: most boxes decode at 1/2 or 1/4 size (draft mode)
    ours, theirs = (
        ReducedDecodeCrops(dataset, 8, (0.2, 1.0)),
        ReducedDecodeCrops(folder, 8, (0.2, 1.0)),
    )
    for index, (_, _, name) in enumerate(read_all(dataset)[:20]):
        torch.manual_seed(index)
        crop, label = ours[index]
        torch.manual_seed(index)
        expected, expected_label = theirs[by_name[name]]
        assert label == expected_label and np.array_equal(np.asarray(crop), np.asarray(expected))


@pytest.mark.parametrize("decode", ["full", "device"])  # reduced: the test above
def test_mae_pretrains_and_evaluates_on_shards(shards, tmp_path, decode):
    raw = tiny_recipe(
        shards,
        tmp_path,
        data={"dataset": "shards", "val_split": None, "num_workers": 1, "decode": decode},
        pretrain={"epochs": 1},
        eval={"linear": None, "random_init": False, "pixels": False, "knn": {"k": 5}},
    )
    recipe = recipe_from_dict(raw)
    assert recipe.data.val_split == "test"  # the only validation split there
    report = run_recipe(recipe, log=lambda _: None)
    (row,) = report["rows"]
    assert row["pretrain"]["epochs"] == 1 and 0 <= row["knn"]["top1"] <= 1


def corrupt_folder(cifar_folder: Path, target: Path) -> Path:
    shutil.copytree(cifar_folder / "test", target / "test", symlinks=True)
    (target / "test" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return target


def test_a_corrupt_image_in_a_shard_follows_on_bad_image(cifar_folder, tmp_path):
    source = corrupt_folder(cifar_folder, tmp_path / "source")
    write_shards(source, tmp_path / "out", "--workers", "0")
    log = tmp_path / "bad.txt"
    dataset = build_dataset("shards", "test", root=tmp_path / "out", bad_image_log=log)
    assert len(dataset) == 51  # kept: found when read, as in the folder
    names = [name for _, _, name in read_all(dataset)]
    broken = names.index("cat/broken.jpg")
    image, label = dataset[broken]  # the next readable sample takes its place
    after = (broken + 1) % len(dataset)
    assert label == dataset.targets[after]
    assert np.array_equal(np.asarray(image), np.asarray(dataset[after][0]))
    assert log.read_text().split() == [f"{dataset.root}[{broken}]=cat/broken.jpg"]
    strict = build_dataset("shards", "test", root=tmp_path / "out", on_bad_image="error")
    with pytest.raises(RuntimeError, match=r"unreadable image .*\[\d+\]=cat/broken.jpg"):
        strict[broken]


def test_an_interrupted_write_leaves_no_split(cifar_folder, tmp_path, monkeypatch):
    from ssl_mae_plugin import shards as module

    out = tmp_path / "out"
    (out / ".test.partial").mkdir(parents=True)  # left by a killed run
    (out / ".test.partial" / "junk").write_text("x")
    (plan,) = plan_shards(cifar_folder, out, ["test"], CHUNK)

    def fail(self, position):
        if position == 30:
            raise OSError("disk gone")
        return original(self, position)

    original = module._SourceBytes.__getitem__
    monkeypatch.setattr(module._SourceBytes, "__getitem__", fail)
    with pytest.raises(OSError, match="disk gone"):
        write_split(plan, CHUNK, workers=0)
    assert list(out.iterdir()) == []  # neither a split nor the partial folder
    monkeypatch.undo()
    write_split(plan, CHUNK, workers=0)
    assert len(build_dataset("shards", "test", root=out)) == 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing", "{tmp}/out"], "source folder not found: {tmp}/missing"),
        (["{src}", "{tmp}/out", "--splits", "val"], "split folder not found: {src}/val"),
        (["{src}", "{shards}"], "output split exists and is not empty: {shards}/test"),
        (["{src}", "{tmp}/out", "--chunk-bytes", "lots"], "--chunk-bytes 'lots'"),
    ],
)
def test_bad_command_input_is_one_line_exit_2(
    cifar_folder, shards, tmp_path, capsys, args, message
):
    names = {"tmp": tmp_path, "src": cifar_folder, "shards": shards}
    assert main([arg.format(**names) for arg in ["shards", *args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ssl-mae: error: {message.format(**names)}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_recipe_on_missing_shards_exits_2_naming_the_folder(shards, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    for root, message in (
        (tmp_path / "nowhere", f"data folder not found: {tmp_path / 'nowhere'}"),
        (shards, f"shard folder not found: {shards / 'val'} (splits in {shards}: test, train"),
    ):
        raw = tiny_recipe(root, tmp_path, data={"dataset": "shards", "val_split": "val"})
        recipe.write_text(json.dumps(raw))
        assert main(["pretrain", str(recipe)]) == 2
        assert message in capsys.readouterr().err
    (shards.parent / "unfinished" / "train").mkdir(parents=True)
    with pytest.raises(
        DatasetUnavailableError, match=f"not a finished shard folder .*{SPLIT_INFO}"
    ):
        build_dataset("shards", "train", root=shards.parent / "unfinished")


def test_without_litdata_the_extra_is_named(cifar_folder, shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "litdata", None)  # import litdata fails
    hint = "pip install 'ssl-mae-plugin[shards]'"
    assert main(["shards", str(cifar_folder), str(tmp_path / "out")]) == 2
    assert hint in capsys.readouterr().err
    with pytest.raises(MissingExtraError, match=r"data.dataset: shards needs the litdata"):
        build_dataset("shards", "train", root=shards)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(tiny_recipe(shards, tmp_path, data={"dataset": "shards"})))
    assert main(["pretrain", str(recipe)]) == 2
    assert hint in capsys.readouterr().err
