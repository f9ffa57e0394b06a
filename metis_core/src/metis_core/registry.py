"""Registries of components, one per kind, backed by entry points and the plugin hook.

====================  ======================  ================================================
registry              entry-point group       interface
====================  ======================  ================================================
``TOKENIZERS``        ``metis.tokenizers``    :class:`~metis_core.interfaces.Tokenizer`
``BACKBONES``         ``metis.backbones``     :class:`~metis_core.interfaces.Backbone`
``ACTION_HEADS``      ``metis.action_heads``  :class:`~metis_core.interfaces.ActionHead`
``EMBODIMENTS``       ``metis.embodiments``   :class:`~metis_core.interfaces.Embodiment`
``DATASET_SOURCES``   ``metis.datasets``      :class:`~metis_core.interfaces.DatasetSource`
``ENVS``              ``metis.envs``          :class:`~metis_core.interfaces.Env`
====================  ======================  ================================================

An entry maps a short name straight to the class (``motion_rvq =
"metis_tokenizers.motion_rvq.modeling_motion_rvq:MotionRVQ"``), so :meth:`Registry.names` lists components
without importing them; :meth:`Registry.get` imports one on demand. Built-in components are
declared exactly like third-party ones.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from metis_core.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError
from metis_core.plugins import (
    BrokenPlugin,
    MetisPluginManager,
    distribution_label,
    get_plugin_manager,
)

if TYPE_CHECKING:  # the interfaces import torch; the registry itself stays light (`metis --help`)
    from metis_core.interfaces import (
        ActionHead,
        Backbone,
        DatasetSource,
        Embodiment,
        Env,
        Tokenizer,
    )

__all__ = [
    "ACTION_HEADS",
    "BACKBONES",
    "DATASET_SOURCES",
    "EMBODIMENTS",
    "ENVS",
    "REGISTRIES",
    "TOKENIZERS",
    "ComponentInfo",
    "Registry",
    "refresh_registries",
    "registry_for_kind",
]

T = TypeVar("T")
EntryPointSource = Callable[[str], Iterable[importlib.metadata.EntryPoint]]


@dataclass(frozen=True)
class ComponentInfo:
    """What is known of a registered component without importing it.

    Args:
        kind: Registry kind.
        name: Registry name.
        target: ``module:Class`` it points at.
        distribution: Declaring distribution and version (``"metis-tokenizers 0.1.0"``), or the
            plugin name for components registered through the hook.
        origin: ``"entry point"`` or ``"hook"``.
    """

    kind: str
    name: str
    target: str
    distribution: str
    origin: str


@dataclass
class _Entry:
    info: ComponentInfo
    entry_point: importlib.metadata.EntryPoint | None = None
    cls: type | None = None


def _installed_entry_points(group: str) -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=group)


class Registry(Generic[T]):
    """Name → component class for one kind.

    Args:
        kind: ``"tokenizers"``, ``"backbones"``, ``"action_heads"``, ``"embodiments"``, ``"datasets"`` or ``"envs"``.
        group: Entry-point group that declares the components.
        base: Interface every component of this kind subclasses, or its ``"module:Class"``
            path (imported on first use, so that listing names imports nothing heavy).
        plugin_manager: Factory of the pluggy manager whose ``register_components`` hook is asked.
        entry_points: Factory of the entry points of a group (tests inject their own).
    """

    def __init__(
        self,
        kind: str,
        group: str,
        base: type[T] | str,
        *,
        plugin_manager: Callable[[], MetisPluginManager] = get_plugin_manager,
        entry_points: EntryPointSource = _installed_entry_points,
    ) -> None:
        self.kind = kind
        self.group = group
        self._base = base
        self._plugin_manager = plugin_manager
        self._entry_points = entry_points
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] | None = None
        self._duplicates: dict[str, list[ComponentInfo]] = {}
        self._broken: dict[str, BrokenPlugin] = {}
        self._manual: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, group={self.group!r})"

    @property
    def base(self) -> type[T]:
        """The interface every component of this kind subclasses (imported on first use)."""
        if isinstance(self._base, str):
            module, _, attribute = self._base.partition(":")
            self._base = getattr(importlib.import_module(module), attribute)
        return self._base  # type: ignore[return-value]

    # -- discovery ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Forget what was discovered (after installing or removing a plugin)."""
        with self._lock:
            self._entries = None
            self._duplicates = {}
            self._broken = {}

    def _scan(self) -> dict[str, _Entry]:
        with self._lock:
            if self._entries is not None:
                return self._entries
            found: dict[str, list[_Entry]] = {}
            seen: set[tuple[str, str, str]] = set()
            for entry_point in self._entry_points(self.group):
                dist = distribution_label(entry_point)
                key = (entry_point.name, entry_point.value, dist)
                if key in seen:  # the same distribution visible twice on sys.path
                    continue
                seen.add(key)
                info = ComponentInfo(
                    self.kind, entry_point.name, entry_point.value, dist, "entry point"
                )
                found.setdefault(entry_point.name, []).append(_Entry(info, entry_point=entry_point))
            for name, entry in self._hook_entries().items():
                found.setdefault(name, []).append(entry)
            for name, entry in self._manual.items():
                found.setdefault(name, []).append(entry)
            entries: dict[str, _Entry] = {}
            for name, candidates in found.items():
                if len(candidates) > 1:
                    self._duplicates[name] = [c.info for c in candidates]
                entries[name] = candidates[0]
            self._entries = entries
            return entries

    def _hook_entries(self) -> dict[str, _Entry]:
        manager = self._plugin_manager()
        entries: dict[str, _Entry] = {}

        def register(kind: str, component_class: type, *, name: str | None = None) -> None:
            if kind != self.kind:
                return
            component_name = name or getattr(component_class, "name", None)
            if not isinstance(component_name, str):
                raise TypeError(
                    f"register({kind!r}, {component_class!r}): the class has no `name`; pass name="
                )
            target = f"{component_class.__module__}:{component_class.__qualname__}"
            plugin = "hook"
            if component_name in entries:
                self._duplicates.setdefault(component_name, [entries[component_name].info])
            entries[component_name] = _Entry(
                ComponentInfo(self.kind, component_name, target, plugin, "hook"),
                cls=component_class,
            )

        # Each plugin's hook runs on its own: one that raises is recorded (in the manager's
        # `broken` list and here) and hides neither the other plugins' components nor those it
        # registered before failing.
        manager.call_isolated("register_components", register=register)
        for failure in manager.broken:
            if failure.value.startswith("register_components hook"):
                self._broken[f"<register_components hook: {failure.name}>"] = failure
        return entries

    # -- public API --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Sorted names of every registered component, without importing any of them."""
        return sorted(self._scan())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._scan()

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._scan())

    def info(self, name: str) -> ComponentInfo:
        """What is known of ``name`` without importing it."""
        return self._lookup(name).info

    def _lookup(self, name: str) -> _Entry:
        entries = self._scan()
        if name not in entries:
            close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(entries)) or "none installed"
            raise UnknownComponentError(
                f"no {self.kind[:-1] if self.kind.endswith('s') else self.kind} named {name!r}.{hint} "
                f"Registered {self.kind}: {known}. A plugin declares components in the "
                f"{self.group!r} entry-point group."
            )
        if name in self._duplicates:
            where = "; ".join(f"{i.target} from {i.distribution}" for i in self._duplicates[name])
            raise DuplicateComponentError(
                f"{self.kind} name {name!r} is registered more than once ({where}); uninstall one of "
                "the plugins or rename its entry point"
            )
        return entries[name]

    def get(self, name: str) -> type[T]:
        """Import and return the class registered as ``name``.

        Raises:
            UnknownComponentError: With the closest registered names.
            DuplicateComponentError: If two plugins claim the name.
            PluginLoadError: If the plugin's import raises (chained) or it points at something
                that is not a subclass of the interface with that ``name``.
        """
        entry = self._lookup(name)
        with self._lock:
            if entry.cls is None:
                assert entry.entry_point is not None
                try:
                    loaded = entry.entry_point.load()
                except Exception as err:
                    self._broken[name] = BrokenPlugin(
                        group=self.group,
                        name=name,
                        value=entry.info.target,
                        distribution=entry.info.distribution,
                        error=f"{type(err).__name__}: {err}",
                        traceback=traceback.format_exc(),
                    )
                    raise PluginLoadError(
                        f"{self.kind} plugin {name!r} ({entry.info.target}, from "
                        f"{entry.info.distribution}) failed to import: {type(err).__name__}: {err}"
                    ) from err
                self._check_class(name, loaded, entry.info)
                entry.cls = loaded
            return entry.cls  # type: ignore[return-value]

    def _check_class(self, name: str, loaded: Any, info: ComponentInfo) -> None:
        problem = None
        if not isinstance(loaded, type) or not issubclass(loaded, self.base):
            problem = f"it is {loaded!r}, not a subclass of {self.base.__name__}"
        elif getattr(loaded, "name", None) != name:
            problem = f"the class's `name` is {getattr(loaded, 'name', None)!r}; it must equal the entry-point key"
        if problem:
            self._broken[name] = BrokenPlugin(
                self.group, name, info.target, info.distribution, problem, ""
            )
            raise PluginLoadError(
                f"{self.kind} plugin {name!r} ({info.target}, from {info.distribution}): {problem}"
            )

    def create(self, name: str, **config: Any) -> T:
        """Build component ``name`` from keyword config fields."""
        return self.get(name).create(**config)  # type: ignore[attr-defined]

    def register(self, component_class: type[T], *, name: str | None = None) -> None:
        """Register a class in this process only (tests, notebooks).

        Raises:
            DuplicateComponentError: If the name is taken.
            TypeError: If the class is not a subclass of the interface.
        """
        component_name = name or getattr(component_class, "name", None)
        if not isinstance(component_class, type) or not issubclass(component_class, self.base):
            raise TypeError(f"{component_class!r} is not a subclass of {self.base.__name__}")
        if not isinstance(component_name, str):
            raise TypeError(f"{component_class!r} has no `name`; pass name=")
        with self._lock:
            if component_name in self._scan():
                existing = self._scan()[component_name].info
                raise DuplicateComponentError(
                    f"{self.kind} name {component_name!r} is already registered ({existing.target} "
                    f"from {existing.distribution})"
                )
            target = f"{component_class.__module__}:{component_class.__qualname__}"
            entry = _Entry(
                ComponentInfo(self.kind, component_name, target, "manual", "manual"),
                cls=component_class,
            )
            self._manual[component_name] = entry
            self.refresh()

    def unregister(self, name: str) -> None:
        """Undo :meth:`register`."""
        with self._lock:
            self._manual.pop(name, None)
            self.refresh()

    def broken(self) -> list[BrokenPlugin]:
        """Plugins of this kind that failed so far (call :meth:`load_all` to try them all)."""
        return list(self._broken.values())

    def load_all(self) -> tuple[dict[str, type[T]], list[BrokenPlugin]]:
        """Try to import every component; return the ones that load and the broken ones."""
        loaded: dict[str, type[T]] = {}
        broken: list[BrokenPlugin] = [b for key, b in self._broken.items() if key.startswith("<")]
        for name in self.names():
            try:
                loaded[name] = self.get(name)
            except PluginLoadError:
                broken.append(self._broken[name])
            except DuplicateComponentError as err:
                infos = self._duplicates[name]
                broken.append(
                    BrokenPlugin(self.group, name, " | ".join(i.target for i in infos),
                                 ", ".join(i.distribution for i in infos), str(err), "")
                )  # fmt: skip
        return loaded, broken


# Interfaces by path: importing this module (as `metis --help` does) imports no torch.
_I = "metis_core.interfaces:"
TOKENIZERS: Registry[Tokenizer] = Registry("tokenizers", "metis.tokenizers", _I + "Tokenizer")
BACKBONES: Registry[Backbone] = Registry("backbones", "metis.backbones", _I + "Backbone")
ACTION_HEADS: Registry[ActionHead] = Registry("action_heads", "metis.action_heads", _I + "ActionHead")  # fmt: skip
EMBODIMENTS: Registry[Embodiment] = Registry("embodiments", "metis.embodiments", _I + "Embodiment")
DATASET_SOURCES: Registry[DatasetSource] = Registry("datasets", "metis.datasets", _I + "DatasetSource")  # fmt: skip
ENVS: Registry[Env] = Registry("envs", "metis.envs", _I + "Env")

REGISTRIES: dict[str, Registry[Any]] = {
    r.kind: r for r in (TOKENIZERS, BACKBONES, ACTION_HEADS, EMBODIMENTS, DATASET_SOURCES, ENVS)
}


def refresh_registries() -> None:
    """Re-read installed entry points in every registry (after a ``pip install`` in-process)."""
    importlib.invalidate_caches()
    get_plugin_manager.cache_clear()
    for registry in REGISTRIES.values():
        registry.refresh()


def registry_for_kind(kind: str) -> Registry[Any]:
    """The registry of a kind name.

    Raises:
        UnknownComponentError: For an unknown kind, listing the valid ones.
    """
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownComponentError(
            f"unknown component kind {kind!r}; expected one of {sorted(REGISTRIES)}"
        ) from None
