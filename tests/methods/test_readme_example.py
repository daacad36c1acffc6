"""The README's "Adding a method" example, run as written: a user's method end to end."""

from __future__ import annotations

import re
import types
from pathlib import Path

import torch

from ssl_mae_plugin.methods import SSLMethod, get_method, list_methods, registry
from tests.methods.conftest import TINY_VIT, check_ssl_step

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_method() -> type[SSLMethod]:
    """Execute the Python block of the README's "Adding a method" section; its class."""
    section = README.read_text().split("### Adding a method", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 1, "the section should hold one Python example"
    module = types.ModuleType("readme_barlow")
    exec(compile(blocks[0], str(README), "exec"), module.__dict__)
    return module.BarlowTwins


def test_readme_method_trains_on_real_views(cifar_images):
    method_class = readme_method()
    method = method_class(projection_dim=64, **TINY_VIT)
    check_ssl_step(method, cifar_images, [method.backbone, method.projection_head])


def test_readme_method_registers_and_runs_from_a_recipe(monkeypatch, pretrain_run):
    method_class = readme_method()
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    registry.register_method("barlow", method_class)
    assert "barlow" in list_methods() and get_method("barlow") is method_class
    entry = {"name": "barlow", **TINY_VIT, "projection_dim": 64}
    entry.pop("image_size")  # the recipe's data.image_size
    recipe, losses = pretrain_run(entry, 2)
    checkpoint = torch.load(
        recipe.method_dir(0) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert any(key.startswith("projection_head.") for key in checkpoint["state_dict"])
    assert losses[1] < losses[0]
