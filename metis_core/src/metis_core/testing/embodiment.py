"""Conformance checks for embodiments (hands)."""

from __future__ import annotations

import statistics
import time
from typing import Any, ClassVar

import pytest
import torch

from metis_core.interfaces import Embodiment
from metis_core.registry import EMBODIMENTS
from metis_core.testing.component import ComponentConformance


class EmbodimentConformance(ComponentConformance):
    """FK shapes and differentiability, limits, FK→IK→FK round trip with its tail, the timing of
    a two-hand chunk, absent fingertips, model sanity, mirror symmetry, bad input.

    Together with :class:`ComponentConformance` (registration, config JSON round trip, save/load).

    Attributes:
        round_trip_tolerance_m: Median fingertip error allowed after FK → IK → FK, in metres.
        round_trip_tail_tolerance_m: The 99th percentile and the worst fingertip error allowed
            over ``round_trip_samples`` random in-limit poses (default 1 mm).
        round_trip_samples: Random joint configurations of the tail check (at least 300).
        samples: Random joint configurations of the smaller checks.
        chunk_steps: Frames per hand of the timed two-hand chunk.
        chunk_budget_ms: Median wall time allowed for solving that chunk (both hands, warm
            started from the previous chunk's solution, one thread). Generous, for loaded CI
            machines: ``benchmarks/kinematics.py`` measures against the 10 ms target.
    """

    kind: ClassVar[str] = "embodiments"
    round_trip_tolerance_m: ClassVar[float] = 1e-3
    round_trip_tail_tolerance_m: ClassVar[float] = 1e-3
    round_trip_samples: ClassVar[int] = 300
    samples: ClassVar[int] = 64
    chunk_steps: ClassVar[int] = 30
    chunk_budget_ms: ClassVar[float] = 40.0

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
        # The tail matters: a solver stuck in a local minimum on 1 % of poses fails retargeting
        # on 1 % of frames. Median, 99th percentile and worst case over >= 300 poses.
        count = max(300, self.round_trip_samples)
        joints = self._random_joints(hand, count, seed=1)
        target = hand.forward_kinematics(joints)
        result = hand.inverse_kinematics(target)
        assert result.joints.shape == joints.shape
        limits = hand.joint_limits.to(result.joints)
        assert bool((result.joints >= limits[:, 0] - 1e-6).all())
        assert bool((result.joints <= limits[:, 1] + 1e-6).all())
        reached = hand.forward_kinematics(result.joints)
        error = (reached - target).norm(dim=-1)
        assert float(error.median()) <= self.round_trip_tolerance_m
        p99, worst = float(error.quantile(0.99)), float(error.max())
        assert p99 <= self.round_trip_tail_tolerance_m, f"p99 fingertip error {p99 * 1e3:.3f} mm"
        assert worst <= self.round_trip_tail_tolerance_m, (
            f"worst fingertip error {worst * 1e3:.3f} mm (pose {int(error.amax(-1).argmax())})"
        )
        torch.testing.assert_close(result.fingertip_error.to(error), error, atol=1e-6, rtol=1e-4)

    def _trajectory(self, hand: Embodiment, steps: int, seed: int) -> torch.Tensor:
        # A smooth in-limit motion: a cosine blend between two random poses.
        start, end = self._random_joints(hand, 2, seed=seed)
        phase = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, steps, dtype=torch.float64))
        return start + (end - start) * phase[:, None]

    def test_two_hand_chunk_timing(self) -> None:
        # A policy re-plans a chunk every control step: each chunk's IK is warm-started from the
        # previous chunk's solution shifted by one step.
        hands = (self._make("left"), self._make("right"))
        steps = self.chunk_steps
        chunks = []
        for repeat in range(6):
            per_hand = []
            for h, hand in enumerate(hands):
                truth = self._trajectory(hand, steps + 1, seed=10 + 2 * repeat + h)
                target = hand.forward_kinematics(truth)
                previous = hand.inverse_kinematics(target[:steps], initial_joints=truth[0])
                warm = torch.cat([previous.joints[1:], previous.joints[-1:]]).to(truth)
                per_hand.append((target[1:], warm))
            chunks.append(per_hand)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            times, worst = [], 0.0
            for per_hand in chunks:
                start = time.perf_counter()
                results = [
                    hand.inverse_kinematics(target, initial_joints=warm)
                    for hand, (target, warm) in zip(hands, per_hand, strict=True)
                ]
                times.append(time.perf_counter() - start)
                for hand, result, (target, _) in zip(hands, results, per_hand, strict=True):
                    reached = hand.forward_kinematics(result.joints.to(target))
                    worst = max(worst, float((reached - target).norm(dim=-1).max()))
        finally:
            torch.set_num_threads(threads)
        median_ms = statistics.median(times[1:]) * 1e3  # the first call warms caches
        assert worst <= self.round_trip_tail_tolerance_m, f"chunk error {worst * 1e3:.3f} mm"
        assert median_ms <= self.chunk_budget_ms, (
            f"a {steps}-step two-hand chunk took {median_ms:.1f} ms (median), budget "
            f"{self.chunk_budget_ms} ms"
        )

    def test_fingertip_presence(self, hand: Embodiment) -> None:
        mask = hand.fingertip_mask
        assert mask.shape == (5,)
        assert mask.dtype == torch.bool
        assert int(mask.sum()) >= 2, "a hand needs at least two fingertips"
        assert hand.present_fingertips == tuple(
            n for n, m in zip(hand.fingertip_names, mask.tolist(), strict=True) if m
        )
        joints = self._random_joints(hand, 8, seed=6)
        tips = hand.forward_kinematics(joints)
        # Absent fingertips are the contract's zeros; present ones are real points.
        assert bool((tips[:, ~mask] == 0).all())
        assert bool((tips[:, mask].norm(dim=-1) > 1e-3).all())
        if bool(mask.all()):
            return
        # The targets of absent fingertips are ignored, whatever they hold.
        reference = hand.inverse_kinematics(tips)
        noisy = tips.clone()
        noisy[:, ~mask] = torch.tensor([0.3, -0.2, 0.5], dtype=tips.dtype)
        moved = hand.inverse_kinematics(noisy)
        torch.testing.assert_close(moved.joints, reference.joints)
        nan = tips.clone()
        nan[:, ~mask] = float("nan")
        torch.testing.assert_close(hand.inverse_kinematics(nan).joints, reference.joints)
        assert bool((reference.fingertip_error[:, ~mask] == 0).all())

    def test_model_sanity(self, hand: Embodiment) -> None:
        # No wrist or arm joints, open-hand fingertips forward of the wrist, a proper calibration.
        assert hand.sanity_problems() == []

    def test_ik_empty_batch(self, hand: Embodiment) -> None:
        empty = torch.zeros(0, 5, 3, dtype=torch.float64)
        result = hand.inverse_kinematics(empty)
        assert result.joints.shape == (0, hand.num_joints)
        assert result.fingertip_error.shape == (0, 5)
        assert hand.forward_kinematics(result.joints.double()).shape == (0, 5, 3)

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
        present = int(hand.fingertip_mask.nonzero()[1, 0])
        nan[0, present, 2] = float("nan")
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
