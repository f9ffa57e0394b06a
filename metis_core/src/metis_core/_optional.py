"""Lazy imports of optional dependencies with an error that says what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from metis_core.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, *, install: str, feature: str | None = None) -> ModuleType:
    """Import an optional dependency or explain how to get it.

    Args:
        module: Importable module name, e.g. ``"transformers"``.
        install: The pip requirement that provides it, e.g. ``"metis-core[vla]"``.
        feature: What the caller wanted to do, for the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        what = f" for {feature}" if feature else ""
        raise MissingDependencyError(
            f"`{module}` is needed{what} but is not installed. Install it with: "
            f"pip install '{install}'"
        ) from err
