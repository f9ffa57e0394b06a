"""The ``metis`` command-line tool. Plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import json
import sys

import click

from metis_core.contract import ACTION_DIM, HAND_CONTRACT, describe_index
from metis_core.plugins import get_plugin_manager
from metis_core.registry import REGISTRIES

__all__ = ["cli", "main"]


@click.group(name="metis")
@click.version_option(package_name="metis-core", prog_name="metis")
def cli() -> None:
    """METIS toolkit: dexterous VLA policies from multi-source egocentric data."""


@cli.command("plugins")
@click.option("--kind", type=click.Choice(sorted(REGISTRIES)), help="Only this kind of component.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--traceback", "show_traceback", is_flag=True, help="Print the traceback of each broken plugin."
)
@click.option("--strict", is_flag=True, help="Exit with status 1 if any plugin is broken.")
def plugins_command(kind: str | None, as_json: bool, show_traceback: bool, strict: bool) -> None:
    """List every registered component by kind, and every plugin that fails to load."""
    manager = get_plugin_manager()
    report: dict[str, list[dict[str, str]]] = {}
    broken = [b.__dict__ for b in manager.broken]
    for registry_kind, registry in REGISTRIES.items():
        if kind and registry_kind != kind:
            continue
        loaded, failed = registry.load_all()
        rows = []
        for name in sorted(loaded):
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
        broken.extend(b.__dict__ for b in failed)
    if as_json:
        click.echo(json.dumps({"components": report, "broken": broken}, indent=2))
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
    if strict and broken:
        sys.exit(1)


@cli.command("contract")
def contract_command() -> None:
    """Print the layout of the hand action contract."""
    click.echo(f"{HAND_CONTRACT.id}: {ACTION_DIM} float32 values (metres)")
    start = 0
    groups: list[tuple[int, int, str]] = []
    for index in range(ACTION_DIM):
        label = describe_index(index).rsplit(".", 1)[0].split("[")[0]
        if groups and groups[-1][2] == label:
            groups[-1] = (groups[-1][0], index + 1, label)
        else:
            groups.append((index, index + 1, label))
    for start, stop, label in groups:
        click.echo(f"  {start:>2}:{stop:<2}  {label}")


_commands_loaded = False


def _load_plugin_commands() -> None:
    global _commands_loaded
    if not _commands_loaded:
        _commands_loaded = True
        get_plugin_manager().hook.register_commands(cli=cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``metis`` console script."""
    _load_plugin_commands()
    cli.main(args=argv, prog_name="metis")
