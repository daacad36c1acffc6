import pytest

from ssl_mae_plugin import MAE

# The small MAE of the core tests: a 8x8 grid of 4x4 patches, 64-d x 2 encoder, 32-d x 2 decoder.
TINY_CONFIG = dict(
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
def tiny_config():
    return dict(TINY_CONFIG)


@pytest.fixture
def tiny_mae(tiny_config):
    return MAE(**tiny_config)
