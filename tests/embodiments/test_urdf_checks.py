"""URDF sanity checks, held-out hands (a 22-joint Shadow-like hand, a four-finger plugin written
as the tutorial says), robust IK defaults, config and file errors, a quiet dex backend."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metis_core.errors import ComponentConfigError
from metis_core.registry import EMBODIMENTS
from metis_core.testing import EmbodimentConformance
from metis_embodiments.kinematics import (
    HandKinematics,
    HandModelError,
    KeypointLinks,
    check_hand_model,
)
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig, inverse_kinematics_two_hands

FIXTURE = Path(__file__).parent / "fixtures" / "shadow_like_with_wrist_right.urdf"
SHADOW_TIPS = ("thtip", "fftip", "mftip", "rftip", "lftip")
SHADOW_KEYPOINTS = KeypointLinks(
    wrist="palm", index_mcp="ffknuckle", middle_mcp="mfknuckle", little_mcp="lfknuckle"
)


@dataclass(frozen=True, kw_only=True)
class ShadowLikeConfig(URDFHandConfig):
    """Args: see URDFHandConfig."""


def _hand_class(
    urdf: Path,
    *,
    name: str = "shadow_like",
    tips: tuple[str | None, ...] = SHADOW_TIPS,
    keypoints: KeypointLinks = SHADOW_KEYPOINTS,
) -> type[URDFHand]:
    config = dataclass(frozen=True, kw_only=True)(type(f"{name}Config", (ShadowLikeConfig,), {}))
    namespace = {
        "name": name,
        "config_class": config,
        "fingertip_links": tips,
        "keypoint_links": keypoints,
        "urdf_path": classmethod(lambda cls: urdf),
    }
    return type(f"{name}Hand", (URDFHand,), namespace)


def _without_wrist_joints(text: str) -> str:
    """What the tutorial says to do with a maker's URDF: make the wrist joints fixed."""
    return re.sub(
        r'<joint name="(WRJ\d)" type="revolute">', r'<joint name="\1" type="fixed">', text
    )


def _without_little_finger(text: str) -> str:
    root = ET.fromstring(text)
    for element in list(root):
        if element.get("name", "").lower().startswith("lf"):
            root.remove(element)
    return ET.tostring(root, encoding="unicode")


@pytest.fixture(scope="module")
def stripped_urdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shadow") / "shadow_like_right.urdf"
    path.write_text(_without_wrist_joints(FIXTURE.read_text()))
    return path


# -- sanity checks -------------------------------------------------------------------------


def test_unmodified_shadow_urdf_is_rejected_naming_the_wrist_joints() -> None:
    # Wrist keypoint on the palm: the palm moves with the wrist joints.
    with pytest.raises(HandModelError) as palm:
        _hand_class(FIXTURE)(ShadowLikeConfig())
    message = str(palm.value)
    assert "'palm' moves with the joints ['WRJ2', 'WRJ1']" in message
    assert 'remove them from the URDF (delete them or make them type="fixed")' in message
    # Wrist keypoint on the forearm: the wrist joints would become "finger" joints.
    forearm = KeypointLinks("forearm", "ffknuckle", "mfknuckle", "lfknuckle")
    with pytest.raises(HandModelError) as root:
        _hand_class(FIXTURE, keypoints=forearm)(ShadowLikeConfig())
    assert "the joints ['WRJ2', 'WRJ1'] move every fingertip at once" in str(root.value)
    # The check can be turned off for a hand known to need it: then they are finger joints.
    hand = _hand_class(FIXTURE, keypoints=forearm)(ShadowLikeConfig(sanity_checks=False))
    assert hand.joint_names[:2] == ("WRJ2", "WRJ1")


def test_wrong_wrist_link_puts_fingertips_behind_the_wrist(tmp_path: Path) -> None:
    # A link beyond the knuckles chosen as "wrist": the open hand's fingers end up behind it.
    text = FIXTURE.read_text().replace(
        "</robot>",
        '  <link name="knuckle_bar"/>\n  <joint name="knuckle_bar_joint" type="fixed">\n'
        '    <parent link="palm"/>\n    <child link="knuckle_bar"/>\n'
        '    <origin xyz="0 0 0.125" rpy="0 0 0"/>\n  </joint>\n</robot>',
    )
    urdf = tmp_path / "wrong_wrist.urdf"
    urdf.write_text(_without_wrist_joints(text))
    keypoints = KeypointLinks("knuckle_bar", "ffknuckle", "mfknuckle", "lfknuckle")
    with pytest.raises(HandModelError) as error:
        _hand_class(urdf, keypoints=keypoints)(ShadowLikeConfig())
    message = str(error.value)
    assert "keypoint_links.wrist = 'knuckle_bar' is probably not the wrist" in message
    behind = dict(
        re.findall(r"the (\w+) fingertip '\w+' lies behind the wrist \(z = (-[\d.]+) mm", message)
    )
    assert float(behind["index"]) == pytest.approx(-47.9, abs=0.1)
    assert set(behind) >= {"index", "middle"}
    assert all(float(z) < 0 for z in behind.values())


def test_repeated_fingertip_link_is_rejected(stripped_urdf: Path) -> None:
    tips = ("thtip", "fftip", "fftip", "rftip", "lftip")
    with pytest.raises(HandModelError, match="'fftip' is given for index and middle"):
        _hand_class(stripped_urdf, tips=tips)(ShadowLikeConfig())


def test_calibration_must_be_a_proper_rotation(stripped_urdf: Path) -> None:
    # A private kinematics object (hands share theirs through a cache).
    kinematics = HandKinematics(
        stripped_urdf, fingertip_links=SHADOW_TIPS, keypoint_links=SHADOW_KEYPOINTS
    )
    assert check_hand_model(kinematics) == []
    kinematics.calibration_rotation = kinematics.calibration_rotation * torch.tensor(
        [-1.0, 1.0, 1.0], dtype=torch.float64
    )  # a reflection, not a rotation
    kinematics._cache.clear()
    problems = check_hand_model(kinematics)
    assert len(problems) >= 1
    assert "calibration is not a proper rotation" in problems[0]
    assert "det -1.000000" in problems[0]


def test_missing_urdf_says_where_package_data_goes(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="package data") as error:
        _hand_class(tmp_path / "nowhere.urdf")(ShadowLikeConfig())
    assert "nowhere.urdf does not exist" in str(error.value)


def test_config_typo_names_the_close_field() -> None:
    with pytest.raises(ComponentConfigError, match="'ik_seed' \\(did you mean 'ik_seeds'\\?\\)"):
        EMBODIMENTS.create("inspire", ik_seed=4)


# -- a held-out 22-joint hand: robust IK defaults --------------------------------------------


def test_robust_defaults_solve_a_held_out_22_joint_hand(stripped_urdf: Path) -> None:
    hand = _hand_class(stripped_urdf)(ShadowLikeConfig())
    assert hand.num_joints == 22
    joints = hand.sample_joints(300, generator=torch.Generator().manual_seed(11))
    target = hand.forward_kinematics(joints)
    error = (hand.forward_kinematics(hand.inverse_kinematics(target).joints) - target).norm(dim=-1)
    assert float(error.max()) <= 1e-3
    assert float(error.quantile(0.99)) <= 1e-4
    # The old defaults (two seeds, no restart) leave the 5-DoF thumb in local minima.
    old = _hand_class(stripped_urdf)(ShadowLikeConfig(ik_seeds=2, ik_restarts=0))
    old_error = (old.forward_kinematics(old.inverse_kinematics(target).joints) - target).norm(
        dim=-1
    )
    assert float(old_error.max()) > 5e-3


def test_two_hands_in_one_batch_match_two_calls() -> None:
    left, right = (EMBODIMENTS.create("sharpawave", side=s) for s in ("left", "right"))
    generator = torch.Generator().manual_seed(3)
    q_left, q_right = left.sample_joints(30, generator=generator), right.sample_joints(30, generator=generator)  # fmt: skip
    t_left, t_right = left.forward_kinematics(q_left), right.forward_kinematics(q_right)
    warm_left, warm_right = q_left + 0.02, q_right - 0.02
    joint_left, joint_right = inverse_kinematics_two_hands(
        left, right, t_left, t_right, left_initial=warm_left, right_initial=warm_right
    )
    for hand, result, target in ((left, joint_left, t_left), (right, joint_right, t_right)):
        reached = hand.forward_kinematics(result.joints.double())
        error = (reached - target).norm(dim=-1)
        assert float(error.max()) <= 1e-4
        torch.testing.assert_close(result.fingertip_error.double(), error, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="expected a left and a right hand"):
        inverse_kinematics_two_hands(right, left, t_right, t_left)


def test_two_hands_share_a_batch_only_when_their_configs_differ_in_side_alone() -> None:
    from metis_embodiments.urdf_hand import _same_but_side

    left, right = (EMBODIMENTS.create("inspire", side=s) for s in ("left", "right"))
    assert _same_but_side(left.config, right.config)
    other = EMBODIMENTS.create("inspire", side="right", ik_tolerance_m=2e-5)
    assert not _same_but_side(left.config, other.config)
    assert not _same_but_side(left.config, EMBODIMENTS.create("sharpawave", side="right").config)
    # unequal configs are solved as two calls, with each hand's own settings
    generator = torch.Generator().manual_seed(5)
    q_left, q_right = left.sample_joints(8, generator=generator), other.sample_joints(8, generator=generator)  # fmt: skip
    t_left, t_right = left.forward_kinematics(q_left), other.forward_kinematics(q_right)
    joint_left, joint_right = inverse_kinematics_two_hands(left, other, t_left, t_right)
    for hand, result, target in ((left, joint_left, t_left), (other, joint_right, t_right)):
        assert float((hand.forward_kinematics(result.joints.double()) - target).norm(dim=-1).max()) <= 2e-4  # fmt: skip


def test_dex_backend_prints_nothing_for_urdfs_with_meshes(
    stripped_urdf: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    text = re.sub(
        r'<link name="(\w+)"/>',
        r'<link name="\1"><visual><geometry><mesh filename="meshes/\1.obj"/></geometry></visual></link>',
        stripped_urdf.read_text(),
    )
    urdf = tmp_path / "with_meshes.urdf"
    urdf.write_text(text)
    hand = _hand_class(urdf)(ShadowLikeConfig(ik_backend="dex_retargeting"))
    joints = hand.sample_joints(3, generator=torch.Generator().manual_seed(0))
    result = hand.inverse_kinematics(hand.forward_kinematics(joints))
    assert float(result.fingertip_error.max()) < 1e-3
    captured = capfd.readouterr()
    assert "Unable to resolve" not in captured.out + captured.err


# -- a held-out four-finger plugin, written as the tutorial says ------------------------------


@pytest.fixture(scope="module")
def four_finger_plugin(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("four") / "four_finger_right.urdf"
    path.write_text(_without_little_finger(_without_wrist_joints(FIXTURE.read_text())))
    hand = _hand_class(
        path,
        name="four_finger_test_hand",
        tips=("thtip", "fftip", "mftip", "rftip", None),
        keypoints=KeypointLinks("palm", "ffknuckle", "mfknuckle", "rfknuckle"),
    )
    EMBODIMENTS.register(hand)
    yield hand
    EMBODIMENTS.unregister("four_finger_test_hand")


@pytest.mark.usefixtures("four_finger_plugin")
class TestFourFingerPluginConformance(EmbodimentConformance):
    component_name = "four_finger_test_hand"


def test_four_finger_plugin_has_no_little_finger(four_finger_plugin: type[URDFHand]) -> None:
    hand = EMBODIMENTS.create("four_finger_test_hand")
    assert hand.num_joints == 17  # 22 minus the little finger's five
    assert hand.fingertip_mask.tolist() == [True, True, True, True, False]
    tips = hand.forward_kinematics(hand.open_joints())
    assert tips[4].tolist() == [0.0, 0.0, 0.0]
    assert bool((tips[:4, 2] > 0.1).all())


def test_ik_results_and_caches_are_ordinary_tensors_after_its_inference_mode_solve() -> None:
    """The solver runs in torch.inference_mode; what it returns, and the kinematics constants it
    caches on a first call, must still work with autograd and in-place edits."""
    hand = EMBODIMENTS.create("sharpawave", side="right", ik_dtype="float64")
    generator = torch.Generator().manual_seed(11)
    target = hand.forward_kinematics(hand.sample_joints(4, generator=generator))
    hand.kinematics._cache.clear()  # the first use of these constants is inside the solve
    hand.kinematics._tree._cache.clear()
    result = hand.inverse_kinematics(target)
    assert not result.joints.is_inference()
    assert not result.fingertip_error.is_inference()
    joints = result.joints.detach().clone().requires_grad_(True)
    hand.forward_kinematics(joints).square().sum().backward()  # the cached constants in autograd
    assert joints.grad is not None
    assert float(joints.grad.abs().sum()) > 0
    result.joints[0, 0] = 0.0  # in-place edits of the answer are allowed
