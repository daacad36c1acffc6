"""Gradient accumulation: one step on the effective batch for MAE, warnings.

Exact resume of an accumulating run: tests/pretrain/test_trainer.py (the kill test).
"""

import logging

import pytest
import torch

from ssl_mae_plugin.pretrain import build_method, check_checkpoint
from ssl_mae_plugin.pretrain.callbacks import read_metrics
from ssl_mae_plugin.pretrain.trainer import warn_about_accumulation
from ssl_mae_plugin.recipe_loading import recipe_from_dict
from ssl_mae_plugin.recipes import RecipeError
from ssl_mae_plugin.report.document import protocols
from tests.conftest import (
    TINY_SIMCLR,
    final_weights,
    pretrain_method,
    tiny_recipe,
)


def test_mae_accumulating_two_batches_of_8_equals_batches_of_16(cifar_folder, tmp_path):
    runs = {
        "whole": {"epochs": 2, "batch_size": 16},
        "accumulated": {"epochs": 2, "batch_size": 8, "accumulate_grad_batches": 2},
    }
    for folder, budget in runs.items():
        pretrain_method(tiny_recipe(cifar_folder, tmp_path / folder, pretrain=budget))
    whole, accumulated = final_weights(tmp_path / "whole"), final_weights(tmp_path / "accumulated")
    for key in whole:
        expected, actual = whole[key], accumulated[key]
        if key.endswith("attn.qkv.bias"):
            # The key bias shifts every logit of a query alike, so softmax makes its true
            # gradient zero; AdamW turns the float noise left there into lr-sized steps.
            expected, actual = (
                torch.cat([t[: len(t) // 3], t[-len(t) // 3 :]]) for t in (expected, actual)
            )
        torch.testing.assert_close(actual, expected, atol=1e-6, rtol=1e-4, msg=key)
    losses = {
        folder: [
            float(row["loss"]) for row in read_metrics(tmp_path / folder / "t/mae/metrics.csv")
        ]
        for folder in runs
    }
    assert losses["accumulated"] == pytest.approx(losses["whole"], rel=1e-5)
    # without accumulation the same batch of 8 trains other weights: the test can fail
    pretrain_method(
        tiny_recipe(cifar_folder, tmp_path / "small", pretrain={"epochs": 2, "batch_size": 8})
    )
    small = final_weights(tmp_path / "small")
    key = "model.encoder.blocks.0.mlp.fc1.weight"
    assert not torch.allclose(small[key], whole[key], atol=1e-6, rtol=1e-4)


def test_the_learning_rate_and_the_report_follow_the_effective_batch(cifar_folder, tmp_path):
    raw = tiny_recipe(
        cifar_folder, tmp_path, pretrain={"batch_size": 8, "accumulate_grad_batches": 4}
    )
    recipe = recipe_from_dict(raw)
    module = build_method(recipe, 0, num_classes=10)
    assert module.base_lr == pytest.approx(module.blr * 32 / 256)
    assert protocols(recipe)["pretrain"] == (
        "3 epochs, batch 8 x 4 accumulated: 32 images per optimizer step"
    )


def test_a_checkpoint_trained_without_accumulation_is_stale_with_it(cifar_folder, tmp_path):
    raw = tiny_recipe(cifar_folder, tmp_path, pretrain={"epochs": 1, "batch_size": 16})
    pretrain_method(raw)
    check_checkpoint(recipe_from_dict(raw), 0)
    raw["pretrain"]["accumulate_grad_batches"] = 2
    with pytest.raises(RecipeError, match="accumulate_grad_batches None -> 2"):
        check_checkpoint(recipe_from_dict(raw), 0)


def test_batch_dependent_methods_and_ragged_epochs_are_warned_about(cifar_folder, tmp_path, caplog):
    raw = tiny_recipe(
        cifar_folder,
        tmp_path,
        methods=[dict(TINY_SIMCLR)],
        pretrain={"batch_size": 16, "accumulate_grad_batches": 3},
    )
    recipe = recipe_from_dict(raw)
    module = build_method(recipe, 0, num_classes=10)
    with caplog.at_level(logging.WARNING, logger="ssl_mae_plugin"):
        warn_about_accumulation(recipe, 0, module, num_images=160)
    first, second = (record.getMessage() for record in caplog.records)
    assert "simclr: simclr's loss or batch statistics see each batch of 16 alone" in first
    assert "not the same as a batch of 48" in first
    assert "10 batches an epoch are not a multiple of accumulate_grad_batches=3" in second
    caplog.clear()
    mae = tiny_recipe(
        cifar_folder, tmp_path, pretrain={"batch_size": 16, "accumulate_grad_batches": 2}
    )
    mae_recipe = recipe_from_dict(mae)
    with caplog.at_level(logging.WARNING, logger="ssl_mae_plugin"):
        warn_about_accumulation(mae_recipe, 0, build_method(mae_recipe, 0, 10), num_images=160)
    assert not caplog.records  # MAE is exact and 10 batches split into steps of 2
