"""Optional dependencies: import them, or say in one line which pip extra brings them."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the pip extra."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``, or raise naming ``pip install 'ssl-mae-plugin[<extra>]'``.

    Args:
        module: The package to import.
        extra: The pip extra of this project that installs it.
        what: The feature that needs it, for the message (e.g. ``trainer.logger=wandb``).

    Raises:
        MissingExtraError: When ``module`` cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{what} needs the {module} package: pip install 'ssl-mae-plugin[{extra}]'"
        ) from error
