"""The ``metis`` command-line tool. Plugins add commands through the ``register_commands`` hook.

Starting the tool imports no torch: ``metis --help`` and ``metis plugins`` (which lists the
registered components from their entry points, without importing them) answer in well under a
second and a half. ``metis plugins --check`` imports every component to find the broken ones.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import click

from metis_core.plugins import get_plugin_manager
from metis_core.registry import REGISTRIES

__all__ = ["LazyCommand", "cli", "main"]


class LazyCommand(click.Command):
    """A command (or group) that is imported only when it runs.

    ``metis --help`` lists it from its name and help text; running it imports ``target``
    (``"module:attribute"``, a click command) and hands it the remaining arguments. Plugins use
    it so that listing the commands does not import torch.

    Args:
        name: The sub-command's name.
        target: ``"module:attribute"`` of the real click command.
        help: One-line help shown by ``metis --help``.
    """

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(
            name=name,
            help=help,
            add_help_option=False,
            context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        )
        self.target = target

    def load(self) -> click.Command:
        """Import the real command."""
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return []

    def invoke(self, ctx: click.Context) -> Any:
        return self.load().main(args=ctx.args, prog_name=ctx.command_path, standalone_mode=True)


@click.group(name="metis")
@click.version_option(package_name="metis-core", prog_name="metis")
def cli() -> None:
    """METIS toolkit: dexterous VLA policies from multi-source egocentric data."""


def _unique(items: list[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for item in items:
        key = (item["group"], item["name"], item["value"])
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


@cli.command("plugins")
@click.option("--kind", type=click.Choice(sorted(REGISTRIES)), help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--traceback", "show_traceback", is_flag=True, help="Print the traceback of each broken plugin."
)
@click.option(
    "--check",
    is_flag=True,
    help="Import every component (slower: loads torch) and list those that fail to import.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Imply --check; exit with status 1 if any plugin, hook or component is broken.",
)
def plugins_command(
    kind: str | None, as_json: bool, show_traceback: bool, check: bool, strict: bool
) -> None:
    """List every registered component by kind, and every plugin that fails to load.

    Without --check, components are listed from their entry points without being imported;
    plugin modules that fail to import and hooks that raise are always reported.
    """
    check = check or strict
    manager = get_plugin_manager()
    report: dict[str, list[dict[str, str]]] = {}
    broken: list[dict[str, str]] = []
    for registry_kind, registry in REGISTRIES.items():
        if kind and registry_kind != kind:
            continue
        if check:
            loaded, failed = registry.load_all()
            names = sorted(loaded)
            broken.extend(b.__dict__ for b in failed)
        else:
            names = registry.names()
            broken.extend(b.__dict__ for b in registry.broken())
        rows = []
        for name in names:
            info = registry.info(name)
            rows.append(
                {
                    "name": name,
                    "distribution": info.distribution,
                    "target": info.target,
                    "origin": info.origin,
                }
            )
        report[registry_kind] = rows
    # Plugin modules that failed to import and hook implementations that raised.
    broken = _unique([b.__dict__ for b in manager.broken] + broken)
    if as_json:
        click.echo(json.dumps({"components": report, "broken": broken, "checked": check}, indent=2))
    else:
        for registry_kind, rows in report.items():
            click.secho(f"{registry_kind} ({len(rows)})", bold=True)
            if not rows:
                click.echo("  (none installed)")
            width = max((len(r["name"]) for r in rows), default=0)
            dist_width = max((len(r["distribution"]) for r in rows), default=0)
            for row in rows:
                click.echo(
                    f"  {row['name']:<{width}}  {row['distribution']:<{dist_width}}  {row['target']}"
                )
        if broken:
            click.secho(f"broken plugins ({len(broken)})", bold=True, fg="red")
            for item in broken:
                click.echo(
                    f"  {item['group']}: {item['name']} = {item['value']} ({item['distribution']})"
                )
                click.echo(f"    {item['error']}")
                if show_traceback and item["traceback"]:
                    click.echo("    " + item["traceback"].rstrip().replace("\n", "\n    "))
        if not check:
            click.echo("(components listed without importing them; --check imports each one)")
    if strict and broken:
        sys.exit(1)


@cli.command("contract")
def contract_command() -> None:
    """Print the layout of the hand action contract."""
    from metis_core.contract import ACTION_DIM, HAND_CONTRACT, describe_index

    click.echo(f"{HAND_CONTRACT.id}: {ACTION_DIM} float32 values (metres)")
    groups: list[tuple[int, int, str]] = []
    for index in range(ACTION_DIM):
        label = describe_index(index).rsplit(".", 1)[0].split("[")[0]
        if groups and groups[-1][2] == label:
            groups[-1] = (groups[-1][0], index + 1, label)
        else:
            groups.append((index, index + 1, label))
    for start, stop, label in groups:
        click.echo(f"  {start:>2}:{stop:<2}  {label}")


cli.add_command(
    LazyCommand(
        "annotate",
        "metis_core.vla.annotate_cli:annotate_command",
        help="Store the dynamics codes of every frame in a dataset (trained tokenizers).",
    )
)
cli.add_command(
    LazyCommand(
        "train",
        "metis_core.vla.training.cli:train_command",
        help="Train the METIS policy with a recipe (pretrain, posttrain, ...; torchrun-ready).",
    )
)
cli.add_command(
    LazyCommand(
        "lora",
        "metis_core.vla.lora_cli:lora_command",
        help="LoRA adapters: merge into the base policy, report the trainable parameters.",
    )
)
cli.add_command(
    LazyCommand(
        "serve",
        "metis_core.serve.cli:serve_command",
        help="Serve a saved policy at POST /act (pip install 'metis-core[serve]').",
    )
)

_commands_loaded = False


def _load_plugin_commands() -> None:
    """Let every plugin add its commands; one whose hook raises is reported, not fatal."""
    global _commands_loaded
    if _commands_loaded:
        return
    _commands_loaded = True
    manager = get_plugin_manager()
    before = len(manager.broken)
    manager.call_isolated("register_commands", cli=cli)
    for failure in manager.broken[before:]:
        click.echo(
            f"metis: warning: plugin {failure.name!r} ({failure.distribution}) failed in "
            f"{failure.value}: {failure.error}; see `metis plugins`",
            err=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metis`` console script."""
    _load_plugin_commands()
    cli.main(args=argv, prog_name="metis")
