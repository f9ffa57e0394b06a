"""A 6-DoF tendon-coupled hand, written exactly as a third-party plugin would be.

The URDF (``urdf/tendon_hand_right.urdf``) describes the right hand. Its base link ``palm`` has
its origin at the wrist and is laid out along the contract's wrist frame (z towards the middle
MCP, y from the little towards the index MCP, x out of the palm), so the calibration that
``URDFHand`` derives from the keypoint links is the identity; a hand whose base link sits
elsewhere gets its calibration the same way, from the same four links.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metis_embodiments.kinematics import KeypointLinks
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig

__all__ = ["TendonHand", "TendonHandConfig"]


@dataclass(frozen=True, kw_only=True)
class TendonHandConfig(URDFHandConfig):
    """Config of the tendon hand; every field is inherited from ``URDFHandConfig``.

    Args:
        side: ``"right"`` or ``"left"`` (the mirror image of the right-hand URDF).
        strict_limits: Reject joint values outside the limits in forward kinematics.
        ik_backend: ``"torch_lm"`` or ``"dex_retargeting"``.
        ik_max_iterations: Iteration cap of the torch IK solver.
        ik_tolerance_m: Fingertip tolerance at which the torch solver stops (metres).
        ik_seeds: Canonical starting points per problem without a warm start.
        ik_damping: Initial Levenberg–Marquardt damping.
        ik_dtype: ``"float32"`` or ``"float64"`` arithmetic in the solver.
        ik_restart_threshold_m: Problems still this far off after the first pass restart.
        ik_restart_seeds: Quasi-random starting points of a restart.
        ik_restarts: Restart passes at most.
        dex_ftol_abs: Objective tolerance of the dex-retargeting backend.
        dex_norm_delta: dex-retargeting's regulariser towards the previous frame.
        left_model: ``"mirror"`` (this plugin ships no separate left-hand URDF).
        sanity_checks: Check the URDF and the keypoint links when the hand is built.
    """


class TendonHand(URDFHand):
    """Six actuated joints: thumb opposition and flexion, one flexion per finger.

    Joints (URDF order): ``thumb_rotation_joint``, ``thumb_proximal_joint``,
    ``index_proximal_joint``, ``middle_proximal_joint``, ``ring_proximal_joint``,
    ``little_proximal_joint``; each distal joint follows its proximal joint through a
    ``<mimic>`` coupling.
    """

    name = "tendon_hand"
    config_class = TendonHandConfig
    fingertip_links = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "little_tip")
    keypoint_links = KeypointLinks(
        wrist="palm",
        index_mcp="index_proximal",
        middle_mcp="middle_proximal",
        little_mcp="little_proximal",
    )

    @classmethod
    def urdf_path(cls) -> Path:
        """The right-hand URDF shipped inside this package."""
        return Path(__file__).parent / "urdf" / "tendon_hand_right.urdf"
