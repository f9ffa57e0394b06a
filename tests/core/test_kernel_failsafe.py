"""Failure isolation of plugins and hooks, rotation robustness, clear errors, import layering."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tests_helpers import entry_points_under

from metis_core.contract import (
    ACTION_DIM,
    LEFT,
    RIGHT,
    apply_hand_mask,
    fingertip_value_mask,
    pack_hands,
    unpack_hands,
    validate_hand_vector,
)
from metis_core.errors import ContractError
from metis_core.frames import (
    PAPER_FROM_WRIST,
    from_paper_frame,
    to_paper_frame,
    wrist_frame_from_keypoints,
)
from metis_core.plugins import make_plugin_manager
from metis_core.registry import Registry
from metis_core.rotations import (
    matrix_to_rot6d,
    random_rotation_matrices,
    rot6d_degenerate,
    rot6d_to_matrix,
)

KERNEL = Path(__file__).resolve().parents[2] / "metis_core" / "src" / "metis_core"

HOOKS = {
    "bad_commands_mod": (
        "from metis_core.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    raise RuntimeError('simulated: commands hook crashed')\n"
    ),
    "bad_components_mod": (
        "from metis_core.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_components(register):\n"
        "    raise KeyError('simulated: components hook crashed')\n"
    ),
    "good_components_mod": (
        "from metis_core.hookspecs import hookimpl\n"
        "from metis_core.config import ComponentConfig\n"
        "from metis_core.interfaces import Tokenizer\n"
        "class GoodConfig(ComponentConfig):\n"
        "    pass\n"
        "class Good(Tokenizer):\n"
        "    name = 'good_hooked'\n"
        "    config_class = GoodConfig\n"
        "    def __init__(self, config):\n"
        "        self.config = config\n"
        "    vocab_size = 1\n"
        "    tokens_per_window = 1\n"
        "    def encode(self, actions, hand_mask=None):\n"
        "        return actions\n"
        "    def decode(self, codes, start=None):\n"
        "        return codes\n"
        "@hookimpl\n"
        "def register_components(register):\n"
        "    register('tokenizers', Good)\n"
    ),
    "exiting_mod": "import sys\nsys.exit(3)\n",
}


@pytest.fixture
def hostile_plugins(tmp_path: Path) -> Path:
    from tests_helpers import write_distribution

    return write_distribution(
        tmp_path / "site",
        "metis-hostile",
        "0.0.1",
        entry_points={
            "metis": {
                "bad_commands": "bad_commands_mod",
                "bad_components": "bad_components_mod",
                "good_components": "good_components_mod",
                "exiting": "exiting_mod",
            }
        },
        modules=HOOKS,
    )


@pytest.fixture
def hostile_cli(hostile_plugins: Path, monkeypatch: pytest.MonkeyPatch):
    """The ``metis`` CLI with the hostile plugins installed (in process, isolated)."""
    import click

    import metis_core.cli as cli_module
    from metis_core.registry import REGISTRIES

    monkeypatch.syspath_prepend(str(hostile_plugins))
    manager = make_plugin_manager(load_entry_points=False)
    manager.load_entry_points(entry_points_under(hostile_plugins)("metis"))
    group = click.Group("metis", commands=dict(cli_module.cli.commands))
    monkeypatch.setattr(cli_module, "cli", group)
    monkeypatch.setattr(cli_module, "get_plugin_manager", lambda: manager)
    monkeypatch.setattr(cli_module, "_commands_loaded", False)
    for registry in REGISTRIES.values():
        monkeypatch.setattr(registry, "_plugin_manager", lambda: manager)
        registry.refresh()
    yield cli_module
    for registry in REGISTRIES.values():
        registry.refresh()
    for name in HOOKS:
        sys.modules.pop(name, None)


def test_hostile_plugins_are_isolated_and_reported(
    hostile_cli, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile_cli._load_plugin_commands()  # what `main` does first
    warnings = capsys.readouterr().err
    assert (
        "plugin 'bad_commands' (metis-hostile 0.0.1) failed in register_commands hook" in warnings
    )
    runner = CliRunner()
    result = runner.invoke(hostile_cli.cli, ["plugins", "--json", "--kind", "tokenizers"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    # The healthy plugin's hook-registered component survives the raising hook.
    assert "good_hooked" in {row["name"] for row in data["components"]["tokenizers"]}
    errors = {b["name"]: b for b in data["broken"]}
    assert errors["exiting"]["error"] == "SystemExit: 3 (the plugin called sys.exit)"
    assert errors["bad_commands"]["value"] == "register_commands hook of bad_commands_mod"
    assert "RuntimeError: simulated: commands hook crashed" in errors["bad_commands"]["error"]
    assert errors["bad_components"]["value"] == "register_components hook of bad_components_mod"
    assert "KeyError" in errors["bad_components"]["error"]
    assert len(data["broken"]) == 3  # each failure once, although every registry asks the hook
    # --strict counts hook failures and import-time exits; other commands still work.
    strict = runner.invoke(hostile_cli.cli, ["plugins", "--strict", "--kind", "backbones"])
    assert strict.exit_code == 1
    assert "broken plugins (3)" in strict.output
    contract = runner.invoke(hostile_cli.cli, ["contract"])
    assert contract.exit_code == 0
    assert "metis-hand-v1: 48 float32 values" in contract.output


def test_call_isolated_runs_every_implementation(hostile_plugins: Path) -> None:
    manager = make_plugin_manager(load_entry_points=False)
    sys.path.insert(0, str(hostile_plugins))
    try:
        manager.load_entry_points(entry_points_under(hostile_plugins)("metis"))
        seen: list[str] = []
        registry = Registry(
            "tokenizers", "metis.tokenizers", "metis_core.interfaces:Tokenizer",
            plugin_manager=lambda: manager, entry_points=lambda group: [],
        )  # fmt: skip
        seen = registry.names()
        assert seen == ["good_hooked"]
        assert any(key.startswith("<register_components hook") for key in registry._broken)
        assert [b.name for b in manager.broken if b.error.startswith("SystemExit")] == ["exiting"]
    finally:
        sys.path.remove(str(hostile_plugins))
        for name in HOOKS:
            sys.modules.pop(name, None)


def test_metis_help_and_listing_import_no_torch() -> None:
    # The kernel and the built-in embodiment plugin; metis_tokenizers' package __init__ is
    # outside the kernel and filtered out here.
    code = (
        "import sys, time, importlib.metadata as md\n"
        "t = time.perf_counter()\n"
        "from metis_core import plugins\n"
        "eps = [e for e in md.entry_points(group='metis') if e.name == 'metis_embodiments']\n"
        "manager = plugins.make_plugin_manager(load_entry_points=False)\n"
        "manager.load_entry_points(eps)\n"
        "plugins.get_plugin_manager = lambda: manager\n"
        "import metis_core.cli as cli, metis_core.registry as registry\n"
        "cli.get_plugin_manager = lambda: manager\n"
        "for r in registry.REGISTRIES.values():\n"
        "    r._plugin_manager = lambda: manager\n"
        "from click.testing import CliRunner\n"
        "cli._load_plugin_commands()\n"
        "assert CliRunner().invoke(cli.cli, ['--help']).exit_code == 0\n"
        "out = CliRunner().invoke(cli.cli, ['plugins']).output\n"
        "assert 'inspire' in out and 'leap' in out, out\n"
        "print('torch' in sys.modules, time.perf_counter() - t)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    torch_loaded, seconds = result.stdout.split()
    assert torch_loaded == "False"
    assert float(seconds) < 1.5


def test_plugins_check_imports_components() -> None:
    result = CliRunner().invoke(
        __import__("metis_core.cli", fromlist=["cli"]).cli,
        ["plugins", "--check", "--json", "--kind", "embodiments"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["checked"] is True
    assert {"inspire", "leap", "sharpawave"} <= {
        r["name"] for r in data["components"]["embodiments"]
    }


# -- rotations -------------------------------------------------------------------------------


def test_rot6d_float32_near_parallel_columns_give_a_proper_rotation() -> None:
    x = torch.tensor([-0.77717, -0.62498, -0.07359, -2.33150, -1.87493, -0.22076])
    assert not bool(rot6d_degenerate(x))
    rotation = rot6d_to_matrix(x)
    assert rotation.dtype == torch.float32
    assert float((rotation.T @ rotation - torch.eye(3)).abs().max()) < 1e-6
    assert float(torch.linalg.det(rotation)) == pytest.approx(1.0, abs=1e-6)
    # Many random near-parallel pairs in float32: every result is a proper rotation.
    generator = torch.Generator().manual_seed(0)
    a1 = torch.randn(2000, 3, generator=generator)
    a2 = a1 * torch.rand(2000, 1, generator=generator) * 5 + 1e-4 * torch.randn(2000, 3, generator=generator)  # fmt: skip
    matrices = rot6d_to_matrix(torch.cat([a1, a2], -1))
    eye = torch.eye(3).expand(2000, 3, 3)
    assert float((matrices.transpose(1, 2) @ matrices - eye).abs().max()) < 1e-5
    assert float((torch.linalg.det(matrices) - 1).abs().max()) < 1e-5


def test_degenerate_rot6d_never_gives_det_zero_and_strict_raises() -> None:
    degenerate = torch.tensor(
        [[0.0] * 6, [1.0, 0, 0, 2.0, 0, 0], [0, 0, 0, 0, 1.0, 0], [1.0, 1, 0, -3, -3, 0]]
    )
    assert rot6d_degenerate(degenerate).tolist() == [True, True, True, True]
    matrices = rot6d_to_matrix(degenerate)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(4))
    torch.testing.assert_close(matrices[0], torch.eye(3))
    with pytest.raises(ContractError, match=r"6D rotation at index \(0,\)"):
        rot6d_to_matrix(degenerate[1:], strict=True)
    # Validation and conversion agree on what is degenerate.
    vector = torch.zeros(4, ACTION_DIM)
    vector[:, RIGHT.wrist_rot6d] = degenerate
    vector[:, LEFT.wrist_rot6d] = torch.tensor([1.0, 0, 0, 0, 1, 0])
    for row in range(4):
        with pytest.raises(ContractError, match="not a valid 6D rotation"):
            validate_hand_vector(vector[row : row + 1])
    good = matrix_to_rot6d(random_rotation_matrices(64, generator=torch.Generator().manual_seed(1)))
    assert not bool(rot6d_degenerate(good).any())
    rot6d_to_matrix(good, strict=True)


def test_wrist_frame_strict_rejects_nan_keypoints() -> None:
    points = [torch.tensor([[0.0, 0, 0], [0, 0, 0]]) for _ in range(4)]
    points[1] = torch.tensor([[0.02, 0.08, 0], [0.02, 0.08, 0]])
    points[2] = torch.tensor([[0.0, 0.09, 0], [0, 0.09, 0]])
    points[3] = torch.tensor([[-0.03, 0.08, 0], [-0.03, 0.08, 0]])
    points[0] = torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]])
    with pytest.raises(ContractError, match=r"NaN or infinity at batch index \(1,\)"):
        wrist_frame_from_keypoints(*points)
    rotation, _ = wrist_frame_from_keypoints(*points, strict=False)
    assert bool(torch.isfinite(rotation).all())
    torch.testing.assert_close(rotation[1], torch.eye(3))


# -- arrays and masks ------------------------------------------------------------------------


def test_negative_stride_big_endian_and_keyword_numpy_arrays() -> None:
    rotations = random_rotation_matrices(4, generator=torch.Generator().manual_seed(2)).numpy()
    six = np.ascontiguousarray(matrix_to_rot6d(rotations))
    reversed_view = six[::-1]
    big_endian = six.astype(">f8")
    for array in (reversed_view, big_endian):
        out = rot6d_to_matrix(array)
        assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(rot6d_to_matrix(rot6d=big_endian), rotations, atol=1e-12)
    np.testing.assert_allclose(rot6d_to_matrix(reversed_view), rotations[::-1], atol=1e-12)
    vector = np.zeros((3, ACTION_DIM), dtype=">f4")
    vector[:, LEFT.wrist_rot6d] = vector[:, RIGHT.wrist_rot6d] = [1, 0, 0, 0, 1, 0]
    validate_hand_vector(vector[::-1])
    poses = unpack_hands(vector[::-1])
    assert poses.wrist_rotation.shape == (3, 2, 3, 3)
    with pytest.raises(TypeError, match="got builtins.list"):
        unpack_hands([[0.0] * 48])  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="numeric numpy array"):
        apply_hand_mask(np.array([["a"] * 48]), np.ones((1, 2), bool))


def test_apply_hand_mask_that_does_not_broadcast_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match=r"hand mask of shape \(3, 2\) does not broadcast"):
        apply_hand_mask(torch.ones(4, ACTION_DIM), torch.ones(3, 2, dtype=torch.bool))
    out = apply_hand_mask(torch.ones(2, 4, ACTION_DIM), torch.tensor([[True, False]]).expand(2, 1, 2))  # fmt: skip
    assert out.sum().item() == 2 * 4 * 24


def test_fingertip_value_mask_and_validation_of_absent_fingertips() -> None:
    tips = torch.ones(2, 5, dtype=torch.bool)
    tips[:, 4] = False  # four-finger hands on both sides
    values = fingertip_value_mask(torch.ones(7, 2, dtype=torch.bool), tips)
    assert values.shape == (7, 48)
    assert values[0].sum().item() == 42
    assert not bool(values[:, LEFT.fingertip("little")].any())
    with pytest.raises(ContractError, match=r"expected shape \(\.\.\., 2, 5\)"):
        fingertip_value_mask(torch.ones(2, dtype=torch.bool), torch.ones(5, dtype=torch.bool))
    rotation = torch.eye(3).expand(7, 2, 3, 3)
    vector = pack_hands(torch.zeros(7, 2, 3), rotation, torch.full((7, 2, 5, 3), 0.1))
    with pytest.raises(ContractError, match="fingertip little"):
        validate_hand_vector(vector, fingertip_mask=tips)
    masked = apply_hand_mask(vector, torch.ones(7, 2, dtype=torch.bool), fingertip_mask=tips)
    validate_hand_vector(masked, fingertip_mask=tips)
    assert masked[:, RIGHT.fingertip("little")].abs().sum().item() == 0


# -- frames ----------------------------------------------------------------------------------


def test_paper_frames_round_trip_and_axes() -> None:
    for side in ("left", "right"):
        rotation = torch.tensor(PAPER_FROM_WRIST[side])
        torch.testing.assert_close(rotation.T @ rotation, torch.eye(3))
        assert float(torch.linalg.det(rotation)) == pytest.approx(1.0)
        points = torch.randn(10, 3, dtype=torch.float64)
        torch.testing.assert_close(from_paper_frame(to_paper_frame(points, side), side), points)
    # Our z points to the fingertips: the paper's left x does, its right x points back.
    fingertip_direction = torch.tensor([0.0, 0.0, 1.0])
    assert to_paper_frame(fingertip_direction, "left").tolist() == [1.0, 0.0, 0.0]
    assert to_paper_frame(fingertip_direction, "right").tolist() == [-1.0, 0.0, 0.0]
    # Our right-hand x points out of the palm; the paper's y points from the palm to the back.
    assert to_paper_frame(torch.tensor([1.0, 0.0, 0.0]), "right").tolist() == [0.0, -1.0, 0.0]
    # Our y points from the little finger towards the thumb side: the paper's z, both hands.
    for side in ("left", "right"):
        assert to_paper_frame(torch.tensor([0.0, 1.0, 0.0]), side).tolist() == [0.0, 0.0, 1.0]


# -- layering --------------------------------------------------------------------------------


def _kernel_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):  # imports under `if TYPE_CHECKING:` are not run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("metis_core.")
        ):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("metis_core.")
            )
    return found


def test_kernel_imports_have_no_cycle() -> None:
    modules = {p.stem: p for p in KERNEL.glob("*.py") if p.stem != "__init__"}
    graph = {name: _kernel_imports(path) & set(modules) - {name} for name, path in modules.items()}
    assert "registry" in graph["components"]  # components sit above the registry...
    assert "interfaces" not in graph["registry"]  # ...which names the interfaces by path
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_resampling_zero_frames_is_a_contract_error() -> None:
    from metis_core.resample import resample_hand_vectors

    with pytest.raises(ContractError, match="the sequence has no frames"):
        resample_hand_vectors(torch.zeros(0, ACTION_DIM), torch.zeros(0))
    reversed_numpy = np.zeros((4, ACTION_DIM))[::-1]
    reversed_numpy[:, LEFT.wrist_rot6d] = reversed_numpy[:, RIGHT.wrist_rot6d] = [1, 0, 0, 0, 1, 0]
    result = resample_hand_vectors(reversed_numpy, np.arange(4) / 10.0, target_fps=20.0)
    assert result.vectors.shape == (7, ACTION_DIM)


def test_saved_folder_whose_type_is_not_a_string(tmp_path: Path) -> None:
    from metis_core.interfaces import Tokenizer
    from metis_core.io import CorruptFileError

    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"type": 5, "_metis": {"kind": "tokenizers", "contract": "metis-hand-v1"}})
    )
    with pytest.raises(CorruptFileError, match="'type' must be the component's registry name"):
        Tokenizer.from_pretrained(folder)


def test_metis_help_with_every_installed_plugin_imports_no_torch() -> None:
    # all installed plugins (metis_tokenizers' command group is a LazyCommand, its package
    # __init__ is lazy): listing the commands must not import torch; running one loads it
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "import metis_core.cli as cli\n"
        "cli._load_plugin_commands()\n"
        "result = CliRunner().invoke(cli.cli, ['--help'])\n"
        "assert result.exit_code == 0 and 'tokenizers' in result.output, result.output\n"
        "print('torch' in sys.modules)\n"
        "result = CliRunner().invoke(cli.cli, ['tokenizers', '--help'])\n"
        "assert result.exit_code == 0 and 'train' in result.output, result.output\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
