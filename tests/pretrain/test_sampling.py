import random

import numpy as np
import pytest
import torch
from lightly.data import MultiViewCollate
from lightly.transforms import MAETransform
from PIL import Image
from torch.utils.data import DataLoader

from ssl_mae_plugin.pretrain.sampling import EpochSampler, SeededViews, sample_seed


def test_sample_seed_is_deterministic_and_distinct():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 3 * 3 * 50
    assert all(0 <= s < 2**63 for s in seeds)


def batches(sampler, batch_size):
    keys = list(sampler)
    return [keys[i : i + batch_size] for i in range(0, len(keys), batch_size)]


def test_epoch_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(100, 10, seed=3), EpochSampler(100, 10, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert {index for index, epoch in first} == set(range(100))
    assert all(epoch == 0 for _, epoch in first)
    assert all(epoch == 1 for _, epoch in a)


def test_ranks_together_see_the_single_process_batches():
    single = EpochSampler(103, 8, seed=1)
    ranks = [EpochSampler(103, 4, seed=1, num_replicas=2, rank=r) for r in range(2)]
    for epoch in range(3):
        for sampler in [single, *ranks]:
            sampler.set_epoch(epoch)
        merged = [set(b0 + b1) for b0, b1 in zip(*(batches(r, 4) for r in ranks), strict=True)]
        assert merged == [set(batch) for batch in batches(single, 8)]
        assert len(single) == 96  # 103 // 8 whole batches


def test_resume_skips_done_batches_of_the_start_epoch_only():
    full = EpochSampler(64, 8, seed=0)
    full.set_epoch(2)
    resumed = EpochSampler(64, 8, seed=0, start_epoch=2, skip_batches=3)
    assert list(resumed) == list(full)[24:]
    resumed.set_epoch(3)
    full.set_epoch(3)
    assert list(resumed) == list(full)


def test_batch_larger_than_dataset_is_an_error():
    with pytest.raises(ValueError, match="batch_size=64 is larger than the dataset"):
        EpochSampler(50, 32, num_replicas=2)


class Squares(torch.utils.data.Dataset):
    classes = ("a", "b")

    def __len__(self):
        return 24

    def __getitem__(self, index):
        pixels = np.full((16, 16, 3), index * 10 % 255, dtype=np.uint8)
        pixels[::2, ::3] = 255 - index
        return Image.fromarray(pixels), index % 2


def test_views_depend_on_seed_epoch_and_index_only_and_leave_global_rng_alone():
    views = SeededViews(Squares(), MAETransform(input_size=16), seed=5)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    before = torch.rand(1), random.random(), np.random.rand()
    first, label, seed = views[(3, 0)]
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    views[(4, 0)]
    assert (torch.rand(1), random.random(), np.random.rand()) == before
    again, _, _ = views[(3, 0)]
    other_epoch, _, _ = views[(3, 1)]
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other_epoch[0])
    assert label == 1 and seed == sample_seed(5, 0, 3)


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_do_not_depend_on_the_number_of_workers(workers):
    views = SeededViews(Squares(), MAETransform(input_size=16), seed=5)

    def loader(num_workers):
        sampler = EpochSampler(len(views), 6, seed=5)
        return DataLoader(
            views, batch_size=6, sampler=sampler, collate_fn=MultiViewCollate(),
            num_workers=num_workers,
        )  # fmt: skip

    reference = [b[0][0] for b in loader(0)]
    other = [b[0][0] for b in loader(workers)]
    assert all(torch.equal(a, b) for a, b in zip(reference, other, strict=True))
