"""Inspire RH56DFX hand: 6 actuators driving 12 joints through linkage couplings.

Kinematics: ``urdf/inspire_hand_right.urdf``, written from the maker's URDF numbers (see the
comments there for the source). Actuated joints, in URDF order::

    thumb_proximal_yaw_joint    thumb rotation, [0, 1.308] rad
    thumb_proximal_pitch_joint  thumb bend,     [0, 0.6] rad   (drives thumb_intermediate ×1.334
                                                               and thumb_distal ×0.667)
    index/middle/ring/pinky_proximal_joint      [0, 1.47] rad  (each drives its intermediate
                                                               joint ×1.06399 − 0.04545 rad)

Calibration (base link → contract wrist frame): the wrist is the origin of ``hand_base_link``
(the flange on the robot's wrist); the MCPs are the origins of ``index_proximal``,
``middle_proximal`` and ``pinky_proximal``, which are fixed to the base link, so the frame does
not depend on the joints. With the maker's numbers this gives, in base-link coordinates,
``z ≈ (0.0021, −0.9956, −0.0940)`` (towards the fingers), ``y ≈ (−0.0002, 0.0940, −0.9956)``
(little → index) and ``x = y × z ≈ (−1.0, −0.0021, 0.0000)`` (out of the palm), origin 0.

Left hand: by default the exact mirror image of the right-hand model (``left_model="mirror"``).
The maker's left-hand URDF (shipped as ``urdf/inspire_hand_left.urdf``, ``left_model="urdf"``)
agrees with it within 0.003 mm for the four fingers, but its thumb pitch frame is rotated by
about 0.11 rad, putting the open thumb tip about 11 mm away; which file matches a given hand is
not documented, so we keep the symmetric model as the default.

Unitree command convention (``rt/inspire/cmd``, see :meth:`InspireHand.to_unitree_command`): six
values in [0, 1] with 1 = open, in the order documented by Unitree (support.unitree.com, "Inspire
DFX dexterous hand", and unitreerobotics' DFX_inspire_service README): little ("pinky"), ring,
middle, index, thumb bend, thumb rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from metis_embodiments.kinematics import KeypointLinks
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig

__all__ = ["UNITREE_COMMAND_ORDER", "InspireConfig", "InspireHand"]

#: Joint behind each of the six Unitree command values, in command order.
# Note: the issue text lists the order as index, middle, ring, little, thumb bend, thumb
# rotation; Unitree's published interface table (and every Unitree/NVIDIA controller we checked)
# uses little, ring, middle, index, thumb bend, thumb rotation, which is what a real G1 expects.
# The order is a config field (`command_order`) so either can be selected explicitly.
UNITREE_COMMAND_ORDER = (
    "pinky_proximal_joint",
    "ring_proximal_joint",
    "middle_proximal_joint",
    "index_proximal_joint",
    "thumb_proximal_pitch_joint",
    "thumb_proximal_yaw_joint",
)


@dataclass(frozen=True, kw_only=True)
class InspireConfig(URDFHandConfig):
    """Config of the Inspire hand.

    Args:
        side: ``"right"`` or ``"left"``.
        command_order: The actuated joint behind each Unitree command value (a permutation of
            the six actuated joints); default :data:`UNITREE_COMMAND_ORDER`.
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
        left_model: ``"mirror"`` (default: the mirrored right hand) or ``"urdf"`` (the maker's
            left-hand URDF, whose open thumb tip sits about 11 mm from the mirror image).
        sanity_checks: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
    """

    command_order: tuple[str, ...] = UNITREE_COMMAND_ORDER

    def __post_init__(self) -> None:
        super().__post_init__()
        if sorted(self.command_order) != sorted(UNITREE_COMMAND_ORDER):
            raise ValueError(
                "command_order must be a permutation of the six actuated joints "
                f"{list(UNITREE_COMMAND_ORDER)}, got {list(self.command_order)}"
            )


class InspireHand(URDFHand):
    """Inspire RH56DFX: 6 actuated DoF, 12 joints, left and right (registry name ``inspire``)."""

    name = "inspire"
    config_class = InspireConfig
    fingertip_links = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "pinky_tip")
    keypoint_links = KeypointLinks(
        wrist="hand_base_link",
        index_mcp="index_proximal",
        middle_mcp="middle_proximal",
        little_mcp="pinky_proximal",
    )

    @classmethod
    def urdf_path(cls) -> Path:
        """The right-hand URDF shipped in this package."""
        return Path(__file__).parent / "urdf" / "inspire_hand_right.urdf"

    @classmethod
    def left_urdf_path(cls) -> Path:
        """The maker's left-hand URDF (``left_model="urdf"``; its thumb differs, see the file)."""
        return Path(__file__).parent / "urdf" / "inspire_hand_left.urdf"

    def _command_index(self) -> list[int]:
        return [self.joint_names.index(n) for n in self.config.command_order]

    def to_unitree_command(self, joints: torch.Tensor) -> torch.Tensor:
        """Joints → Unitree's normalised command: 6 values in [0, 1], 1 = open.

        Each value is ``(upper − q) / (upper − lower)`` of its joint, so the URDF's lower limit
        (0 rad, fingers straight, thumb not rotated) maps to 1.

        Args:
            joints: ``(..., 6)`` in this embodiment's joint order.

        Returns:
            ``(..., 6)`` in ``config.command_order``.
        """
        joints = self.check_joints(joints, strict=self.config.strict_limits)
        limits = self.joint_limits.to(joints)
        opened = (limits[:, 1] - joints) / (limits[:, 1] - limits[:, 0])
        return opened[..., self._command_index()].clamp(0.0, 1.0)

    def from_unitree_command(self, command: torch.Tensor) -> torch.Tensor:
        """Unitree's normalised command → joints (inverse of :meth:`to_unitree_command`).

        Args:
            command: ``(..., 6)`` values in [0, 1], 1 = open, in ``config.command_order``.

        Raises:
            ValueError: Wrong shape, NaN, or values outside [0, 1].
        """
        if not isinstance(command, torch.Tensor) or command.dim() == 0:
            raise ValueError(f"{self.name}: expected a command tensor of shape (..., 6)")
        if command.shape[-1] != 6 or not command.is_floating_point():
            raise ValueError(
                f"{self.name}: expected a floating command of shape (..., 6) in the order "
                f"{list(self.config.command_order)}, got {tuple(command.shape)} {command.dtype}"
            )
        if not bool(torch.isfinite(command).all()):
            raise ValueError(f"{self.name}: command contains NaN or infinity")
        if bool(((command < 0) | (command > 1)).any()):
            raise ValueError(f"{self.name}: command values must lie in [0, 1] (1 = open)")
        limits = self.joint_limits.to(command)
        inverse = torch.empty(6, dtype=torch.long)
        inverse[torch.tensor(self._command_index())] = torch.arange(6)
        opened = command[..., inverse]
        return limits[:, 1] - opened * (limits[:, 1] - limits[:, 0])
