"""The pluggy plugin manager of METIS: built on first use, never at import time."""

from __future__ import annotations

import functools
import importlib.metadata
import traceback
from collections.abc import Iterable
from dataclasses import dataclass

import pluggy

from metis_core import hookspecs

__all__ = ["BrokenPlugin", "MetisPluginManager", "get_plugin_manager", "make_plugin_manager"]

ENTRY_POINT_GROUP = "metis"


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin or component whose import failed.

    Args:
        group: Entry-point group (``metis``, ``metis.tokenizers``, ...).
        name: Entry-point name.
        value: What it points at, ``module:attribute``.
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


class MetisPluginManager(pluggy.PluginManager):
    """A pluggy manager that records plugins which fail to import instead of failing itself."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.broken: list[BrokenPlugin] = []

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
            try:
                plugin = entry_point.load()
                self.register(plugin, name=entry_point.name)
            except Exception as err:
                self.broken.append(
                    BrokenPlugin(
                        group=ENTRY_POINT_GROUP,
                        name=entry_point.name,
                        value=entry_point.value,
                        distribution=distribution_label(entry_point),
                        error=f"{type(err).__name__}: {err}",
                        traceback=traceback.format_exc(),
                    )
                )


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
