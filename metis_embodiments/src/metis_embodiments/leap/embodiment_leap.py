"""LEAP Hand: a 16-DoF, four-finger (no little finger) low-cost hand (registry name ``leap``).

Kinematics: ``urdf/leap_hand_right.urdf``, a meshless copy of the public LEAP Hand URDF of
dexsuite/dex-urdf (MIT licence, Copyright 2023 Ananye Agarwal; the full notice is in the file):
joint origins, axes and limits unchanged, joints renamed from the motor ids "0".."15". Joint
vectors follow the LEAP motor order (:data:`LEAP_MOTOR_ORDER`, as in leap-hand/LEAP_Hand_API):
per finger MCP side (abduction), MCP forward (flexion), PIP, DIP for index (0-3), middle (4-7)
and ring (8-11), then the thumb (12-15). Zero is the flat, open hand (the URDF's convention;
LEAP's API adds π to every motor reading).

Four fingers: the hand has no little finger, so ``fingertip_links`` names ``None`` for it. Its
forward kinematics reports the little fingertip as zeros, inverse kinematics ignores that target
(so retargeting a human hand drives thumb, index, middle and ring), and
:attr:`~metis_embodiments.urdf_hand.URDFHand.fingertip_mask` is ``[T, T, T, T, F]`` for datasets
recorded on it (:func:`metis_core.contract.fingertip_value_mask`).

Calibration (base link → contract wrist frame): the wrist is dex-urdf's ``base`` frame, 98 mm
behind the palm plate along the fingers (where dex-urdf places the hand's wrist for
retargeting); the MCPs are the origins of ``pip``, ``pip_2`` and ``pip_3`` (the MCP side-joint
axes of index, middle and ring) at the zero pose, the ring MCP playing the little MCP (it only
sets the direction of y). This gives a near-identity rotation (the base frame is laid out like
the wrist frame within 3°): the open fingertips sit about 228 mm forward (+z), the thumb on the
palm (+x) and index (+y) side.

Left hand: the mirror image of the right (``left_model="mirror"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metis_embodiments.kinematics import KeypointLinks
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig

__all__ = ["LEAP_MOTOR_ORDER", "LeapConfig", "LeapHand"]

#: The 16 actuated joints in LEAP motor order (motor ids 0..15).
LEAP_MOTOR_ORDER = (
    "index_mcp_side",
    "index_mcp_forward",
    "index_pip",
    "index_dip",
    "middle_mcp_side",
    "middle_mcp_forward",
    "middle_pip",
    "middle_dip",
    "ring_mcp_side",
    "ring_mcp_forward",
    "ring_pip",
    "ring_dip",
    "thumb_cmc",
    "thumb_axial",
    "thumb_mcp",
    "thumb_ip",
)


@dataclass(frozen=True, kw_only=True)
class LeapConfig(URDFHandConfig):
    """Config of LEAP Hand; every field is inherited from ``URDFHandConfig``.

    Args:
        side: ``"right"`` or ``"left"`` (the mirror image of the right hand).
        strict_limits: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_backend: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_max_iterations: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_tolerance_m: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_seeds: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_damping: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_dtype: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_restart_threshold_m: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_restart_seeds: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        ik_restarts: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        dex_ftol_abs: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        dex_norm_delta: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
        left_model: Only ``"mirror"``: no separate left-hand URDF ships with this plugin.
        sanity_checks: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
    """


class LeapHand(URDFHand):
    """LEAP Hand: 16 actuated DoF, thumb and three fingers, left and right."""

    name = "leap"
    config_class = LeapConfig
    fingertip_links = ("thumb_tip_head", "index_tip_head", "middle_tip_head", "ring_tip_head", None)
    keypoint_links = KeypointLinks(
        wrist="base", index_mcp="pip", middle_mcp="pip_2", little_mcp="pip_3"
    )
    joint_order = LEAP_MOTOR_ORDER

    @classmethod
    def urdf_path(cls) -> Path:
        """The right-hand URDF shipped in this package."""
        return Path(__file__).parent / "urdf" / "leap_hand_right.urdf"
