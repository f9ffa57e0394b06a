"""The example plugin package, installed with pip and found only through the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests_helpers import write_distribution

from metis_core.registry import EMBODIMENTS, refresh_registries
from metis_core.testing import EmbodimentConformance

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "examples" / "plugin_template"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def installed_template(tmp_path_factory: pytest.TempPathFactory):
    """``pip install`` the template (a real wheel build) into a fresh site directory."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(TEMPLATE)],
        check=True,
    )  # fmt: skip
    sys.path.insert(0, str(site))
    refresh_registries()
    yield site
    sys.path.remove(str(site))
    for module in [m for m in sys.modules if m.startswith("metis_tendon_hand")]:
        del sys.modules[module]
    refresh_registries()


def _metis(*args: str, extra_path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", "from metis_core.cli import main; main()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_template_is_found_through_the_registry(installed_template: Path) -> None:
    assert "tendon_hand" in EMBODIMENTS.names()
    info = EMBODIMENTS.info("tendon_hand")
    assert info.distribution == "metis-tendon-hand 0.1.0"
    assert info.target == "metis_tendon_hand.tendon_hand.embodiment_tendon_hand:TendonHand"
    hand = EMBODIMENTS.create("tendon_hand", side="left")
    # The class came from the pip-installed copy, not from the source tree.
    assert sys.modules[type(hand).__module__].__file__.startswith(str(installed_template))


def test_metis_plugins_lists_the_template_and_a_broken_plugin(
    installed_template: Path, tmp_path: Path
) -> None:
    broken = write_distribution(
        tmp_path / "broken_site",
        "metis-broken-hand",
        "0.0.1",
        entry_points={
            "metis.embodiments": {"broken_hand": "broken_hand_mod:BrokenHand"},
            "metis": {"broken_hooks": "broken_hooks_mod"},
        },
        modules={
            "broken_hand_mod": "raise ImportError('simulated: libbroken is missing')\n",
            "broken_hooks_mod": "raise RuntimeError('simulated: hook module crashed')\n",
        },
    )
    # Listing alone imports no component (fast, no torch): it sees the broken hook module.
    listing = _metis("plugins", extra_path=[installed_template, broken])
    assert listing.returncode == 0, listing.stderr
    assert "broken_hand" in listing.stdout  # listed by name, not imported
    assert "broken plugins (1)" in listing.stdout
    result = _metis(
        "plugins", "--check", "--kind", "embodiments", extra_path=[installed_template, broken]
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "tendon_hand" in out
    assert "metis-tendon-hand 0.1.0" in out
    assert "broken plugins (2)" in out
    assert "broken_hand = broken_hand_mod:BrokenHand (metis-broken-hand 0.0.1)" in out
    assert "ImportError: simulated: libbroken is missing" in out
    assert "RuntimeError: simulated: hook module crashed" in out

    as_json = json.loads(
        _metis(
            "plugins",
            "--check",
            "--json",
            "--kind",
            "embodiments",
            extra_path=[installed_template, broken],
        ).stdout
    )
    names = {row["name"] for row in as_json["components"]["embodiments"]}
    assert "tendon_hand" in names
    assert "broken_hand" not in names
    assert {b["name"] for b in as_json["broken"]} == {"broken_hand", "broken_hooks"}
    assert (
        _metis(
            "plugins", "--strict", "--kind", "embodiments", extra_path=[installed_template, broken]
        ).returncode
        == 1
    )


def test_template_command_comes_through_the_hook(installed_template: Path) -> None:
    result = _metis("tendon-hand", "--side", "right", extra_path=[installed_template])
    assert result.returncode == 0, result.stderr
    assert "closed:" in result.stdout
    # The straight middle finger: MCP 92 mm above the wrist, then links of 50 and 38 mm.
    middle_open = next(
        line for line in result.stdout.splitlines() if line.strip().startswith("middle")
    )
    assert "z=  180.0" in middle_open


@pytest.mark.usefixtures("installed_template")
class TestTendonHandConformance(EmbodimentConformance):
    component_name = "tendon_hand"
    round_trip_tolerance_m = 1e-6


def test_tendon_coupling_and_ik_recover_a_grasp(installed_template: Path) -> None:
    hand = EMBODIMENTS.create("tendon_hand")
    grasp = hand.joint_limits[:, 1] * 0.7
    all_joints = hand.expand_joints(grasp)
    names = hand.kinematics.urdf_joint_names
    assert all_joints.shape[-1] == len(names) == 11  # 6 actuated + 5 coupled distal joints
    for finger, ratio in (("index", 1.1), ("little", 1.1), ("thumb", 0.8)):
        distal = all_joints[names.index(f"{finger}_distal_joint")]
        proximal = all_joints[names.index(f"{finger}_proximal_joint")]
        torch.testing.assert_close(distal, ratio * proximal)
    result = hand.inverse_kinematics(hand.forward_kinematics(grasp))
    assert float(result.fingertip_error.max()) < 1e-5
    torch.testing.assert_close(result.joints.double(), grasp.double(), atol=1e-3, rtol=0)
