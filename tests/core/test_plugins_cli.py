import json

from click.testing import CliRunner
from tests_helpers import entry_points_under

from metis_core.cli import cli
from metis_core.hookspecs import hookimpl
from metis_core.plugins import get_plugin_manager, make_plugin_manager
from metis_core.registry import REGISTRIES


def test_plugin_manager_is_built_lazily_and_cached() -> None:
    assert get_plugin_manager() is get_plugin_manager()


def test_register_commands_hook_adds_a_command() -> None:
    import click

    class Plugin:
        @hookimpl
        def register_commands(self, cli):
            @cli.command("hello")
            def hello() -> None:
                click.echo("hello from a plugin")

    group = click.Group("metis")
    make_plugin_manager(load_entry_points=False, plugins=[Plugin()]).hook.register_commands(
        cli=group
    )
    assert CliRunner().invoke(group, ["hello"]).output == "hello from a plugin\n"


def test_broken_hook_plugin_is_recorded_not_raised(fake_distribution) -> None:
    root = fake_distribution(
        "metis-badhooks",
        entry_points={"metis": {"bad": "bad_hooks_mod", "good": "good_hooks_mod"}},
        modules={
            "bad_hooks_mod": "raise ValueError('boom at import')\n",
            "good_hooks_mod": "from metis_core import hookimpl\n\n@hookimpl\ndef episode_transforms(source):\n    return [lambda e: e]\n",
        },
    )
    manager = make_plugin_manager(load_entry_points=False)
    manager.load_entry_points(entry_points_under(root)("metis"))
    assert [b.name for b in manager.broken] == ["bad"]
    assert "ValueError: boom at import" in manager.broken[0].error
    assert manager.has_plugin("good")
    assert len(manager.hook.episode_transforms(source="arctic")) == 1


def test_metis_plugins_json_lists_every_kind() -> None:
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data["components"]) == set(REGISTRIES)
    assert {"tokenizers", "backbones", "action_heads", "embodiments", "datasets"} <= set(REGISTRIES)


def test_metis_contract_prints_the_layout() -> None:
    result = CliRunner().invoke(cli, ["contract"])
    assert result.exit_code == 0
    assert "metis-hand-v1: 48 float32 values" in result.output
    assert "12:18  right wrist rot6d" in result.output
    assert "45:48  right fingertip little" in result.output
