"""The core is torch + timm: it imports and trains with Lightning, lightly and matplotlib gone."""

import subprocess
import sys
import textwrap

BLOCKED = ("pytorch_lightning", "lightning", "lightning_fabric", "lightly", "matplotlib")


def test_the_core_imports_and_runs_without_lightning_lightly_or_matplotlib():
    code = textwrap.dedent(
        f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # any import of it now raises ImportError
        import torch
        import ssl_mae_plugin.mae
        from ssl_mae_plugin import MAE, mae_vit_tiny_patch16
        from ssl_mae_plugin.mae.visualize import reconstruction_panels

        model = mae_vit_tiny_patch16(img_size=32, patch_size=8, depth=1)
        images = torch.randn(2, 3, 32, 32)
        model.training_loss(images).backward()
        panels = reconstruction_panels(model, images)
        assert isinstance(model, MAE) and panels.pasted.shape == images.shape
        loaded = sorted(m for m in sys.modules if m.startswith("ssl_mae_plugin"))
        print(" ".join(loaded))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = result.stdout.split()
    assert loaded and all(
        m == "ssl_mae_plugin" or m.startswith("ssl_mae_plugin.mae") for m in loaded
    )
