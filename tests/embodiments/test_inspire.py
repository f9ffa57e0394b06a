"""The Inspire hand: conformance, couplings, calibration, Unitree commands, pk consistency."""

from __future__ import annotations

import pytest
import torch

from metis_core.registry import EMBODIMENTS
from metis_core.testing import EmbodimentConformance
from metis_embodiments.inspire import UNITREE_COMMAND_ORDER, InspireHand


class TestInspireConformance(EmbodimentConformance):
    component_name = "inspire"


@pytest.fixture(scope="module")
def right() -> InspireHand:
    return EMBODIMENTS.create("inspire", side="right")


def test_six_actuators_drive_twelve_joints(right: InspireHand) -> None:
    assert right.num_joints == 6
    assert len(right.kinematics.urdf_joint_names) == 12
    q = torch.tensor([0.3, 0.5, 1.0, 0.2, 0.7, 1.4], dtype=torch.float64)
    full = dict(
        zip(right.kinematics.urdf_joint_names, right.expand_joints(q).tolist(), strict=True)
    )
    # Maker's mimic coefficients: thumb 1.334 and 0.667 of the bend; fingers 1.06399 q - 0.04545.
    assert full["thumb_intermediate_joint"] == pytest.approx(1.334 * 0.5)
    assert full["thumb_distal_joint"] == pytest.approx(0.667 * 0.5)
    assert full["index_intermediate_joint"] == pytest.approx(1.06399 * 1.0 - 0.04545)
    assert full["pinky_intermediate_joint"] == pytest.approx(1.06399 * 1.4 - 0.04545)


def test_calibration_is_the_keypoint_wrist_frame(right: InspireHand) -> None:
    calibration = right.calibration
    rotation = calibration[:3, :3]
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64))
    assert float(torch.linalg.det(rotation)) == pytest.approx(1.0)
    # z points from the base towards the middle MCP (−y of the base link, 137 mm away).
    assert rotation[:, 2].tolist() == pytest.approx([0.00208, -0.99557, -0.09404], abs=1e-4)
    torch.testing.assert_close(calibration[:3, 3], torch.zeros(3, dtype=torch.float64))
    # In the wrist frame the MCPs lie on the z axis side and y orders index (+) before little (−).
    poses = right.link_poses(torch.zeros(6, dtype=torch.float64))
    names = right.link_names
    middle = poses[names.index("middle_proximal"), :3, 3]
    assert middle[:2].abs().max() < 1e-9
    assert float(middle[2]) == pytest.approx(0.1377, abs=1e-3)
    index_y = poses[names.index("index_proximal"), 1, 3]
    little_y = poses[names.index("pinky_proximal"), 1, 3]
    assert float(index_y) > 0 > float(little_y)


def test_open_hand_fingertips_in_millimetres(right: InspireHand) -> None:
    tips = right.forward_kinematics(torch.zeros(6, dtype=torch.float64)) * 1000
    # Open hand: fingers along +z at 199-217 mm, thumb on the palm side (+x) and index side (+y).
    assert tips[1:, 2].tolist() == pytest.approx([215.5, 216.8, 211.0, 199.2], abs=0.5)
    assert float(tips[0, 0]) > 30
    assert float(tips[0, 1]) > 80
    # Closing the index brings its tip towards the palm (+x) and the wrist.
    closed = right.forward_kinematics(torch.tensor([0, 0, 1.47, 0, 0, 0.0], dtype=torch.float64))
    assert float(closed[1, 0]) > 0.03
    assert float(closed[1, 2]) < 0.17


def test_fast_fingertips_match_pytorch_kinematics_frames(right: InspireHand) -> None:
    torch.manual_seed(0)
    limits = right.joint_limits.double()
    q = limits[:, 0] + torch.rand(16, 6, dtype=torch.float64) * (limits[:, 1] - limits[:, 0])
    chain = right.kinematics.chain(torch.float64)
    frames = chain.forward_kinematics(right.expand_joints(q))
    calibration = right.calibration
    for tip_link, tip in zip(
        right.fingertip_links, right.forward_kinematics(q).unbind(-2), strict=True
    ):
        base = frames[tip_link].get_matrix()[:, :3, 3]
        wrist = (base - calibration[:3, 3]) @ calibration[:3, :3]
        torch.testing.assert_close(wrist, tip, atol=1e-12, rtol=0)


def test_jacobian_matches_autograd(right: InspireHand) -> None:
    q = torch.tensor([[0.4, 0.3, 0.9, 0.1, 1.2, 0.6]], dtype=torch.float64)
    _, jacobian = right.kinematics.fingertips_and_jacobian(q)
    numeric = torch.autograd.functional.jacobian(
        lambda x: right.kinematics.fingertips(x).reshape(-1), q
    )
    torch.testing.assert_close(jacobian[0], numeric.reshape(15, 6), atol=1e-10, rtol=0)


def test_unitree_command_round_trip(right: InspireHand) -> None:
    open_hand = torch.zeros(6, dtype=torch.float64)
    torch.testing.assert_close(
        right.to_unitree_command(open_hand), torch.ones(6, dtype=torch.float64)
    )
    closed = right.joint_limits.double()[:, 1]
    torch.testing.assert_close(
        right.to_unitree_command(closed), torch.zeros(6, dtype=torch.float64)
    )
    q = torch.tensor([0.2, 0.3, 0.4, 0.5, 0.6, 0.7], dtype=torch.float64)
    command = right.to_unitree_command(q)
    # Unitree order: little, ring, middle, index, thumb bend, thumb rotation.
    assert command[0] == pytest.approx(1 - 0.7 / 1.47)
    assert command[3] == pytest.approx(1 - 0.4 / 1.47)
    assert command[4] == pytest.approx(1 - 0.3 / 0.6)
    assert command[5] == pytest.approx(1 - 0.2 / 1.308)
    torch.testing.assert_close(right.from_unitree_command(command), q)
    assert right.config.command_order == UNITREE_COMMAND_ORDER
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        right.from_unitree_command(torch.full((6,), 1.5))
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        right.from_unitree_command(torch.ones(5))


def test_custom_command_order_and_bad_config() -> None:
    issue_order = (
        "index_proximal_joint",
        "middle_proximal_joint",
        "ring_proximal_joint",
        "pinky_proximal_joint",
        "thumb_proximal_pitch_joint",
        "thumb_proximal_yaw_joint",
    )
    hand = EMBODIMENTS.create("inspire", command_order=issue_order)
    q = torch.tensor([0.0, 0.0, 1.47, 0.0, 0.0, 0.0], dtype=torch.float64)
    assert hand.to_unitree_command(q).tolist() == pytest.approx([0, 1, 1, 1, 1, 1])
    with pytest.raises(ValueError, match="permutation"):
        EMBODIMENTS.create("inspire", command_order=("index_proximal_joint",))
    with pytest.raises(ValueError, match="side"):
        EMBODIMENTS.create("inspire", side="middle")
    with pytest.raises(ValueError, match="ik_backend"):
        EMBODIMENTS.create("inspire", ik_backend="magic")


def test_strict_limits_in_fk(right: InspireHand) -> None:
    q = torch.tensor([0.0, 0.0, 1.6, 0.0, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="index_proximal_joint"):
        right.forward_kinematics(q)
    lenient = EMBODIMENTS.create("inspire", strict_limits=False)
    assert lenient.forward_kinematics(q).shape == (5, 3)


def test_ik_gradient_flows_to_targets(right: InspireHand) -> None:
    q = torch.tensor([0.6, 0.3, 0.7, 0.8, 0.9, 1.0], dtype=torch.float64)
    target = right.forward_kinematics(q).requires_grad_(True)
    result = right.inverse_kinematics(target)
    result.joints[2].backward()
    # The index joint depends on the index fingertip only.
    assert target.grad is not None
    assert float(target.grad[1].abs().sum()) > 0
    assert float(target.grad[[0, 2, 3, 4]].abs().sum()) < 1e-8


def test_left_link_poses_are_proper_rotations() -> None:
    left = EMBODIMENTS.create("inspire", side="left")
    poses = left.link_poses(torch.full((6,), 0.3, dtype=torch.float64))
    dets = torch.linalg.det(poses[:, :3, :3])
    # pytorch-kinematics builds the URDF offsets in float32, hence the 1e-6 tolerance.
    torch.testing.assert_close(dets, torch.ones_like(dets), atol=1e-6, rtol=0)
    tips = left.forward_kinematics(torch.full((6,), 0.3, dtype=torch.float64))
    index_tip = poses[left.link_names.index("index_tip"), :3, 3]
    torch.testing.assert_close(index_tip, tips[1])


@pytest.mark.parametrize("name", ["inspire", "sharpawave", "human_mano", "human_manus"])
def test_bad_warm_start_raises(name: str) -> None:
    hand = EMBODIMENTS.create(name)
    target = hand.forward_kinematics(hand.sample_joints(3, generator=torch.Generator()))
    with pytest.raises(ValueError, match=rf"\(\.\.\., {hand.num_joints}\)"):
        hand.inverse_kinematics(target, initial_joints=torch.zeros(hand.num_joints + 1))
    with pytest.raises(ValueError, match="initial_joints must have shape"):
        hand.inverse_kinematics(target, initial_joints=torch.zeros(2, hand.num_joints))


def test_makers_left_urdf_agrees_with_the_mirror_except_the_thumb() -> None:
    mirror = EMBODIMENTS.create("inspire", side="left")
    maker = EMBODIMENTS.create("inspire", side="left", left_model="urdf")
    assert maker.joint_names == mirror.joint_names
    q = mirror.sample_joints(200, generator=torch.Generator().manual_seed(0))
    gap_mm = (maker.forward_kinematics(q) - mirror.forward_kinematics(q)).norm(dim=-1) * 1000
    assert float(gap_mm[:, 1:].max()) < 0.01  # fingers: same numbers, mirrored
    assert 9.0 < float(gap_mm[:, 0].max()) < 12.0  # thumb: the maker's files disagree
    bent = torch.tensor([0.0, 0.6, 0, 0, 0, 0], dtype=torch.float64)
    gap_bent = (maker.forward_kinematics(bent) - mirror.forward_kinematics(bent))[0].norm()
    assert float(gap_bent) * 1000 < 1.0
    with pytest.raises(ValueError, match="no left-hand URDF"):
        EMBODIMENTS.create("sharpawave", side="left", left_model="urdf")
