"""Exception types shared by every METIS package.

Every error a user can trigger with bad input derives from :class:`MetisError` and from the
built-in exception a Python programmer would expect (``ValueError`` for bad values,
``LookupError`` for unknown names, ``ImportError`` for missing dependencies), so both
``except MetisError`` and ``except ValueError`` work.
"""

from __future__ import annotations

__all__ = [
    "ComponentConfigError",
    "ContractError",
    "ContractMismatchError",
    "DuplicateComponentError",
    "MetisError",
    "MissingDependencyError",
    "PluginLoadError",
    "UnknownComponentError",
]


class MetisError(Exception):
    """Base class of all METIS errors."""


class ContractError(MetisError, ValueError):
    """A hand vector, mask or rotation does not satisfy the hand action contract."""


class ContractMismatchError(ContractError):
    """Data or a checkpoint was written under a different contract name or version."""


class ComponentConfigError(MetisError, ValueError):
    """A component configuration has an unknown key, a wrong type or an invalid value."""


class UnknownComponentError(MetisError, LookupError):
    """No component of that name is registered."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message like a key
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(MetisError, LookupError):
    """Two plugins register a component under the same name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PluginLoadError(MetisError, ImportError):
    """A plugin's module raised while it was imported; the original error is chained."""


class MissingDependencyError(MetisError, ImportError):
    """An optional dependency is needed for this feature but is not installed."""
