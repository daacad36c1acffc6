import pytest
import torch
import torch.multiprocessing as mp
from lightning_fabric.plugins.environments.lightning import find_free_network_port
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_mae_plugin import MAE
from ssl_mae_plugin.evaluation import (
    PooledBackbone,
    cached_features,
    extract_features,
)


class DropoutBackbone(nn.Module):
    """Linear -> BatchNorm -> Dropout; records its train/eval mode on every call."""

    def __init__(self, dim_in=6, dim_out=4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, dim_out), nn.BatchNorm1d(dim_out), nn.Dropout(0.5)
        )
        self.modes = []

    def forward_features(self, x):
        self.modes.append([m.training for m in self.modules()])
        return self.net(x)


def _loader(n=10, dim=6, batch_size=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g)
    y = torch.arange(n) % 3
    return x, y, DataLoader(TensorDataset(x, y), batch_size=batch_size)


def test_features_are_the_eval_mode_outputs_in_loader_order():
    x, y, loader = _loader()
    backbone = DropoutBackbone()
    backbone.net[1].running_mean.fill_(0.3)  # eval BN uses these, train BN would not
    features, labels = extract_features(backbone, loader, progress=False)
    backbone.eval()
    with torch.no_grad():
        expected = backbone.net(x)
    torch.testing.assert_close(features, expected)
    assert torch.equal(labels, y) and labels.dtype == torch.int64
    assert features.dtype == torch.float32 and features.device.type == "cpu"


def test_backbone_is_in_eval_mode_during_extraction_and_its_modes_are_restored():
    _, _, loader = _loader()
    backbone = DropoutBackbone()
    backbone.train()
    backbone.net[2].eval()  # a submodule the caller had put in eval mode on purpose
    features, _ = extract_features(backbone, loader, progress=False)
    assert backbone.modes and all(not any(modes) for modes in backbone.modes)
    assert backbone.training and backbone.net[0].training and backbone.net[1].training
    assert not backbone.net[2].training
    assert not features.requires_grad


def test_bf16_autocast_gives_float32_features_close_to_fp32():
    _, _, loader = _loader(n=8, dim=16)
    backbone = DropoutBackbone(dim_in=16, dim_out=8)
    full, _ = extract_features(backbone, loader, progress=False)
    half, _ = extract_features(backbone, loader, precision="bf16", progress=False)
    assert half.dtype == torch.float32
    assert not torch.equal(full, half)  # bf16 really ran
    torch.testing.assert_close(half, full, atol=5e-2, rtol=5e-2)


def test_unknown_precision_and_non_2d_features_are_rejected():
    _, _, loader = _loader()
    with pytest.raises(ValueError, match="precision"):
        extract_features(DropoutBackbone(), loader, precision="16")

    class TokenBackbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(6, 4)

        def forward_features(self, x):
            return self.proj(x)[:, None].expand(-1, 3, -1)  # [N, 3, D] tokens

    with pytest.raises(ValueError, match="PooledBackbone"):
        extract_features(TokenBackbone(), loader, progress=False)


def test_pooled_backbone_gives_mae_cls_and_mean_features():
    torch.manual_seed(0)
    mae = MAE(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=1,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    images = torch.randn(5, 3, 16, 16)
    loader = DataLoader(TensorDataset(images, torch.zeros(5, dtype=torch.int64)), batch_size=2)
    for pool in ("cls", "mean"):
        features, _ = extract_features(PooledBackbone(mae, pool=pool), loader, progress=False)
        mae.eval()
        with torch.no_grad():
            torch.testing.assert_close(features, mae.forward_features(images, pool=pool))
    assert features.shape == (5, 32)


def test_cache_hit_returns_the_stored_tensors_without_recomputing(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(6, 3), torch.arange(6)

    key = {"checkpoint": "a.ckpt", "split": "train", "pool": "cls"}
    first = cached_features(tmp_path, key, compute)
    second = cached_features(tmp_path, dict(reversed(key.items())), compute)  # same key
    assert len(calls) == 1
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    third = cached_features(tmp_path, {**key, "pool": "mean"}, compute)
    assert len(calls) == 2 and not torch.equal(third[0], first[0])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.startswith("features-") and f.endswith(".pt") for f in files)


def _ddp_worker(rank, world, port, x, y, out):
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    torch.set_num_threads(1)  # forked like a DataLoader worker: keep OpenMP out of it
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        backbone = DropoutBackbone(dim_in=x.shape[1])
        dataset = TensorDataset(x, y)
        sampler = DistributedSampler(dataset, shuffle=False)
        loader = DataLoader(dataset, batch_size=2, sampler=sampler)
        features, labels = extract_features(backbone, loader, progress=False)
        backbone.eval()
        with torch.no_grad():
            expected = backbone.net(x)
        result = (torch.allclose(features, expected), torch.equal(labels, y), len(features))
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_gather_restores_dataset_order_and_drops_padding(tmp_path):
    x = torch.randn(7, 6)  # 7 samples on 2 ranks: the sampler pads one duplicate
    y = torch.arange(7)
    # fork (as DataLoader workers) so the workers need not import torch and timm again
    args = (2, find_free_network_port(), x, y, str(tmp_path))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert results == [(True, True, 7), (True, True, 7)]
