"""pluggy hooks of metis-tokenizers: ``metis tokenizers ...`` in the ``metis`` command line."""

from __future__ import annotations

from typing import Any

from metis_core.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the ``tokenizers`` command group (the same commands as ``metis-tokenizers``).

    Imported only when it runs, so that ``metis --help`` does not import torch.
    """
    from metis_core.cli import LazyCommand

    cli.add_command(
        LazyCommand(
            "tokenizers",
            "metis_tokenizers.cli:main",
            help="Train, evaluate and inspect motion tokenizers (= metis-tokenizers).",
        )
    )
