"""Human hand as 21 keypoints in MANO/MediaPipe order (registry name ``human_mano``).

Order: 0 wrist; thumb 1 CMC, 2 MCP, 3 IP, 4 tip; index 5 MCP, 6 PIP, 7 DIP, 8 tip; middle 9-12;
ring 13-16; little 17-20 — the order of MediaPipe Hands and of the 21 joints usually regressed
from MANO (16 MANO joints plus 5 fingertip vertices, reordered), as used by HOI4D, ARCTIC,
DexYCB and OakInk. The contract wrist frame uses keypoints 0 (wrist), 5, 9 and 17.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from metis_embodiments.human import MANO_FINGERS, MANO_TEMPLATE, KeypointHand, KeypointHandConfig

__all__ = ["MANO_KEYPOINT_NAMES", "HumanManoConfig", "HumanManoHand"]

MANO_KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    "index_mcp",
    "index_pip",
    "index_dip",
    "index_tip",
    "middle_mcp",
    "middle_pip",
    "middle_dip",
    "middle_tip",
    "ring_mcp",
    "ring_pip",
    "ring_dip",
    "ring_tip",
    "little_mcp",
    "little_pip",
    "little_dip",
    "little_tip",
)


@dataclass(frozen=True, kw_only=True)
class HumanManoConfig(KeypointHandConfig):
    """Config of the MANO-21 hand.

    Args:
        side: ``"right"`` or ``"left"``.
        coordinate_limit_m: Sanity bound on keypoint coordinates (metres).
        strict_limits: Reject keypoints outside that bound.
    """


class HumanManoHand(KeypointHand):
    """21 MANO/MediaPipe keypoints → contract fingertips; IK back to keypoints."""

    name = "human_mano"
    config_class = HumanManoConfig
    keypoint_names = MANO_KEYPOINT_NAMES
    fingers = MANO_FINGERS
    frame_keypoints = (0, 5, 9, 17)
    bones = tuple((0, chain[0]) for chain in MANO_FINGERS) + tuple(
        (a, b) for chain in MANO_FINGERS for a, b in itertools.pairwise(chain)
    )

    @classmethod
    def template(cls) -> torch.Tensor:
        """The open right hand used as the IK template (see :data:`MANO_TEMPLATE`)."""
        return MANO_TEMPLATE
