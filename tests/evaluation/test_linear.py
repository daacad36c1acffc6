import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ssl_mae_plugin.evaluation import (
    LARS,
    AugmentedLinearProbe,
    Budget,
    FitOptions,
    LinearHead,
    augmented_linear_probe,
    linear_probe,
)
from tests.evaluation.conftest import ClsBackbone, tiny_vit


def _blobs(n_train=300, n_val=120, dim=16, num_classes=3, spread=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_classes, dim, generator=g) * 3
    train_y = torch.arange(n_train) % num_classes
    val_y = torch.arange(n_val) % num_classes
    # very different scales per dimension, as real features have (the BN removes them)
    scale = torch.logspace(-2, 2, dim)
    train_x = (centers[train_y] + spread * torch.randn(n_train, dim, generator=g)) * scale
    val_x = (centers[val_y] + spread * torch.randn(n_val, dim, generator=g)) * scale
    return train_x, train_y, val_x, val_y


def test_head_is_bn_without_affine_and_a_small_linear_layer():
    torch.manual_seed(0)
    head = LinearHead(384, 1000)
    bn, fc = head
    assert isinstance(bn, nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.05)
    # trunc_normal's bounds are absolute (+-2, as timm's used by MAE): no visible truncation
    assert fc.weight.mean().abs().item() < 1e-3
    assert torch.equal(fc.bias, torch.zeros(1000))


@pytest.mark.parametrize("optimizer", ["sgd", "lars", "adamw"])
def test_linear_probe_on_separable_features_reaches_high_accuracy(optimizer):
    train_x, train_y, val_x, val_y = _blobs()
    # LARS moves a weight by ~lr * 1e-3 of its norm per step: few steps need a large lr
    blr = {"sgd": 0.1, "lars": 50.0, "adamw": 4e-3}[optimizer]
    out = linear_probe(
        train_x,
        train_y,
        val_x,
        val_y,
        epochs=15,
        batch_size=64,
        warmup_epochs=1,
        optimizer=optimizer,
        blr=blr,
    )
    assert out["top1"] >= 0.95
    assert out["top5"] == 1.0  # 3 classes
    assert out["epochs"] == 15 and len(out["history"]) == 15
    assert out["last_top1"] == out["top1"] == out["history"][-1]["top1"]
    assert out["best_top1"] == max(row["top1"] for row in out["history"]) >= out["top1"]
    best = out["history"][out["best_epoch"] - 1]
    assert best["epoch"] == out["best_epoch"] and best["top1"] == out["best_top1"]
    assert out["seconds"] > 0 and out["optimizer"] == optimizer


def test_linear_probe_is_reproducible_and_leaves_the_global_rng_alone():
    train_x, train_y, val_x, val_y = _blobs(spread=3.0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = linear_probe(train_x, train_y, val_x, val_y, epochs=3, batch_size=50, seed=1)
    after = torch.rand(1)
    b = linear_probe(train_x, train_y, val_x, val_y, epochs=3, batch_size=50, seed=1)
    c = linear_probe(train_x, train_y, val_x, val_y, epochs=3, batch_size=50, seed=2)
    assert torch.equal(before, after)
    assert a["history"] == b["history"]
    assert a["history"] != c["history"]


def test_eval_every_skips_epochs_but_always_evaluates_the_last():
    train_x, train_y, val_x, val_y = _blobs()
    out = linear_probe(train_x, train_y, val_x, val_y, epochs=7, batch_size=100, eval_every=3)
    assert [row["epoch"] for row in out["history"]] == [3, 6, 7]


def test_linear_probe_rejects_an_unknown_optimizer():
    train_x, train_y, val_x, val_y = _blobs()
    with pytest.raises(ValueError, match="optimizer"):
        linear_probe(train_x, train_y, val_x, val_y, optimizer="rmsprop")


def test_augmented_probe_keeps_the_backbone_frozen_in_eval_mode(image_dataset):
    torch.manual_seed(0)
    vit = tiny_vit(depth=1, drop_rate=0.1)  # has Dropout layers, whose mode matters
    backbone = ClsBackbone(vit)
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    modes = []
    hook = vit.blocks[0].register_forward_hook(
        lambda module, args, out: modes.append((module.training, vit.pos_drop.training))
    )
    try:
        out = augmented_linear_probe(
            backbone,
            image_dataset,
            image_dataset,
            num_classes=2,
            image_size=16,
            epochs=2,
            warmup_epochs=1,
            batch_size=16,
            fit=FitOptions(accelerator="cpu", devices=1),
        )
    finally:
        hook.remove()
    # 64 training images / 16 per step * 2 epochs + 2 validations of 64 images (+ 1 shape probe)
    assert len(modes) == 8 + 2 * 4 + 1
    assert not any(training for pair in modes for training in pair)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert backbone.training and vit.blocks[0].training  # caller's modes restored
    assert all(p.requires_grad for p in backbone.parameters())  # flags restored
    assert out["epochs"] == 2 and [row["epoch"] for row in out["history"]] == [1, 2]
    for key in ("top1", "top5", "best_top1", "last_top1"):
        assert 0.0 <= out[key] <= 1.0 and math.isfinite(out[key])
    assert out["top5"] == 1.0 and 1 <= out["best_epoch"] <= 2 and out["seconds"] > 0


def test_augmented_probe_learns_brightness_from_random_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = 0.15 * torch.rand(64, 3, 16, 16, generator=g) + 0.8 * labels.view(-1, 1, 1, 1)
    data = TensorDataset(images, labels)
    torch.manual_seed(0)
    out = augmented_linear_probe(
        ClsBackbone(tiny_vit(depth=1)),
        data,
        data,
        num_classes=2,
        image_size=16,
        epochs=8,
        warmup_epochs=1,
        batch_size=16,
        blr=1.0,
        fit=FitOptions(accelerator="cpu", eval_every=3),
    )
    assert [row["epoch"] for row in out["history"]] == [3, 6, 8]  # the last epoch always
    assert out["top1"] >= 0.95


def test_augmented_probe_module_trains_only_the_head_with_lars(image_dataset):
    backbone = ClsBackbone(tiny_vit(depth=1))
    module = AugmentedLinearProbe(
        backbone,
        feature_dim=32,
        num_classes=2,
        train_dataset=image_dataset,
        val_dataset=image_dataset,
        budget=Budget(epochs=90, warmup_epochs=10, batch_size=32, blr=0.1),
    )
    module.train()
    assert module.head.training and not backbone.training
    opt = module.build_optimizer()
    assert isinstance(opt, LARS)
    trained = {id(p) for group in opt.param_groups for p in group["params"]}
    assert trained == {id(p) for p in module.head.parameters()}
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 32 / 256)
    assert opt.param_groups[0]["weight_decay"] == 0.0 and opt.param_groups[0]["momentum"] == 0.9


def test_augmented_probe_rejects_a_batch_larger_than_the_training_set(image_dataset):
    with pytest.raises(ValueError, match="batch_size"):
        augmented_linear_probe(
            ClsBackbone(tiny_vit(depth=1)),
            image_dataset,
            image_dataset,
            num_classes=2,
            image_size=16,
            batch_size=128,
            fit=FitOptions(accelerator="cpu"),
        )
