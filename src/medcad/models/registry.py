"""The model registry: networks by name, never by ``getattr`` on a user string.

Register a factory with ``@register("name")``; build with ``create("name", **kwargs)``; list
with ``list_models()``. An unknown name is a :class:`MedcadError` that suggests close names.

Every classifier in the registry splits into a backbone and a head:
``forward_features(x)`` (backbone output, flattened or pooled), ``head`` (a module),
``reset_head(num_classes)``; ``forward(x) = head(forward_features(x))``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable

from medcad.errors import MedcadError

_FACTORIES: dict[str, Callable] = {}
#: Modules that register models when imported (imported lazily on first lookup).
_MODEL_MODULES: list[str] = []


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator: registers a model factory (a class or a function returning an nn.Module)."""

    def decorate(factory: Callable) -> Callable:
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"model name {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return decorate


def add_model_module(module_name: str) -> None:
    """Declares a module whose import registers models (keeps ``import medcad`` light)."""
    if module_name not in _MODEL_MODULES:
        _MODEL_MODULES.append(module_name)


def _load_all() -> None:
    for module_name in _MODEL_MODULES:
        importlib.import_module(module_name)


def list_models() -> list[str]:
    """All registered model names, sorted."""
    _load_all()
    return sorted(_FACTORIES)


def get_factory(name: str) -> Callable:
    """The factory registered under ``name``; a clear error for an unknown name."""
    _load_all()
    if name not in _FACTORIES:
        close = difflib.get_close_matches(name, list(_FACTORIES), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MedcadError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_FACTORIES))})")
    return _FACTORIES[name]


def create(name: str, **kwargs):
    """Builds the model registered under ``name`` with keyword arguments."""
    return get_factory(name)(**kwargs)
