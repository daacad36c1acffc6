"""SSL methods as LightningModules, registered by name."""

from ssl_mae_plugin.methods.base import SSLMethod
from ssl_mae_plugin.methods.registry import (
    ENTRY_POINT_GROUP,
    UnknownMethodError,
    get_method,
    list_methods,
    register_method,
)
from ssl_mae_plugin.methods.training_recipe import TrainingRecipe, family_of

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
