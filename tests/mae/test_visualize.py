import torch
from PIL import Image

from ssl_mae_plugin.mae.patches import patchify
from ssl_mae_plugin.mae.visualize import (
    reconstruction_panels,
    save_reconstruction_figure,
)


def test_panels_mask_and_paste(tiny_mae):
    images = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    panels = reconstruction_panels(tiny_mae, images, noise=noise)
    mask = tiny_mae(images, noise=noise).mask
    removed = patchify(panels.masked, 4)[mask.bool()]
    visible = patchify(panels.pasted, 4)[~mask.bool()]
    assert torch.all(removed == 0)
    assert torch.equal(visible, patchify(images, 4)[~mask.bool()])
    torch.testing.assert_close(
        patchify(panels.pasted, 4)[mask.bool()], patchify(panels.reconstruction, 4)[mask.bool()]
    )


def test_norm_pix_predictions_are_unnormalised_with_the_target_patch_statistics(tiny_config):
    from ssl_mae_plugin import MAE

    model = MAE(**tiny_config, norm_pix_loss=True)
    with torch.no_grad():  # a zero prediction in normalised space is the patch mean in pixels
        model.decoder.pred.weight.zero_()
        model.decoder.pred.bias.zero_()
    images = torch.randn(2, 3, 32, 32)
    reconstruction = patchify(reconstruction_panels(model, images).reconstruction, 4)
    patch_means = patchify(images, 4).mean(dim=-1, keepdim=True).expand_as(reconstruction)
    torch.testing.assert_close(reconstruction, patch_means)


def test_figure_is_a_png_with_one_row_per_image(tmp_path, tiny_mae):
    path = save_reconstruction_figure(
        tiny_mae, torch.randn(3, 3, 32, 32), tmp_path / "sub" / "recon.png", title="epoch 0"
    )
    with Image.open(path) as png:
        assert png.format == "PNG"
        width, height = png.size
    assert height > width * 0.6  # three rows of four panels


def test_model_mode_is_restored(tiny_mae):
    tiny_mae.train()
    reconstruction_panels(tiny_mae, torch.randn(1, 3, 32, 32))
    assert tiny_mae.training
