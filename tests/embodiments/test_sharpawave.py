"""The SharpaWave hand: conformance, SDK joint order, human-sized geometry."""

from __future__ import annotations

import pytest
import torch

from metis_core.registry import EMBODIMENTS
from metis_core.testing import EmbodimentConformance
from metis_embodiments.sharpawave import SHARPAWAVE_JOINT_ORDER


class TestSharpaWaveConformance(EmbodimentConformance):
    component_name = "sharpawave"


def test_twenty_two_joints_in_sdk_order() -> None:
    hand = EMBODIMENTS.create("sharpawave")
    assert hand.num_joints == 22
    assert hand.joint_names == SHARPAWAVE_JOINT_ORDER
    # No couplings: every URDF joint is actuated.
    assert len(hand.kinematics.urdf_joint_names) == 22
    limits = dict(zip(hand.joint_names, hand.joint_limits.tolist(), strict=True))
    # Published in the SDK example: MCP abduction sweeps +-20 deg.
    assert limits["index_mcp_abduction"] == pytest.approx([-0.349066, 0.349066], abs=1e-4)


def test_open_hand_is_human_sized() -> None:
    hand = EMBODIMENTS.create("sharpawave")
    tips_mm = hand.forward_kinematics(torch.zeros(22, dtype=torch.float64)) * 1000
    # Middle fingertip 90 + 45 + 27 + 20 = 182 mm from the wrist, straight along z.
    assert tips_mm[2].tolist() == pytest.approx([0.0, 0.0, 182.0], abs=1e-3)
    torch.testing.assert_close(hand.calibration, torch.eye(4, dtype=torch.float64))
    assert hand.hand_length_m == pytest.approx(0.182)


def test_flexion_moves_fingertips_towards_the_palm() -> None:
    hand = EMBODIMENTS.create("sharpawave")
    q = torch.zeros(22, dtype=torch.float64)
    open_tips = hand.forward_kinematics(q)
    q[hand.joint_names.index("index_mcp_flexion")] = 1.2
    q[hand.joint_names.index("index_mcp_abduction")] = 0.2
    q[hand.joint_names.index("thumb_cmc_abduction")] = 0.8
    bent = hand.forward_kinematics(q)
    assert float(bent[1, 0]) > float(open_tips[1, 0]) + 0.03  # index towards the palm (+x)
    assert float(bent[0, 0]) > float(open_tips[0, 0]) + 0.02  # thumb palmar abduction
    torch.testing.assert_close(bent[2:], open_tips[2:])  # other fingers untouched
