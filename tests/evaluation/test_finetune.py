import math

import pytest
import torch
from timm.data import Mixup
from timm.layers import DropPath
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import TensorDataset

from ssl_mae_plugin import MAE
from ssl_mae_plugin.evaluation import (
    Budget,
    FineTuneClassifier,
    FitOptions,
    finetune,
    finetune_train_transform,
    layer_decay_param_groups,
    vit_classifier,
    vit_layer_id,
)
from ssl_mae_plugin.evaluation.transforms import to_pil
from tests.evaluation.conftest import tiny_vit


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("cls_token", 0),
        ("pos_embed", 0),
        ("patch_embed.proj.weight", 0),
        ("blocks.0.attn.qkv.weight", 1),
        ("blocks.2.norm1.bias", 3),
        ("blocks.11.mlp.fc2.weight", 12),
        ("norm.weight", 4),
        ("fc_norm.bias", 4),
        ("head.weight", 4),
    ],
)
def test_layer_ids_follow_the_mae_rule(name, layer):
    assert vit_layer_id(name, depth=3) == layer


def test_each_block_gets_its_own_scale_and_1d_params_no_decay():
    vit = vit_classifier(tiny_vit(depth=3), num_classes=5, global_pool=False)  # keeps `norm`
    groups = layer_decay_param_groups(vit, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    named = dict(vit.named_parameters())
    seen = [name for g in groups for name in g["names"]]
    assert sorted(seen) == sorted(named)  # every parameter exactly once
    scale = {name: g["lr_scale"] for g in groups for name in g["names"]}
    decay = {name: g["weight_decay"] for g in groups for name in g["names"]}
    for g in groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert all(p is named[n] for p, n in zip(g["params"], g["names"], strict=True))
    depth = 3
    for name in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"):
        assert scale[name] == pytest.approx(0.5 ** (depth + 1))
    block_scales = [scale[f"blocks.{i}.attn.qkv.weight"] for i in range(depth)]
    assert block_scales == pytest.approx([0.5**3, 0.5**2, 0.5**1])  # all distinct
    for i in range(depth):
        assert {v for n, v in scale.items() if n.startswith(f"blocks.{i}.")} == {block_scales[i]}
    for name in ("norm.weight", "norm.bias", "head.weight", "head.bias"):
        assert scale[name] == 1.0
    for name, param in named.items():
        expected = 0.0 if param.ndim == 1 or name in ("cls_token", "pos_embed") else 0.05
        assert decay[name] == expected, name
    assert decay["blocks.1.mlp.fc1.weight"] == 0.05 and decay["pos_embed"] == 0.0


def test_frozen_parameters_are_left_out_of_the_groups():
    vit = tiny_vit(depth=2)
    vit.pos_embed.requires_grad_(False)
    names = [n for g in layer_decay_param_groups(vit, lr=1.0) for n in g["names"]]
    assert "pos_embed" not in names and "cls_token" in names


def test_vit_classifier_copies_adds_drop_path_fc_norm_and_a_tiny_head():
    torch.manual_seed(0)
    mae = MAE(
        img_size=16,
        patch_size=4,
        embed_dim=32,
        depth=4,
        num_heads=2,
        decoder_embed_dim=16,
        decoder_depth=1,
        decoder_num_heads=2,
    )
    original = {k: v.clone() for k, v in mae.encoder.state_dict().items()}
    model = vit_classifier(mae.encoder, num_classes=7, drop_path_rate=0.3)
    assert all(torch.equal(v, mae.encoder.state_dict()[k]) for k, v in original.items())
    assert not mae.encoder.pos_embed.requires_grad  # the caller's model is untouched
    assert all(isinstance(b.drop_path1, nn.Identity) for b in mae.encoder.blocks)
    assert all(p.requires_grad for p in model.parameters())
    rates = [
        b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0 for b in model.blocks
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert isinstance(model.norm, nn.Identity) and isinstance(model.fc_norm, nn.LayerNorm)
    assert model.fc_norm.eps == 1e-6
    assert model.head.out_features == 7 and torch.equal(model.head.bias, torch.zeros(7))
    assert 0 < model.head.weight.std().item() < 1e-4
    assert torch.equal(model.blocks[2].mlp.fc1.weight, mae.encoder.blocks[2].mlp.fc1.weight)

    model.eval()
    images = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        tokens = model.forward_features(images)  # [N, 1 + L, D], no final norm
        expected = model.head(model.fc_norm(tokens[:, 1:].mean(dim=1)))  # patch tokens only
        torch.testing.assert_close(model(images), expected)


def test_finetune_module_uses_mixup_soft_targets_and_adamw_with_layer_decay(image_dataset):
    module = FineTuneClassifier(
        vit_classifier(tiny_vit(depth=2), num_classes=2),
        num_classes=2,
        train_dataset=image_dataset,
        val_dataset=image_dataset,
        budget=Budget(epochs=100, warmup_epochs=5, batch_size=32, blr=5e-4, weight_decay=0.05),
        layer_decay=0.75,
    )
    assert isinstance(module.mixup_fn, Mixup)
    assert module.mixup_fn.mixup_alpha == 0.8 and module.mixup_fn.cutmix_alpha == 1.0
    assert module.mixup_fn.label_smoothing == 0.1
    assert isinstance(module.criterion, SoftTargetCrossEntropy)
    opt = module.build_optimizer()
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)
    head_group = next(g for g in opt.param_groups if "head.weight" in g["names"])
    assert head_group["lr"] == pytest.approx(5e-4 * 32 / 256)
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(0.75**3)


def test_finetune_train_transform_has_randaugment_and_random_erasing():
    text = repr(finetune_train_transform(32))
    assert "RandAugment" in text and "RandomErasing" in text and "bicubic" in text.lower()
    out = finetune_train_transform(32)(to_pil(torch.rand(3, 40, 40)))
    assert out.shape == (3, 32, 32)


def test_finetune_runs_one_epoch_and_leaves_the_input_model_alone(image_dataset):
    torch.manual_seed(0)
    vit = tiny_vit(depth=2)
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    out = finetune(
        vit,
        image_dataset,
        image_dataset,
        num_classes=2,
        image_size=16,
        epochs=1,
        warmup_epochs=0,
        batch_size=16,
        fit=FitOptions(accelerator="cpu", devices=1),
    )
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())
    assert out["epochs"] == 1 and len(out["history"]) == 1 and out["best_epoch"] == 1
    for key in ("top1", "top5", "best_top1", "last_top1"):
        assert math.isfinite(out[key]) and 0.0 <= out[key] <= 1.0
    assert out["seconds"] > 0


def test_finetune_without_mixup_learns_an_easy_task():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 2
    images = 0.15 * torch.rand(64, 3, 16, 16, generator=g) + 0.8 * labels.view(-1, 1, 1, 1)
    data = TensorDataset(images, labels)
    torch.manual_seed(0)
    out = finetune(
        tiny_vit(depth=1),
        data,
        data,
        num_classes=2,
        image_size=16,
        epochs=4,
        warmup_epochs=1,
        batch_size=16,
        blr=2e-2,
        mixup=0.0,
        cutmix=0.0,
        auto_augment=None,
        re_prob=0.0,
        drop_path=0.0,
        fit=FitOptions(accelerator="cpu", eval_every=4),
    )
    assert out["top1"] >= 0.9
