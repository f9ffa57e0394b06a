"""The pluggy plugin manager of METIS: built on first use, never at import time.

Failures are isolated: a plugin module that raises (or calls ``sys.exit``) while it is imported,
and a hook implementation that raises while it is called, are recorded as :class:`BrokenPlugin`
entries (``manager.broken``) instead of breaking the tool or hiding the healthy plugins.
Call hooks through :meth:`MetisPluginManager.call_isolated` to get that isolation.

This module imports no torch: ``metis --help`` and ``metis plugins`` stay fast.
"""

from __future__ import annotations

import functools
import importlib.metadata
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from metis_core import hookspecs

__all__ = ["BrokenPlugin", "MetisPluginManager", "get_plugin_manager", "make_plugin_manager"]

ENTRY_POINT_GROUP = "metis"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin or component whose import failed, or a hook implementation that raised.

    Args:
        group: Entry-point group (``metis``, ``metis.tokenizers``, ...).
        name: Entry-point (or plugin) name.
        value: What it points at, ``module:attribute``; for a failed hook call
            ``"<hook> hook of module:attribute"``.
        distribution: Distribution that declares it, with its version.
        error: ``ExceptionType: message``.
        traceback: The full traceback text.
    """

    group: str
    name: str
    value: str
    distribution: str
    error: str
    traceback: str


def distribution_label(entry_point: importlib.metadata.EntryPoint) -> str:
    """``"name version"`` of the distribution declaring an entry point, or ``"?"``."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "?"
    return f"{dist.metadata['Name']} {dist.version}"


def describe_error(err: BaseException) -> str:
    """``"ExceptionType: message"``, with a hint for ``sys.exit`` calls."""
    if isinstance(err, SystemExit):
        return f"SystemExit: {err.code} (the plugin called sys.exit)"
    return f"{type(err).__name__}: {err}"


class MetisPluginManager(pluggy.PluginManager):
    """A pluggy manager that records plugins which fail instead of failing itself."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []
        self._origins: dict[str, tuple[str, str]] = {}  # plugin name -> (value, distribution)

    def load_entry_points(
        self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
    ) -> None:
        """Import and register every plugin of the ``metis`` entry-point group."""
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        seen: set[tuple[str, str]] = set()
        for entry_point in entry_points:
            if (entry_point.name, entry_point.value) in seen or self.has_plugin(entry_point.name):
                continue
            seen.add((entry_point.name, entry_point.value))
            distribution = distribution_label(entry_point)
            try:
                plugin = entry_point.load()
                self.register(plugin, name=entry_point.name)
            except (Exception, SystemExit) as err:  # a plugin's sys.exit must not end the tool
                self.broken.append(
                    BrokenPlugin(
                        group=ENTRY_POINT_GROUP,
                        name=entry_point.name,
                        value=entry_point.value,
                        distribution=distribution,
                        error=describe_error(err),
                        traceback=traceback.format_exc(),
                    )
                )
            else:
                self._origins[entry_point.name] = (entry_point.value, distribution)

    def call_isolated(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation of a hook on its own, recording the ones that raise.

        Unlike ``manager.hook.<name>(...)``, one raising implementation neither stops the
        others nor propagates: it is appended to :attr:`broken` (once per plugin and hook).

        Args:
            hook_name: ``"register_components"``, ``"register_commands"``, ...
            **kwargs: The hook's arguments.

        Returns:
            The non-``None`` results, in pluggy's call order.
        """
        caller = getattr(self.hook, hook_name)
        results = []
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            args = {name: kwargs[name] for name in impl.argnames if name in kwargs}
            try:
                result = impl.function(**args)
            except (Exception, SystemExit) as err:
                self._record_hook_failure(hook_name, impl, err)
                continue
            if result is not None:
                results.append(result)
        return results

    def _record_hook_failure(self, hook_name: str, impl: Any, err: BaseException) -> None:
        name = impl.plugin_name
        value, distribution = self._origins.get(
            name, (getattr(impl.plugin, "__name__", type(impl.plugin).__name__), "?")
        )
        entry = BrokenPlugin(
            group=ENTRY_POINT_GROUP,
            name=name,
            value=f"{hook_name} hook of {value}",
            distribution=distribution,
            error=describe_error(err),
            traceback=traceback.format_exc(),
        )
        if not any((b.name, b.value) == (entry.name, entry.value) for b in self.broken):
            self.broken.append(entry)


def make_plugin_manager(
    *, load_entry_points: bool = True, plugins: Iterable[object] = ()
) -> MetisPluginManager:
    """Build a fresh plugin manager (tests use this for isolation).

    Args:
        load_entry_points: Load the installed plugins of the ``metis`` entry-point group.
        plugins: Extra plugin objects (modules or instances with hook implementations).
    """
    manager = MetisPluginManager()
    for plugin in plugins:
        manager.register(plugin)
    if load_entry_points:
        manager.load_entry_points()
    return manager


@functools.cache
def get_plugin_manager() -> MetisPluginManager:
    """The process-wide plugin manager, built on first call."""
    return make_plugin_manager()
