"""Every pluggy hook of METIS, in one place.

Plugins implement hooks with ``hookimpl`` and are found through the ``metis`` entry-point
group (``[project.entry-points.metis] my_plugin = "my_package.plugin"``). Components (tokenizers,
embodiments, ...) are normally declared through their own entry-point groups; the
``register_components`` hook is for components built at run time.
"""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

__all__ = ["ComponentRegistrar", "hookimpl", "hookspec"]

PROJECT_NAME = "metis"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class ComponentRegistrar(Protocol):
    """The ``register`` callback handed to :func:`~metis_core.hookspecs.register_components`."""

    def __call__(self, kind: str, component_class: type, *, name: str | None = None) -> None:
        """Register ``component_class`` under ``name`` (default: its ``name`` attribute) in ``kind``."""
        ...


@hookspec
def register_components(register: ComponentRegistrar) -> None:
    """Register components programmatically.

    Args:
        register: Call ``register("tokenizers", MyTokenizer)`` once per component. The kinds are
            ``tokenizers``, ``backbones``, ``action_heads``, ``embodiments`` and ``datasets``.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``metis`` command-line tool.

    Args:
        cli: The root ``click.Group``; add commands with ``@cli.command()`` or ``cli.add_command``.
    """


@hookspec
def episode_transforms(source: str) -> list[Any] | None:
    """Offer transforms applied to every episode a dataset source produces during conversion.

    Args:
        source: Registry name of the source being converted.

    Returns:
        Callables ``Episode -> Episode`` (applied in plugin registration order), or ``None``.
    """


@hookspec
def training_callbacks(config: Any) -> list[Any] | None:
    """Offer callbacks for a training run.

    Args:
        config: The run's training config.

    Returns:
        Callback objects (see the training loop for the methods it calls), or ``None``.
    """
