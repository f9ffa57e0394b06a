"""LEAP Hand: a four-finger built-in from its public URDF; conformance and retargeting."""

from __future__ import annotations

import pytest
import torch

from metis_core.contract import RIGHT, fingertip_value_mask
from metis_core.registry import EMBODIMENTS
from metis_core.testing import EmbodimentConformance
from metis_embodiments.leap import LEAP_MOTOR_ORDER, LeapHand
from metis_embodiments.retarget import retarget


class TestLeapConformance(EmbodimentConformance):
    component_name = "leap"


@pytest.fixture(scope="module")
def right() -> LeapHand:
    return EMBODIMENTS.create("leap", side="right")


def test_sixteen_joints_in_motor_order_and_four_fingertips(right: LeapHand) -> None:
    assert right.joint_names == LEAP_MOTOR_ORDER
    assert right.num_joints == 16
    assert right.fingertip_mask.tolist() == [True, True, True, True, False]
    assert right.present_fingertips == ("thumb", "index", "middle", "ring")
    # The source URDF's limits, e.g. motor 1 (index MCP forward) and motor 13 (thumb).
    limits = right.joint_limits
    assert limits[1].tolist() == pytest.approx([-0.314, 2.23])
    assert limits[13].tolist() == pytest.approx([-0.47, 2.443])


def test_open_hand_geometry_in_millimetres(right: LeapHand) -> None:
    tips = right.forward_kinematics(right.open_joints()) * 1000
    # Flat hand: index, middle, ring about 228 mm forward, 45 mm apart across the palm (+y to
    # the index); the thumb on the palm (+x) and index (+y) side; no little fingertip.
    assert tips[1:4, 2].tolist() == pytest.approx([228.6, 228.7, 228.1], abs=1.0)
    assert tips[1:4, 1].tolist() == pytest.approx([44.5, -0.5, -46.5], abs=1.5)
    assert float(tips[0, 0]) > 10
    assert float(tips[0, 1]) > 150
    assert tips[4].tolist() == [0.0, 0.0, 0.0]


def test_human_hand_retargets_onto_leap_within_limits() -> None:
    human = EMBODIMENTS.create("human_mano", side="right")
    robot = EMBODIMENTS.create("leap", side="right")
    generator = torch.Generator().manual_seed(0)
    keypoints = human.sample_joints(64, generator=generator)
    result = retarget(human, keypoints, robot)
    limits = robot.joint_limits.to(result.joints)
    assert bool((result.joints >= limits[:, 0] - 1e-9).all())
    assert bool((result.joints <= limits[:, 1] + 1e-9).all())
    # The human little fingertip is dropped: zero target, zero error.
    assert bool((result.target_fingertips[..., 4, :] == 0).all())
    assert bool((result.fingertip_error[..., 4] == 0).all())
    # The other four follow the scaled human fingertips; reported errors match FK.
    reached = robot.forward_kinematics(result.joints.double())
    error = (reached - result.target_fingertips).norm(dim=-1)
    torch.testing.assert_close(result.fingertip_error.double(), error, atol=1e-6, rtol=1e-4)
    assert float(error[..., :4].median()) < 0.02


def test_datasets_recorded_on_leap_mask_the_little_fingertip(right: LeapHand) -> None:
    left = EMBODIMENTS.create("leap", side="left")
    fingertips = torch.stack([left.fingertip_mask, right.fingertip_mask])  # (2, 5)
    hand_mask = torch.tensor([[True, True], [False, True]])
    values = fingertip_value_mask(hand_mask, fingertips)
    assert values.shape == (2, 48)
    # Both hands present: 48 - 2 x 3 little-finger values; left missing: 24 - 3 right values.
    assert values.sum(-1).tolist() == [42, 21]
    assert not bool(values[:, RIGHT.fingertip("little")].any())
    assert bool(values[:, RIGHT.fingertip("ring")].all())
