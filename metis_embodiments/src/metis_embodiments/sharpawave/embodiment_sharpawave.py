"""SharpaWave: a 22-DoF, human-sized dexterous hand (registry name ``sharpawave``).

Kinematics: ``urdf/sharpawave_right.urdf``, built from the maker's public specifications. What is
published and what is estimated is stated in that file; in short:

* published: 22 DoF, the joints and their order (the Sharpa Wave SDK's ``JOINT_NAMES``, used as
  the joint order here), the claim of human hand size and structure, ±20° MCP abduction and
  0-50° thumb CMC flexion in the SDK example;
* estimated: every length (METIS's average adult hand template), the other joint limits (a
  human-like range of motion) and the joint axis directions (human hand anatomy).

Calibration: the base link ``palm`` has its origin at the wrist and is laid out in the contract
wrist frame's directions; the calibration derived from the wrist and the index/middle/little
MCP links at the zero pose is the identity up to the MCP layout (see :attr:`calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metis_embodiments.kinematics import KeypointLinks
from metis_embodiments.urdf_hand import URDFHand, URDFHandConfig

__all__ = ["SHARPAWAVE_JOINT_ORDER", "SharpaWaveConfig", "SharpaWaveHand"]

#: Joint order of the Sharpa Wave SDK (indices 0..21).
SHARPAWAVE_JOINT_ORDER = (
    "thumb_cmc_flexion",
    "thumb_cmc_abduction",
    "thumb_mcp_flexion",
    "thumb_mcp_abduction",
    "thumb_ip_flexion",
    "index_mcp_flexion",
    "index_mcp_abduction",
    "index_pip_flexion",
    "index_dip_flexion",
    "middle_mcp_flexion",
    "middle_mcp_abduction",
    "middle_pip_flexion",
    "middle_dip_flexion",
    "ring_mcp_flexion",
    "ring_mcp_abduction",
    "ring_pip_flexion",
    "ring_dip_flexion",
    "little_cmc_flexion",
    "little_mcp_flexion",
    "little_mcp_abduction",
    "little_pip_flexion",
    "little_dip_flexion",
)


@dataclass(frozen=True, kw_only=True)
class SharpaWaveConfig(URDFHandConfig):
    """Config of the SharpaWave hand.

    Args:
        side: ``"right"`` or ``"left"``.
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
        left_model: Only ``"mirror"``: no left-hand model is published.
        sanity_checks: See :class:`~metis_embodiments.urdf_hand.URDFHandConfig`.
    """


class SharpaWaveHand(URDFHand):
    """SharpaWave: 22 actuated DoF, left and right."""

    name = "sharpawave"
    config_class = SharpaWaveConfig
    fingertip_links = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "little_tip")
    keypoint_links = KeypointLinks(
        wrist="palm",
        index_mcp="index_mcp_link",
        middle_mcp="middle_mcp_link",
        little_mcp="little_mcp_link",
    )
    joint_order = SHARPAWAVE_JOINT_ORDER

    @classmethod
    def urdf_path(cls) -> Path:
        """The right-hand URDF shipped in this package."""
        return Path(__file__).parent / "urdf" / "sharpawave_right.urdf"
