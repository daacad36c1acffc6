"""ssl-mae-plugin: Masked Autoencoders (He et al., 2021) as a method for lightly.

The public names are imported on first use, so that ``import ssl_mae_plugin.mae`` (the
core: torch + timm) does not pull in Lightning, lightly or matplotlib.

- [0]: Masked Autoencoders Are Scalable Vision Learners, 2021, https://arxiv.org/abs/2111.06377
"""

import importlib
import os
import sys
from typing import Any

if "torch" not in sys.modules:
    # Waiting OpenMP threads sleep instead of spinning, so that data-loader workers sharing
    # the cores are not starved (measured: +30 % MAE images/s on 2 cores, see the README).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_CORE = "ssl_mae_plugin.mae"
_REGISTRY = "ssl_mae_plugin.methods.registry"
_EXPORTS = {
    "MAE": _CORE,
    "MAEOutput": _CORE,
    "mae_vit_base_patch16": _CORE,
    "mae_vit_huge_patch14": _CORE,
    "mae_vit_large_patch16": _CORE,
    "mae_vit_small_patch16": _CORE,
    "mae_vit_tiny_patch16": _CORE,
    "masked_mse_loss": _CORE,
    "patchify": _CORE,
    "random_masking": _CORE,
    "unpatchify": _CORE,
    "get_method": _REGISTRY,
    "list_methods": _REGISTRY,
    "register_method": _REGISTRY,
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
