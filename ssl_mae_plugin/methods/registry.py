"""Methods by name: the built-ins and third-party ones.

Both are declared in the entry-point group ``ssl_mae_plugin.methods``
(``name = "package.module:MethodClass"``) or registered with :func:`register_method`.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ssl_mae_plugin.methods.base import SSLMethod

ENTRY_POINT_GROUP = "ssl_mae_plugin.methods"

_registry: dict[str, type[SSLMethod]] = {}
_entry_points_loaded = False


class UnknownMethodError(KeyError):
    """A method name that is not registered; the message lists the available ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register_method(name: str, method: type[SSLMethod]) -> type[SSLMethod]:
    """Bind ``name`` to an :class:`SSLMethod` subclass (its default transform comes along).

    Raises:
        TypeError: If ``method`` is not an ``SSLMethod`` subclass.
        ValueError: If ``name`` is already bound to another class.
    """
    if not (isinstance(method, type) and issubclass(method, SSLMethod)):
        raise TypeError(f"method {name!r} must be an SSLMethod subclass, got {method!r}")
    existing = _registry.get(name)
    if existing is not None and existing is not method:
        raise ValueError(f"method {name!r} is already registered to {existing.__qualname__}")
    _registry[name] = method
    return method


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name not in _registry:
            register_method(entry_point.name, entry_point.load())


def get_method(name: str) -> type[SSLMethod]:
    """The method class registered under ``name``.

    Raises:
        UnknownMethodError: Naming the available methods.
    """
    _load_entry_points()
    if name not in _registry:
        raise UnknownMethodError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return _registry[name]


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _load_entry_points()
    return sorted(_registry)
