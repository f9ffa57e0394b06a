"""Human keypoint hands (MANO-21, Manus-25): conformance, contract mapping, retargeting."""

from __future__ import annotations

import math

import pytest
import torch

from metis_core.errors import ContractError
from metis_core.frames import from_wrist_frame
from metis_core.registry import EMBODIMENTS
from metis_core.rotations import matrix_to_rot6d, rot6d_to_matrix
from metis_core.testing import EmbodimentConformance
from metis_embodiments.human import MANO_TEMPLATE, curl_fingers
from metis_embodiments.human_manus.embodiment_human_manus import MANUS_TEMPLATE
from metis_embodiments.retarget import retarget


class TestHumanManoConformance(EmbodimentConformance):
    component_name = "human_mano"
    round_trip_tolerance_m = 1e-9


class TestHumanManusConformance(EmbodimentConformance):
    component_name = "human_manus"
    round_trip_tolerance_m = 1e-9


def _camera_pose() -> tuple[torch.Tensor, torch.Tensor]:
    """A wrist pose in the ego camera: 40 cm ahead, rotated about an oblique axis."""
    six_d = torch.tensor([0.6, 0.0, 0.8, 0.0, 1.0, 0.0], dtype=torch.float64)
    return rot6d_to_matrix(six_d), torch.tensor([0.05, 0.10, 0.40], dtype=torch.float64)


def test_mano_keypoints_to_contract() -> None:
    hand = EMBODIMENTS.create("human_mano")
    rotation, origin = _camera_pose()
    in_camera = from_wrist_frame(MANO_TEMPLATE, origin, rotation)
    joints = in_camera.reshape(63)
    wrist_rotation, wrist_origin = hand.wrist_pose(joints)
    torch.testing.assert_close(wrist_rotation, rotation, atol=1e-12, rtol=0)
    torch.testing.assert_close(wrist_origin, origin)
    tips = hand.forward_kinematics(joints)
    torch.testing.assert_close(tips, MANO_TEMPLATE[[4, 8, 12, 16, 20]], atol=1e-12, rtol=0)
    # Open template: middle fingertip 90 + 45 + 27 + 20 = 182 mm from the wrist along z.
    assert float(tips[2, 2]) == pytest.approx(0.182, abs=1e-9)
    position, six_d, fingertips = hand.contract_pose(joints)
    torch.testing.assert_close(position, origin)
    torch.testing.assert_close(six_d, matrix_to_rot6d(rotation), atol=1e-12, rtol=0)
    torch.testing.assert_close(fingertips, tips)


def test_manus_and_mano_agree_on_the_same_hand() -> None:
    mano, manus = EMBODIMENTS.create("human_mano"), EMBODIMENTS.create("human_manus")
    assert manus.num_joints == 75
    mano_tips = mano.forward_kinematics(MANO_TEMPLATE.reshape(-1))
    manus_tips = manus.forward_kinematics(MANUS_TEMPLATE.reshape(-1))
    torch.testing.assert_close(mano_tips, manus_tips)


def test_ik_keeps_finger_bases_and_palm() -> None:
    hand = EMBODIMENTS.create("human_mano")
    grasp = curl_fingers(torch.full((5, 3), 0.5, dtype=torch.float64))
    tips = hand.forward_kinematics(grasp.reshape(-1))
    result = hand.inverse_kinematics(tips)
    points = result.joints.reshape(21, 3)
    torch.testing.assert_close(points[[0, 1, 5, 9, 13, 17]], MANO_TEMPLATE[[0, 1, 5, 9, 13, 17]])
    assert float(result.fingertip_error.max()) < 1e-12


def test_degenerate_palm_raises() -> None:
    hand = EMBODIMENTS.create("human_mano")
    joints = torch.zeros(63, dtype=torch.float64)
    with pytest.raises(ContractError, match="degenerate"):
        hand.forward_kinematics(joints)
    with pytest.raises(ValueError, match="millimetre|limits"):
        hand.forward_kinematics(MANO_TEMPLATE.reshape(-1) * 1000)


def test_mano_grasp_retargeted_onto_inspire() -> None:
    human = EMBODIMENTS.create("human_mano")
    inspire = EMBODIMENTS.create("inspire")
    rotation, origin = _camera_pose()
    # A power grasp: fingers flexed 45/60/30 degrees, thumb opposed and bent.
    flexion = torch.tensor(
        [[35, 20, 20], [45, 60, 30], [45, 60, 30], [45, 60, 30], [45, 60, 30]], dtype=torch.float64
    )
    grasp = curl_fingers(flexion * math.pi / 180)
    keypoints = from_wrist_frame(grasp, origin, rotation)
    result = retarget(human, keypoints, inspire)
    limits = inspire.joint_limits
    assert bool((result.joints >= limits[:, 0] - 1e-9).all())
    assert bool((result.joints <= limits[:, 1] + 1e-9).all())
    # Fingers close: the four flexion joints leave zero by a lot.
    assert bool((result.joints[2:] > 0.5).all())
    assert result.fingertip_error.shape == (5,)
    # A 6-DoF hand with one curl per finger cannot copy a human grasp exactly: measured errors
    # are about 18-26 mm per fingertip (thumb 19 mm), median about 21 mm.
    errors_mm = result.fingertip_error * 1000
    assert float(errors_mm.max()) < 30
    assert 10 < float(errors_mm.median()) < 25
    assert float(result.scale) == pytest.approx(inspire.hand_length_m / 0.182)


def test_retarget_batches_and_checks_sides() -> None:
    human = EMBODIMENTS.create("human_mano", side="left")
    robot = EMBODIMENTS.create("inspire", side="left")
    flex = torch.linspace(0, 1.0, 4, dtype=torch.float64)[:, None, None].expand(4, 5, 3)
    keypoints = human.mirror_joints(curl_fingers(flex).reshape(4, 63))
    result = retarget(human, keypoints, robot)
    assert result.joints.shape == (4, 6)
    # More human flexion → more robot flexion, monotonically, for the index finger.
    assert bool((result.joints[1:, 2] >= result.joints[:-1, 2] - 1e-6).all())
    with pytest.raises(ValueError, match="left human hand onto a right"):
        retarget(human, keypoints, EMBODIMENTS.create("inspire"))
    with pytest.raises(ValueError, match="human keypoint hand"):
        retarget(robot, keypoints, robot)
