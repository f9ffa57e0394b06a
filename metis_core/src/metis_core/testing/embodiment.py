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

    Together with :class:`ComponentConformance` (registration, config JSON round trip, save/load).

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
        return hand.sample_joints(count, generator=generator)

    def test_limits_are_well_formed(self, hand: Embodiment) -> None:
        limits = hand.joint_limits
        assert limits.shape == (hand.num_joints, 2)
        assert bool(torch.isfinite(limits).all())
        assert bool((limits[:, 0] < limits[:, 1]).all())
        samples = hand.sample_joints(16, generator=torch.Generator().manual_seed(0))
        assert samples.shape == (16, hand.num_joints)
        hand.check_joints(samples, strict=True)
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
        assert left.joint_names == right.joint_names
        torch.testing.assert_close(left.joint_limits, right.joint_limits)
        joints = self._random_joints(right, 8, seed=2)
        # Mirroring a hand flips the x axis of the contract wrist frame: with M a reflection of
        # the hand's points, z' = Mz, y' = My, x' = y' × z' = det(M) M x = -M x, so the mirrored
        # fingertips in their own wrist frame are the original ones with x negated, whatever the
        # mirror plane. Robot joints mean the same on both sides; keypoint hands reflect theirs.
        right_tips = right.forward_kinematics(joints)
        mirrored = right_tips * torch.tensor([-1.0, 1.0, 1.0]).to(right_tips)
        left_tips = left.forward_kinematics(right.mirror_joints(joints))
        torch.testing.assert_close(left_tips, mirrored, atol=1e-6, rtol=1e-6)

    def test_ik_respects_limits_for_unreachable_targets(self, hand: Embodiment) -> None:
        joints = self._random_joints(hand, 8, seed=3)
        # Fingertips pushed 50 % further from the wrist are out of reach of any real hand.
        target = hand.forward_kinematics(joints) * 1.5
        result = hand.inverse_kinematics(target)
        limits = hand.joint_limits.to(result.joints)
        assert bool(torch.isfinite(result.joints).all())
        assert bool((result.joints >= limits[:, 0] - 1e-6).all())
        assert bool((result.joints <= limits[:, 1] + 1e-6).all())
        assert result.fingertip_error.shape == (8, 5)
        assert bool((result.fingertip_error >= 0).all())

    def test_ik_warm_start_and_shapes(self, hand: Embodiment) -> None:
        joints = self._random_joints(hand, 6, seed=4).reshape(2, 3, hand.num_joints)
        target = hand.forward_kinematics(joints)
        result = hand.inverse_kinematics(target, initial_joints=joints)
        assert result.joints.shape == (2, 3, hand.num_joints)
        assert result.fingertip_error.shape == (2, 3, 5)
        assert float(result.fingertip_error.max()) <= self.round_trip_tolerance_m
        single = hand.inverse_kinematics(target[0, 0], initial_joints=joints[0, 0])
        assert single.joints.shape == (hand.num_joints,)
        assert single.fingertip_error.shape == (5,)

    def test_bad_fingertips_raise(self, hand: Embodiment) -> None:
        target = hand.forward_kinematics(self._random_joints(hand, 2))
        with pytest.raises(ValueError, match=r"\(\.\.\., 5, 3\)"):
            hand.inverse_kinematics(target[:, :4])
        nan = target.clone()
        nan[0, 1, 2] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            hand.inverse_kinematics(nan)

    def test_save_load_keeps_kinematics(self, hand: Embodiment, tmp_path: Any) -> None:
        hand.save_pretrained(tmp_path / "hand")
        loaded = Embodiment.from_pretrained(tmp_path / "hand")
        assert type(loaded) is type(hand)
        assert loaded.side == hand.side
        assert loaded.joint_names == hand.joint_names
        joints = self._random_joints(hand, 4, seed=5)
        torch.testing.assert_close(
            loaded.forward_kinematics(joints), hand.forward_kinematics(joints)
        )

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
        with pytest.raises(ValueError, match=rf"\(\.\.\., {hand.num_joints}\)"):
            hand.forward_kinematics(good[:, :-1])
        with pytest.raises(ValueError, match="NaN"):
            hand.forward_kinematics(nan)
        with pytest.raises(ValueError, match="torch.Tensor"):
            hand.forward_kinematics(good.tolist())  # type: ignore[arg-type]
