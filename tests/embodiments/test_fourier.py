"""The Fourier 6-DoF hand: conformance, transcription against robosuite's numbers, couplings, frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metis_core.frames import wrist_frame_from_keypoints
from metis_core.registry import EMBODIMENTS
from metis_core.testing import EmbodimentConformance
from metis_embodiments.fourier import ACTIONNET_JOINT_ORDER, LEFT_BASE_MIRROR, FourierHand


class TestFourierConformance(EmbodimentConformance):
    component_name = "fourier"


@pytest.fixture(scope="module")
def right() -> FourierHand:
    return EMBODIMENTS.create("fourier", side="right")


def _quat_matrix(w: float, x: float, y: float, z: float) -> np.ndarray:
    q = np.array([w, x, y, z]) / np.linalg.norm([w, x, y, z])
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


# robosuite fourier_right_hand.xml, bodies under r_palm: (pos, quat wxyz) of the proximal and
# intermediate bodies (joint axis 0 0 -1 for both), and Fourier's fingertip offsets + couplings.
_ROBOSUITE_FINGERS = {
    "index": (
        (0.026864, 0.012307, -0.095892),
        (2.00728e-05, -0.725387, -2.80225e-05, 0.688341),
        (0.031532, -0.0054551, 0),
        (1, 0, 0, 0),
        (0.038, -0.0015, 0),
        1.128,
    ),
    "middle": (
        (0.0084962, 0.012307, -0.097896),
        (3.09284e-05, -0.707113, -3.61231e-05, 0.707101),
        (0.031662, -0.0046408, 0),
        (1, 0, 0, 0),
        (0.045, 0.0005, 0),
        1.131,
    ),
    "ring": (
        (-0.009965, 0.012307, -0.097841),
        (-2.66449e-06, -0.688341, -2.52842e-06, 0.725387),
        (0.031531, -0.0054572, 0),
        (1, 0, 0, 0),
        (0.038, -0.0015, 0),
        1.143,
    ),
    "pinky": (
        (-0.028232, 0.012307, -0.095916),
        (3.85697e-05, -0.669139, -1.12538e-05, 0.743137),
        (0.031338, -0.0064763, 0),
        (1, 0, 0, 3.3988e-05),
        (0.031, -0.004, 0),
        1.129,
    ),
}


def _robosuite_finger_tip(finger: str, angle: float) -> np.ndarray:
    pos1, quat1, pos2, quat2, tip, multiplier = _ROBOSUITE_FINGERS[finger]
    axis = np.array([0.0, 0.0, -1.0])
    r1 = _quat_matrix(*quat1) @ _axis_angle(axis, angle)
    r2 = r1 @ _quat_matrix(*quat2) @ _axis_angle(axis, multiplier * angle)
    p2 = np.array(pos1) + r1 @ np.array(pos2)
    return p2 + r2 @ np.array(tip)


def _robosuite_thumb_tip(yaw: float, pitch: float) -> np.ndarray:
    r0 = _quat_matrix(-3.67321e-06, 1, 0, 0) @ _axis_angle(np.array([0, 0, -1.0]), yaw)
    p0 = np.array([0.021995, 0.015502, -0.024995])
    r1 = r0 @ _quat_matrix(0.70707, 0.707143, 4.31666e-06, -4.31711e-06) @ _axis_angle(np.array([0, 0, 1.0]), pitch)  # fmt: skip
    p1 = p0 + r0 @ np.array([0.02175, 0, 0])
    r2 = r1 @ _quat_matrix(1, 0, 0, 6.105e-06) @ _axis_angle(np.array([0, 0, 1.0]), 0.974 * pitch)
    p2 = p1 + r1 @ np.array([0.061444, 0.0082822, 0])
    return p2 + r2 @ np.array([0.031, 0.0, 0.0])


def test_urdf_matches_robosuite_model_within_a_micrometre(right: FourierHand) -> None:
    generator = torch.Generator().manual_seed(3)
    q = right.sample_joints(20, generator=generator)
    tips = right.forward_kinematics(q)
    calibration = right.calibration
    # Back to base-link coordinates: p_base = R_cal p_wrist + o_cal.
    tips_base = tips @ calibration[:3, :3].T + calibration[:3, 3]
    names = right.joint_names
    for n in range(q.shape[0]):
        joint = dict(zip(names, q[n].tolist(), strict=True))
        expected = [_robosuite_thumb_tip(joint["thumb_proximal_yaw_joint"], joint["thumb_proximal_pitch_joint"])]  # fmt: skip
        expected += [
            _robosuite_finger_tip(finger, joint[f"{finger}_proximal_joint"])
            for finger in ("index", "middle", "ring", "pinky")
        ]
        error_mm = np.linalg.norm(tips_base[n].numpy() - np.stack(expected), axis=-1) * 1000
        assert error_mm.max() < 1e-3, error_mm


def test_six_actuators_in_actionnet_order_drive_eleven_joints(right: FourierHand) -> None:
    assert right.joint_names == ACTIONNET_JOINT_ORDER
    assert len(right.kinematics.urdf_joint_names) == 11
    limits = dict(zip(right.joint_names, right.joint_limits.tolist(), strict=True))
    assert limits["pinky_proximal_joint"] == pytest.approx([0.0, 1.57])
    assert limits["thumb_proximal_pitch_joint"] == pytest.approx([0.0, 1.22])
    assert limits["thumb_proximal_yaw_joint"] == pytest.approx([0.0, 1.74])
    q = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], dtype=torch.float64)
    full = dict(
        zip(right.kinematics.urdf_joint_names, right.expand_joints(q).tolist(), strict=True)
    )
    assert full["pinky_intermediate_joint"] == pytest.approx(1.129 * 0.1)
    assert full["ring_intermediate_joint"] == pytest.approx(1.143 * 0.2)
    assert full["index_intermediate_joint"] == pytest.approx(1.128 * 0.4)
    assert full["thumb_distal_joint"] == pytest.approx(0.974 * 0.5)
    assert full["thumb_proximal_yaw_joint"] == pytest.approx(0.6)


def test_open_and_closed_hand_in_millimetres(right: FourierHand) -> None:
    open_tips = right.forward_kinematics(torch.zeros(6, dtype=torch.float64)) * 1000
    # Fingers straight along +z of the wrist frame, 156-176 mm from the wrist, index side +y.
    assert open_tips[1:, 2].tolist() == pytest.approx([168.4, 175.3, 166.6, 156.0], abs=0.5)
    assert open_tips[1:, 0].abs().max() < 6.0
    assert float(open_tips[1, 1]) > float(open_tips[4, 1])
    closed = right.forward_kinematics(right.joint_limits.double()[:, 1]) * 1000
    # Closed fingers curl to the palm side (+x) and come back towards the wrist.
    assert bool((closed[1:, 0] > 20).all())
    assert bool((closed[1:, 2] < 65).all())


def test_calibration_is_the_keypoint_wrist_frame(right: FourierHand) -> None:
    calibration = right.calibration
    rotation = calibration[:3, :3]
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(calibration[:3, 3], torch.zeros(3, dtype=torch.float64))
    middle = torch.tensor([0.0084962, 0.012307, -0.097896], dtype=torch.float64)
    torch.testing.assert_close(rotation[:, 2], middle / middle.norm(), atol=1e-6, rtol=0)


def test_left_wrist_in_base_link_matches_reflected_keypoints() -> None:
    right = EMBODIMENTS.create("fourier", side="right")
    left = EMBODIMENTS.create("fourier", side="left")
    reflect = torch.diag(torch.tensor(LEFT_BASE_MIRROR, dtype=torch.float64))
    origins = {
        name: right.link_pose(torch.zeros(6, dtype=torch.float64), name)[:3, 3]
        for name in (
            "hand_base_link",
            "index_proximal_link",
            "middle_proximal_link",
            "pinky_proximal_link",
        )
    }
    calibration = right.calibration
    base_points = [calibration[:3, :3] @ p + calibration[:3, 3] for p in origins.values()]
    rotation, origin = wrist_frame_from_keypoints(*[reflect @ p for p in base_points])
    torch.testing.assert_close(left.wrist_in_base_link()[:3, :3], rotation, atol=1e-9, rtol=0)
    torch.testing.assert_close(left.wrist_in_base_link()[:3, 3], origin, atol=1e-12, rtol=0)
    # A left fingertip seen from the left base link is the reflected right fingertip.
    q = left.sample_joints(5, generator=torch.Generator().manual_seed(0))
    pose = left.wrist_in_base_link()
    left_base = left.forward_kinematics(q) @ pose[:3, :3].T + pose[:3, 3]
    right_base = right.forward_kinematics(q) @ calibration[:3, :3].T + calibration[:3, 3]
    torch.testing.assert_close(left_base, right_base @ reflect, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        left.wrist_in_end_link()[:3, 3] - pose[:3, 3],
        torch.tensor([0.0, 0.0, -0.021], dtype=torch.float64),
    )


def test_fk_ik_fk_round_trip_in_millimetres() -> None:
    for side in ("left", "right"):
        hand = EMBODIMENTS.create("fourier", side=side)
        q = hand.sample_joints(200, generator=torch.Generator().manual_seed(7))
        target = hand.forward_kinematics(q)
        result = hand.inverse_kinematics(target)
        error_mm = (hand.forward_kinematics(result.joints) - target).norm(dim=-1) * 1000
        assert float(error_mm.median()) < 0.05
        assert float(error_mm.quantile(0.95)) < 1.0


def test_bad_input_names_the_joint(right: FourierHand) -> None:
    q = torch.tensor([0.0, 0.0, 0.0, 1.7, 0.0, 0.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="index_proximal_joint"):
        right.forward_kinematics(q)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        right.forward_kinematics(torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="no left-hand URDF"):
        EMBODIMENTS.create("fourier", side="left", left_model="urdf")
