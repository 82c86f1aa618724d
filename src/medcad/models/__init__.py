"""Networks by name (see :mod:`medcad.models.registry`) and safe saving / loading (:mod:`.store`)."""

from medcad.models.registry import create, get_factory, list_models, register

__all__ = ["create", "get_factory", "list_models", "register"]
