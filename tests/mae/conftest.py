import pytest

from ssl_mae_plugin import MAE


@pytest.fixture
def tiny_config():
    return dict(
        img_size=32,
        patch_size=4,
        in_chans=3,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_depth=2,
        decoder_num_heads=4,
    )


@pytest.fixture
def tiny_mae(tiny_config):
    return MAE(**tiny_config)
