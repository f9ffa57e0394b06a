"""`metis embodiments show` and the dex-retargeting reference backend."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from metis_core.plugins import make_plugin_manager
from metis_core.registry import EMBODIMENTS
from metis_embodiments import plugin


@pytest.fixture
def metis_cli() -> click.Group:
    group = click.Group("metis")
    manager = make_plugin_manager(load_entry_points=False, plugins=[plugin])
    manager.hook.register_commands(cli=group)
    return group


@pytest.mark.parametrize(
    ("name", "values"),
    [("inspire", "0.3,0.2,0.5,0.6,0.7,0.8"), ("human_mano", None), ("sharpawave", None)],
)
def test_show_writes_a_png(
    metis_cli: click.Group, tmp_path: Path, name: str, values: str | None
) -> None:
    out = tmp_path / f"{name}.png"
    args = ["embodiments", "show", name, "--out", str(out)]
    if values is not None:
        args += ["--q", values]
    if name == "human_mano":
        from metis_embodiments.human import MANO_TEMPLATE

        args += ["--q", ",".join(f"{v:.4f}" for v in MANO_TEMPLATE.reshape(-1).tolist())]
    result = CliRunner().invoke(metis_cli, args)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000


def test_show_rejects_bad_joint_values(metis_cli: click.Group, tmp_path: Path) -> None:
    out = str(tmp_path / "x.png")
    result = CliRunner().invoke(metis_cli, ["embodiments", "show", "inspire", "--q", "0.1,0.2", "--out", out])  # fmt: skip
    assert result.exit_code != 0
    assert "has 6 joints" in result.output
    result = CliRunner().invoke(metis_cli, ["embodiments", "show", "inspire", "--q", "0,0,9,0,0,0", "--out", out])  # fmt: skip
    assert result.exit_code != 0
    assert "index_proximal_joint" in result.output


def test_dex_retargeting_backend_tracks_a_smooth_chunk() -> None:
    torch.manual_seed(0)
    for side in ("right", "left"):
        hand = EMBODIMENTS.create("inspire", side=side, ik_backend="dex_retargeting")
        limits = hand.joint_limits
        phase = torch.linspace(0.2, 0.6, 10, dtype=torch.float64)[:, None]
        joints = limits[:, 0] + phase * (limits[:, 1] - limits[:, 0])
        target = hand.forward_kinematics(joints)
        result = hand.inverse_kinematics(target, initial_joints=joints[0])
        assert result.joints.shape == (10, 6)
        assert bool((result.joints >= limits[:, 0]).all())
        assert bool((result.joints <= limits[:, 1]).all())
        # Same frames, same URDF: the per-frame reference reaches the targets within 0.1 mm.
        assert float(result.fingertip_error.max()) < 1e-4
        torch.testing.assert_close(result.joints, joints, atol=2e-3, rtol=0)


def test_readme_example_runs() -> None:
    readme = Path(__file__).resolve().parents[2] / "metis_embodiments" / "README.md"
    text = readme.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, str(readme), "exec"), namespace)
    robot = namespace["robot"]
    assert robot.joints.shape == (6,)
    assert float(robot.fingertip_error.max()) < 0.05
