from importlib.metadata import entry_points

import pytest

from ssl_mae_plugin import get_method, list_methods, register_method
from ssl_mae_plugin.methods.mae import MAEMethod
from ssl_mae_plugin.methods.registry import ENTRY_POINT_GROUP, UnknownMethodError


def test_builtins_come_from_the_entry_point_group():
    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert declared["mae"] == "ssl_mae_plugin.methods.mae:MAEMethod"
    assert {"mae", "simclr", "byol", "dino", "mocov3", "vicreg"} <= set(declared)
    assert set(declared) <= set(list_methods())
    assert get_method("mae") is MAEMethod


def test_unknown_method_lists_the_available_ones():
    with pytest.raises(UnknownMethodError, match="unknown method 'maee'; available: .*mae"):
        get_method("maee")


def test_register_a_third_party_method():
    class Custom(MAEMethod):
        """A custom MAE variant."""

        name = "custom-mae"

    register_method("custom-mae", Custom)
    assert get_method("custom-mae") is Custom and "custom-mae" in list_methods()
    register_method("custom-mae", Custom)  # idempotent
    with pytest.raises(ValueError, match="already registered"):
        register_method("custom-mae", MAEMethod)
    with pytest.raises(TypeError, match="SSLMethod subclass"):
        register_method("not-a-method", dict)
