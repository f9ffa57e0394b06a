"""Human hand as the 25 keypoints of a Manus glove's raw skeleton (registry name ``human_manus``).

Order (Manus Core raw skeleton, hand chain first, then the fingers thumb to little, each from
its metacarpal base to the tip; the thumb has 4 nodes and the other fingers 5):

    0 wrist; thumb 1 CMC (metacarpal), 2 MCP (proximal), 3 IP (distal), 4 tip;
    index 5 metacarpal base, 6 MCP, 7 PIP, 8 DIP, 9 tip; middle 10-14; ring 15-19; little 20-24.

The contract wrist frame uses keypoints 0 (wrist), 6, 11 and 21 (the index, middle and little
MCPs). A recording that orders its nodes differently must be reordered by its dataset adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metis_embodiments.human import MANO_TEMPLATE, KeypointHand, KeypointHandConfig

__all__ = ["MANUS_KEYPOINT_NAMES", "MANUS_TEMPLATE", "HumanManusConfig", "HumanManusHand"]

MANUS_KEYPOINT_NAMES = (
    "wrist",
    "thumb_cmc",
    "thumb_mcp",
    "thumb_ip",
    "thumb_tip",
    *(
        f"{finger}_{joint}"
        for finger in ("index", "middle", "ring", "little")
        for joint in ("metacarpal", "mcp", "pip", "dip", "tip")
    ),
)

#: IK chains: the thumb from its CMC, the fingers from their MCP (the metacarpal bases and the
#: MCPs stay where they are, so the wrist frame does not move).
MANUS_FINGERS = ((1, 2, 3, 4), (6, 7, 8, 9), (11, 12, 13, 14), (16, 17, 18, 19), (21, 22, 23, 24))


def _manus_template() -> torch.Tensor:
    """``(25, 3)`` the MANO template with metacarpal bases added.

    The finger metacarpal bases (carpometacarpal joints) are placed at 30 % of the way from the
    wrist to each MCP — an estimate from typical metacarpal lengths (≈ 63-68 mm of the 85-90 mm
    wrist-to-MCP distance).
    """
    points = [MANO_TEMPLATE[0], *MANO_TEMPLATE[1:5]]
    for mano_chain in ((5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20)):
        points.append(0.3 * MANO_TEMPLATE[mano_chain[0]])
        points.extend(MANO_TEMPLATE[i] for i in mano_chain)
    return torch.stack(points)


MANUS_TEMPLATE = _manus_template()


@dataclass(frozen=True, kw_only=True)
class HumanManusConfig(KeypointHandConfig):
    """Config of the Manus-25 hand.

    Args:
        side: ``"right"`` or ``"left"``.
        coordinate_limit_m: Sanity bound on keypoint coordinates (metres).
        strict_limits: Reject keypoints outside that bound.
    """


class HumanManusHand(KeypointHand):
    """25 Manus keypoints → contract fingertips; IK back to keypoints."""

    name = "human_manus"
    config_class = HumanManusConfig
    keypoint_names = MANUS_KEYPOINT_NAMES
    fingers = MANUS_FINGERS
    frame_keypoints = (0, 6, 11, 21)
    bones = (
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        *((0, base) for base in (5, 10, 15, 20)),
        *((i, i + 1) for base in (5, 10, 15, 20) for i in range(base, base + 4)),
    )

    @classmethod
    def template(cls) -> torch.Tensor:
        """The open right hand used as the IK template (see :data:`MANUS_TEMPLATE`)."""
        return MANUS_TEMPLATE
