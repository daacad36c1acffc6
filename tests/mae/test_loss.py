import pytest
import torch

from ssl_mae_plugin import masked_mse_loss
from ssl_mae_plugin.mae.loss import normalize_patches


def test_loss_ignores_predictions_on_visible_patches():
    target = torch.randn(2, 8, 12)
    pred = torch.randn(2, 8, 12)
    mask = torch.tensor([[1, 0, 1, 0, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1, 0, 0]], dtype=torch.float32)
    changed = pred.clone()
    changed[mask == 0] += 100.0
    assert masked_mse_loss(pred, target, mask) == masked_mse_loss(changed, target, mask)
    changed[mask == 1] += 1.0
    assert masked_mse_loss(pred, target, mask) != masked_mse_loss(changed, target, mask)


def test_loss_is_mean_over_removed_patches_of_per_patch_mse():
    target = torch.zeros(1, 3, 2)
    pred = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # per-patch MSE 1 and 2 on the removed patches -> 1.5
    assert masked_mse_loss(pred, target, mask).item() == pytest.approx(1.5)


def test_norm_pix_uses_unbiased_variance_plus_1e6():
    target = torch.tensor([[[1.0, 2.0, 3.0, 6.0]]])
    mean = 3.0
    unbiased_var = ((1 - 3) ** 2 + (2 - 3) ** 2 + 0 + (6 - 3) ** 2) / 3
    expected = (torch.tensor([1.0, 2.0, 3.0, 6.0]) - mean) / (unbiased_var + 1e-6) ** 0.5
    torch.testing.assert_close(normalize_patches(target)[0, 0], expected)
    pred = torch.zeros(1, 1, 4)
    loss = masked_mse_loss(pred, target, torch.ones(1, 1), norm_pix_loss=True)
    torch.testing.assert_close(loss, expected.pow(2).mean())


def test_constant_patch_with_norm_pix_stays_finite():
    target = torch.full((1, 2, 16), 0.5)
    loss = masked_mse_loss(torch.zeros(1, 2, 16), target, torch.ones(1, 2), norm_pix_loss=True)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0)
