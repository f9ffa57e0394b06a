"""Fourier 6-DoF dexterous hand (Fourier GR1-T1/T2 humanoids): 6 actuators driving 11 joints.

Kinematics: ``urdf/fourier_hand_right.urdf``, written from public numbers (see the comments
there): link origins, orientations and joint limits from robosuite's model of this hand
(``robosuite/models/assets/grippers/fourier_right_hand.xml``), which equal those of Fourier's
GR1-T2 URDF (FFTAI/Wiki-GRx-Models, revision "01212025-1"); couplings and fingertip points
from that Fourier URDF. Actuated joints, in the order Fourier ActionNet records them
(``FFTAI/fourier-lerobot`` ``STATE_HAND6DOF_NAMES``, per hand)::

    pinky_proximal_joint         little finger,     [0, 1.57] rad (drives its intermediate ×1.129)
    ring_proximal_joint          ring finger,       [0, 1.57] rad (×1.143)
    middle_proximal_joint        middle finger,     [0, 1.57] rad (×1.131)
    index_proximal_joint         index finger,      [0, 1.57] rad (×1.128)
    thumb_proximal_pitch_joint   thumb bend,        [0, 1.22] rad (drives the distal ×0.974)
    thumb_proximal_yaw_joint     thumb rotation,    [0, 1.74] rad

0 is the open hand and positive values close it (robosuite's convention; Fourier's URDF writes
the four fingers and the thumb rotation with the opposite sign).

Estimates and simplifications: the intermediate limits (1.74 rad) are not enforced on the
coupled joints (a fully closed ring finger reaches 1.57 × 1.143 = 1.79 rad, as in Fourier's
URDF); fingertip points are the maker's ``*_tip_link`` spheres, i.e. the centre of the pad end,
not the nail tip.

Calibration (base link → contract wrist frame): the wrist is the origin of ``hand_base_link``
(the flange on the wrist); the MCPs are the origins of ``index_proximal_link``,
``middle_proximal_link`` and ``pinky_proximal_link``, which are fixed to the base link, so the
frame does not depend on the joints. With these numbers the fingers point along −z of the base
link (MCPs about 96-98 mm from the flange).

Left hand: the mirror image of the right (``left_model="mirror"``). Fourier's left-hand URDF is
the right one reflected through the base link's x-z plane (y negated), which
:meth:`FourierHand.wrist_in_base_link` uses to place the contract wrist frame of a left hand in
its own base link.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metis_embodiments.kinematics import KeypointLinks
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig

__all__ = [
    "ACTIONNET_JOINT_ORDER",
    "END_LINK_TO_HAND_BASE_M",
    "LEFT_BASE_MIRROR",
    "FourierConfig",
    "FourierHand",
]

#: The six actuated joints in Fourier ActionNet's per-hand order (``L_``/``R_`` prefixes dropped).
ACTIONNET_JOINT_ORDER = (
    "pinky_proximal_joint",
    "ring_proximal_joint",
    "middle_proximal_joint",
    "index_proximal_joint",
    "thumb_proximal_pitch_joint",
    "thumb_proximal_yaw_joint",
)

#: Reflection (in base-link coordinates) that turns the right hand's base link into the left's:
#: Fourier's left-hand URDF negates y of every palm-fixed joint origin.
LEFT_BASE_MIRROR = (1.0, -1.0, 1.0)

#: Offset of ``hand_base_link`` in the arm's end link (``{side}_end_effector_link``, which
#: coincides with ``{side}_hand_pitch_link``) in Fourier's GR1-T2 URDF: 21 mm along −z; the
#: rotation there is below 7e-5 rad and taken as identity.
END_LINK_TO_HAND_BASE_M = (0.0, 0.0, -0.021)


@dataclass(frozen=True, kw_only=True)
class FourierConfig(URDFHandConfig):
    """Config of the Fourier 6-DoF hand.

    Args:
        side: ``"right"`` or ``"left"`` (the mirror image of the right-hand model).
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


class FourierHand(URDFHand):
    """Fourier 6-DoF hand: 6 actuated DoF, 11 joints, left and right (registry name ``fourier``).

    Joint vectors follow :data:`ACTIONNET_JOINT_ORDER`.
    """

    name = "fourier"
    config_class = FourierConfig
    fingertip_links = (
        "thumb_tip_link",
        "index_tip_link",
        "middle_tip_link",
        "ring_tip_link",
        "pinky_tip_link",
    )
    keypoint_links = KeypointLinks(
        wrist="hand_base_link",
        index_mcp="index_proximal_link",
        middle_mcp="middle_proximal_link",
        little_mcp="pinky_proximal_link",
    )
    joint_order = ACTIONNET_JOINT_ORDER

    @classmethod
    def urdf_path(cls) -> Path:
        """The right-hand URDF shipped in this package."""
        return Path(__file__).parent / "urdf" / "fourier_hand_right.urdf"

    def wrist_in_base_link(self) -> torch.Tensor:
        """``(4, 4)`` pose of this side's contract wrist frame in this side's own base link.

        For the right hand this is :attr:`calibration`. The left hand's base link is the right
        one reflected by ``S = diag(LEFT_BASE_MIRROR)``; building the wrist frame from the
        reflected keypoints gives the rotation ``S R_cal M`` (``M = diag(-1, 1, 1)``, the
        contract's left/right mirror) and the origin ``S o_cal``, consistent with this
        embodiment's left-hand fingertips.
        """
        out = self.calibration.clone()
        if self.side == "left":
            reflect = torch.diag(torch.tensor(LEFT_BASE_MIRROR, dtype=torch.float64))
            flip_x = torch.diag(torch.tensor((-1.0, 1.0, 1.0), dtype=torch.float64))
            out[:3, :3] = reflect @ out[:3, :3] @ flip_x
            out[:3, 3] = reflect @ out[:3, 3]
        return out

    def wrist_in_end_link(self) -> torch.Tensor:
        """``(4, 4)`` pose of the contract wrist frame in the arm's end link (GR1 ``*_end_effector_link``)."""
        out = self.wrist_in_base_link()
        out[:3, 3] += torch.tensor(END_LINK_TO_HAND_BASE_M, dtype=torch.float64)
        return out
