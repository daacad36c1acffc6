"""Each method's shipped recipe per backbone family: its source, and a falling loss with it."""

import math

import pytest

from ssl_mae_plugin.methods import family_of, get_method, list_methods
from tests.conftest import make_image_folder
from tests.methods.conftest import TINY_VIT, run_pretraining

BUILT_IN = ("mae", "simclr", "byol", "dino", "mocov3", "vicreg")
# Small heads keep the runs short; none of them touches the optimisation recipe.
HEADS = {
    "mae": {"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
    "simclr": {"hidden_dim": 64, "output_dim": 32},
    "byol": {"hidden_dim": 64, "output_dim": 32},
    "dino": {"hidden_dim": 64, "bottleneck_dim": 32, "output_dim": 256, "n_local_views": 2},
    "mocov3": {"hidden_dim": 64, "output_dim": 32},
    "vicreg": {"hidden_dim": 64, "output_dim": 64},
}
BACKBONE = {
    "vit": {k: v for k, v in TINY_VIT.items() if k != "image_size"},
    "convnet": {"backbone": "resnet18"},
}
# DINO's ConvNet case would only repeat the ViT case's bound (see below) at 30 s a run.
CASES = [
    (name, family)
    for name in BUILT_IN
    for family in BACKBONE
    if family in get_method(name).recipes and (name, family) != ("dino", "convnet")
]
# (epochs, image size, batch, images): the tiny ViT at the recipes' reference batch of 256,
# the ResNet-18 at 8 px (CIFAR stem) to keep the runs short.
BUDGET = {"vit": (6, 32, 256, 512), "convnet": (3, 8, 64, 256)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """520 real CIFAR-10 training JPEGs (52 per class)."""
    return make_image_folder(tmp_path_factory.mktemp("cifar520"), {"train": 52, "test": 1})


def test_every_built_in_method_has_a_sourced_recipe_per_family():
    assert set(BUILT_IN) <= set(list_methods())
    for name in BUILT_IN:
        recipes = get_method(name).recipes
        assert set(recipes) == ({"vit"} if name == "mae" else {"vit", "convnet"}), name
        for recipe in recipes.values():
            assert recipe.source and recipe.describe().endswith(f"[{recipe.source}]")
    assert family_of("resnet50") == "convnet" and family_of("vit_small") == "vit"
    with pytest.raises(ValueError, match="backbone: mae has no recipe for ConvNets"):
        get_method("mae").recipe_for("resnet18")


@pytest.mark.parametrize(("name", "family"), CASES, ids=[f"{n}-{f}" for n, f in CASES])
def test_the_shipped_recipe_lowers_the_loss(tmp_path, folder, name, family):
    entry = {"name": name, **BACKBONE[family], **HEADS[name]}  # no learning rate given
    epochs, image_size, batch_size, images = BUDGET[family]
    recipe, losses = run_pretraining(
        tmp_path, folder, entry, epochs, image_size, batch_size, images
    )
    method = recipe.methods[0]
    assert method.blr is None and method.optimizer is None  # the recipe's own
    if name == "dino":
        # Untrained, every image gives the teacher about the same output; centring then
        # flattens it, and the loss first climbs towards the uniform level log(K) before
        # the student breaks the symmetry, far beyond a test's budget (test_dino.py shows
        # the fall with a raised rate). Here: it stays finite, below that level.
        assert all(loss < math.log(HEADS["dino"]["output_dim"]) + 0.5 for loss in losses)
    else:
        assert losses[-1] < losses[0], losses
