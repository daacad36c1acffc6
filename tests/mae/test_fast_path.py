"""The training entry point and gradient checkpointing against the plain forward pass."""

import pytest
import torch

from ssl_mae_plugin import MAE, masked_mse_loss, patchify
from tests.mae.conftest import TINY_CONFIG


def build(mask_ratio=0.75, norm_pix_loss=False, **overrides):
    torch.manual_seed(0)
    config = {**TINY_CONFIG, "mask_ratio": mask_ratio, "norm_pix_loss": norm_pix_loss}
    return MAE(**{**config, **overrides})


def reference_loss(model, images, noise, mask_ratio):
    """facebookresearch/mae's ``models_mae.py`` written out with the model's own modules."""
    encoder, decoder = model.encoder, model.decoder
    x = encoder.patch_embed(images) + encoder.pos_embed[:, 1:, :]  # conv on every patch
    n, length, dim = x.shape
    len_keep = int(length * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, dim))
    mask = torch.ones(n, length)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    cls = encoder.cls_token + encoder.pos_embed[:, :1, :]
    x = torch.cat([cls.expand(n, -1, -1), x], dim=1)
    x = encoder.norm(encoder.blocks(x))
    x = decoder.embed(x)
    mask_tokens = decoder.mask_token.repeat(n, length + 1 - x.shape[1], 1)
    x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)
    x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
    x = torch.cat([x[:, :1, :], x_], dim=1) + decoder.pos_embed
    pred = decoder.pred(decoder.norm(decoder.blocks(x)))[:, 1:, :]
    target = patchify(images, model.patch_size)
    return masked_mse_loss(pred, target, mask, norm_pix_loss=model.norm_pix_loss), pred, mask


def loss_and_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_same_grads(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("norm_pix_loss", [False, True])
@pytest.mark.parametrize("mask_ratio", [0.75, 0.5])
def test_training_loss_gives_the_loss_and_gradients_of_forward(norm_pix_loss, mask_ratio):
    model = build(mask_ratio, norm_pix_loss)
    images, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    plain_loss, plain_grads = loss_and_grads(model, lambda: model(images, noise=noise).loss)
    fast_loss, fast_grads = loss_and_grads(model, lambda: model.training_loss(images, noise=noise))
    ref_loss, ref_grads = loss_and_grads(
        model, lambda: reference_loss(model, images, noise, mask_ratio)[0]
    )
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert_same_grads(fast_grads, plain_grads)
    assert_same_grads(fast_grads, ref_grads)
    assert "decoder.mask_token" in fast_grads and "encoder.patch_embed.proj.weight" in fast_grads
    assert not model.encoder.pos_embed.requires_grad and not model.decoder.pos_embed.requires_grad


@pytest.mark.parametrize("mask_ratio", [0.75, 0.5])
def test_forward_matches_the_official_algorithm(mask_ratio):
    model = build(mask_ratio, norm_pix_loss=True)
    images, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 64)
    with torch.no_grad():
        out = model(images, noise=noise)
        loss, pred, mask = reference_loss(model, images, noise, mask_ratio)
    torch.testing.assert_close(out.mask, mask, rtol=0, atol=0)
    torch.testing.assert_close(out.pred, pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)


def test_training_loss_uses_the_model_mask_ratio_and_draws_noise_when_omitted():
    model = build(mask_ratio=0.5)
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(1)
    drawn = model.training_loss(images)
    torch.manual_seed(1)
    noise = torch.rand(2, 64)
    torch.testing.assert_close(drawn, model.training_loss(images, mask_ratio=0.5, noise=noise))
    assert not torch.allclose(drawn, model.training_loss(images, mask_ratio=0.9, noise=noise))


def test_training_loss_checks_its_arguments():
    model = build()
    with pytest.raises(ValueError, match="img_size"):
        model.training_loss(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="mask_ratio"):
        model.training_loss(torch.randn(2, 3, 32, 32), mask_ratio=1.0)
    with pytest.raises(ValueError, match="noise"):
        model.training_loss(torch.randn(2, 3, 32, 32), noise=torch.rand(2, 63))


def test_non_square_images_and_other_channels():
    model = build(img_size=(32, 16), in_chans=1, norm_pix_loss=True)
    images, noise = torch.randn(2, 1, 32, 16), torch.rand(2, 32)
    plain, fast = model(images, noise=noise).loss, model.training_loss(images, noise=noise)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("entry", ["forward", "training_loss"])
def test_gradient_checkpointing_keeps_loss_and_gradients(entry):
    model = build(norm_pix_loss=True)
    images, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)

    def run():
        if entry == "forward":
            return model(images, noise=noise).loss
        return model.training_loss(images, noise=noise)

    calls = []
    for block in (model.encoder.blocks[0], model.decoder.blocks[0]):
        block.register_forward_pre_hook(lambda *_: calls.append(1))
    loss, grads = loss_and_grads(model, run)
    assert len(calls) == 2
    calls.clear()
    model.set_grad_checkpointing(True)
    ckpt_loss, ckpt_grads = loss_and_grads(model, run)
    assert len(calls) == 4  # each block runs again in the backward pass
    torch.testing.assert_close(ckpt_loss, loss, rtol=0, atol=0)
    assert_same_grads(ckpt_grads, grads)
    calls.clear()
    with torch.no_grad():  # nothing to recompute without gradients
        torch.testing.assert_close(run(), loss, rtol=0, atol=0)
    assert len(calls) == 2
    model.set_grad_checkpointing(False)
    assert not model.encoder.grad_checkpointing and not model.decoder.grad_checkpointing


def test_training_loss_compiles_into_one_graph():
    model = build(norm_pix_loss=True)
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(model.training_loss, backend="eager", fullgraph=True)
        torch.testing.assert_close(
            compiled(images, noise=noise), model.training_loss(images, noise=noise)
        )
        assert torch.isfinite(compiled(images))  # noise drawn inside the graph
    finally:
        torch._dynamo.reset()


def test_training_loss_under_bf16_autocast_is_a_float32_scalar_near_forward():
    model = build(norm_pix_loss=True)
    images, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = model.training_loss(images, noise=noise)
        plain = model(images, noise=noise).loss
    assert fast.dtype == torch.float32 and fast.ndim == 0
    torch.testing.assert_close(fast, plain, rtol=2e-2, atol=2e-2)
