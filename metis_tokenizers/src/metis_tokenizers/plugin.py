"""pluggy hooks of metis-tokenizers: ``metis tokenizers ...`` in the ``metis`` command line."""

from __future__ import annotations

from typing import Any

from metis_core.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add the ``tokenizers`` command group (the same commands as ``metis-tokenizers``)."""
    from metis_tokenizers.cli import main

    cli.add_command(main, name="tokenizers")
