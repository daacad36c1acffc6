"""SSL methods as LightningModules, registered by name."""

from ssl_mae_plugin.methods.base import SSLMethod, TrainingRecipe, family_of
from ssl_mae_plugin.methods.registry import (
    ENTRY_POINT_GROUP,
    UnknownMethodError,
    get_method,
    list_methods,
    register_method,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "SSLMethod",
    "TrainingRecipe",
    "UnknownMethodError",
    "family_of",
    "get_method",
    "list_methods",
    "register_method",
]
