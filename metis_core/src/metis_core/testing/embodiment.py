"""Conformance checks for embodiments (hands)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from metis_core.interfaces import Embodiment
from metis_core.registry import EMBODIMENTS
from metis_core.testing.component import ComponentConformance


class EmbodimentConformance(ComponentConformance):
    """FK shapes and differentiability, limits, FK→IK→FK round trip, mirror symmetry, bad input.

    Attributes:
        round_trip_tolerance_m: Median fingertip error allowed after FK → IK → FK, in metres.
        samples: Random joint configurations drawn for the round trip.
    """

    kind: ClassVar[str] = "embodiments"
    round_trip_tolerance_m: ClassVar[float] = 1e-3
    samples: ClassVar[int] = 64

    def _make(self, side: str) -> Embodiment:
        return EMBODIMENTS.create(self.component_name, **{**self.config_overrides, "side": side})

    @pytest.fixture(params=["left", "right"])
    def hand(self, request: Any) -> Embodiment:
        return self._make(request.param)

    def _random_joints(self, hand: Embodiment, count: int, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        limits = hand.joint_limits.double()
        u = torch.rand(count, hand.num_joints, generator=generator, dtype=torch.float64)
        return limits[:, 0] + u * (limits[:, 1] - limits[:, 0])

    def test_limits_are_well_formed(self, hand: Embodiment) -> None:
        limits = hand.joint_limits
        assert limits.shape == (hand.num_joints, 2)
        assert bool(torch.isfinite(limits).all())
        assert bool((limits[:, 0] < limits[:, 1]).all())
        assert len(set(hand.joint_names)) == hand.num_joints

    def test_fk_shapes_and_batching(self, hand: Embodiment) -> None:
        joints = self._random_joints(hand, 6).reshape(2, 3, hand.num_joints)
        tips = hand.forward_kinematics(joints)
        assert tips.shape == (2, 3, 5, 3)
        single = hand.forward_kinematics(joints[1, 2])
        assert single.shape == (5, 3)
        torch.testing.assert_close(single, tips[1, 2])

    def test_fk_is_differentiable(self, hand: Embodiment) -> None:
        joints = self._random_joints(hand, 4).requires_grad_(True)
        hand.forward_kinematics(joints).sum().backward()
        assert joints.grad is not None
        assert bool(torch.isfinite(joints.grad).all())
        assert float(joints.grad.abs().sum()) > 0

    def test_fk_ik_fk_round_trip(self, hand: Embodiment) -> None:
        joints = self._random_joints(hand, self.samples, seed=1)
        target = hand.forward_kinematics(joints)
        result = hand.inverse_kinematics(target)
        assert result.joints.shape == joints.shape
        limits = hand.joint_limits.to(result.joints)
        assert bool((result.joints >= limits[:, 0] - 1e-6).all())
        assert bool((result.joints <= limits[:, 1] + 1e-6).all())
        reached = hand.forward_kinematics(result.joints)
        error = (reached - target).norm(dim=-1)
        assert float(error.median()) <= self.round_trip_tolerance_m
        torch.testing.assert_close(result.fingertip_error.to(error), error, atol=1e-6, rtol=1e-4)

    def test_left_is_mirror_of_right(self) -> None:
        left, right = self._make("left"), self._make("right")
        assert left.joint_names == right.joint_names or len(left.joint_names) == len(right.joint_names)
        joints = self._random_joints(right, 8, seed=2)
        # Mirroring a hand flips the x axis of the contract wrist frame (see metis_core.frames).
        right_tips = right.forward_kinematics(joints)
        mirrored = right_tips * torch.tensor([-1.0, 1.0, 1.0]).to(right_tips)
        torch.testing.assert_close(left.forward_kinematics(joints), mirrored, atol=1e-6, rtol=1e-6)

    def test_bad_joints_raise(self, hand: Embodiment) -> None:
        good = self._random_joints(hand, 2)
        with pytest.raises(ValueError, match=rf"\(\.\.\., {hand.num_joints}\)"):
            hand.check_joints(good[:, :-1])
        nan = good.clone()
        nan[0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            hand.check_joints(nan)
        outside = good.clone()
        outside[1, 0] = hand.joint_limits[0, 1].double() + 0.5
        with pytest.raises(ValueError, match=hand.joint_names[0]):
            hand.check_joints(outside, strict=True)
        hand.check_joints(outside, strict=False)
