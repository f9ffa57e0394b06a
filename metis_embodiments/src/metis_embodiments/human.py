"""Human hands described by keypoints (MANO/MediaPipe 21, Manus 25) as embodiments.

A keypoint hand's "joints" are its ``K`` keypoint positions flattened to ``J = 3K`` values
(metres, in whatever frame the source gives them, e.g. the ego camera). Forward kinematics
builds the contract wrist frame from the wrist and index/middle/little MCP keypoints
(:func:`metis_core.frames.wrist_frame_from_keypoints`) and expresses the five fingertip
keypoints in it. Inverse kinematics returns keypoints, in the wrist frame, of a hand whose
fingertips are the targets: the palm keypoints come from the warm start (or a template hand),
and each finger's chain is rotated about its base and stretched so that its tip lands on the
target, which keeps the finger's shape and makes FK(IK(tips)) exact.

Shape legend: ``K`` keypoints, ``J = 3K``, ``F`` = 5 fingertips.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from metis_core.config import ComponentConfig
from metis_core.frames import to_wrist_frame, wrist_frame_from_keypoints
from metis_core.interfaces import Embodiment, IKResult
from metis_core.rotations import matrix_to_rot6d
from metis_embodiments.urdf_hand import check_fingertips

__all__ = [
    "MANO_TEMPLATE",
    "KeypointHand",
    "KeypointHandConfig",
    "curl_fingers",
]

_MIRROR = (-1.0, 1.0, 1.0)


def _mano_template() -> torch.Tensor:
    """``(21, 3)`` an open right hand in its own contract wrist frame (metres).

    Estimates for an average adult hand (hand length ≈ 185 mm): palm (wrist → middle MCP) 90 mm;
    phalanx lengths (proximal, middle, distal + pad, mm) index 40/23/19, middle 45/27/20,
    ring 42/26/20, little 33/18/17, thumb metacarpal 46, proximal 32, distal + pad 27 — rounded
    from published hand-segment proportions (Buryanov & Kotiuk 2010, Int. J. Morphol. 28(3),
    "Proportions of hand segments"). The frame is the contract's: z from the wrist to the
    middle MCP, y towards the index side, x out of the palm.
    """
    mcp = {
        "index": (0.0, 0.024, 0.086),
        "middle": (0.0, 0.0, 0.090),
        "ring": (0.0, -0.019, 0.084),
        "little": (0.0, -0.036, 0.075),
    }
    phalanges = {
        "index": (0.040, 0.023, 0.019),
        "middle": (0.045, 0.027, 0.020),
        "ring": (0.042, 0.026, 0.020),
        "little": (0.033, 0.018, 0.017),
    }
    # Fingers fan out slightly (radians about x, positive towards the index side).
    spread = {"index": 0.08, "middle": 0.0, "ring": -0.08, "little": -0.16}
    points = [torch.zeros(3, dtype=torch.float64)]
    # Thumb: CMC near the wrist on the index side, pointing about 40° away from the fingers and
    # slightly palmar, as in a relaxed open hand.
    cmc = torch.tensor([0.010, 0.020, 0.028], dtype=torch.float64)
    first = torch.tensor([0.25, 0.62, 0.74], dtype=torch.float64)
    second = torch.tensor([0.30, 0.45, 0.84], dtype=torch.float64)
    first, second = first / first.norm(), second / second.norm()
    thumb_mcp = cmc + 0.046 * first
    thumb_ip = thumb_mcp + 0.032 * second
    points += [cmc, thumb_mcp, thumb_ip, thumb_ip + 0.027 * second]
    for finger in ("index", "middle", "ring", "little"):
        base = torch.tensor(mcp[finger], dtype=torch.float64)
        angle = spread[finger]
        direction = torch.tensor([0.0, math.sin(angle), math.cos(angle)], dtype=torch.float64)
        points.append(base)
        for length in phalanges[finger]:
            points.append(points[-1] + length * direction)
    return torch.stack(points)


#: ``(21, 3)`` open right hand in MANO/MediaPipe keypoint order, in its contract wrist frame.
MANO_TEMPLATE = _mano_template()

#: MANO/MediaPipe finger chains (keypoint indices from the base to the tip), thumb to little.
MANO_FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


def _rodrigues(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` unit axes and ``(...)`` angles → ``(..., 3, 3)`` rotations."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape, 3)
    eye = torch.eye(3, dtype=axis.dtype).expand_as(skew)
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return eye + s * skew + (1 - c) * skew @ skew


def curl_fingers(flexion: torch.Tensor, template: torch.Tensor = MANO_TEMPLATE) -> torch.Tensor:
    """Pose the MANO template hand by flexing each finger joint (a simple articulated model).

    Each joint of a finger (MCP, PIP, DIP; thumb CMC, MCP, IP) rotates the rest of that finger
    towards the palm: about the wrist frame's y axis for the four fingers (+x is the palm side
    of a right hand) and, for the thumb, about the oblique axis halfway between
    ``thumb_direction × x`` (palmar abduction) and the palm normal x (swinging across the palm),
    which together approximate opposition.

    Args:
        flexion: ``(..., 5, 3)`` joint angles in radians, thumb to little, base joint first.
        template: ``(21, 3)`` open right hand in its wrist frame.

    Returns:
        ``(..., 21, 3)`` right-hand keypoints in the template's wrist frame.
    """
    if flexion.shape[-2:] != (5, 3):
        raise ValueError(f"curl_fingers: expected flexion of shape (..., 5, 3), got {tuple(flexion.shape)}")  # fmt: skip
    flexion = flexion.to(template.dtype)
    batch = flexion.shape[:-2]
    points = template.expand(*batch, -1, -1).clone()
    palm_normal = torch.tensor([1.0, 0.0, 0.0], dtype=template.dtype)
    for finger, chain in enumerate(MANO_FINGERS):
        if finger == 0:
            direction = template[chain[1]] - template[chain[0]]
            axis = torch.linalg.cross(direction, palm_normal)
            axis = axis / axis.norm() + palm_normal
            axis = axis / axis.norm()
        else:
            axis = torch.tensor([0.0, 1.0, 0.0], dtype=template.dtype)
        for joint in range(3):
            rotation = _rodrigues(axis.expand(*batch, 3), flexion[..., finger, joint])
            pivot = points[..., chain[joint], :]
            moved = list(chain[joint + 1 :])
            points[..., moved, :] = (points[..., moved, :] - pivot[..., None, :]) @ rotation.transpose(-1, -2) + pivot[..., None, :]  # fmt: skip
    return points


@dataclass(frozen=True, kw_only=True)
class KeypointHandConfig(ComponentConfig):
    """Config of a keypoint hand.

    Args:
        side: ``"right"`` or ``"left"``.
        coordinate_limit_m: Keypoint coordinates must lie in ``[-limit, limit]`` metres; a
            sanity bound that catches millimetre or pixel units.
        strict_limits: Reject keypoints outside that bound in forward kinematics.
    """

    side: str = "right"
    coordinate_limit_m: float = 5.0
    strict_limits: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        if not self.coordinate_limit_m > 0:
            raise ValueError(f"coordinate_limit_m must be > 0, got {self.coordinate_limit_m}")


class KeypointHand(Embodiment, abc.ABC):
    """A human hand given as ``K`` 3D keypoints.

    Subclasses set ``name``, ``config_class``, :attr:`keypoint_names`, :attr:`fingers` (chains
    of keypoint indices from the finger's base to its tip, thumb to little; the base must not
    be a moving keypoint of another chain), :attr:`frame_keypoints`, :attr:`bones` and
    implement :meth:`template` (an open right hand in its wrist frame).
    """

    is_human: ClassVar[bool] = True
    keypoint_names: ClassVar[tuple[str, ...]]
    #: Keypoint chains per finger, thumb to little, base (kept fixed by IK) first, tip last.
    fingers: ClassVar[tuple[tuple[int, ...], ...]]
    #: Indices of the wrist, index MCP, middle MCP and little MCP keypoints.
    frame_keypoints: ClassVar[tuple[int, int, int, int]]
    #: Pairs of keypoint indices joined by a bone (for drawing).
    bones: ClassVar[tuple[tuple[int, int], ...]]

    def __init__(self, config: KeypointHandConfig) -> None:
        self.config = config

    @classmethod
    @abc.abstractmethod
    def template(cls) -> torch.Tensor:
        """``(K, 3)`` an open right hand in its own contract wrist frame (metres)."""

    @property
    def num_keypoints(self) -> int:
        """``K``."""
        return len(self.keypoint_names)

    @property
    def fingertip_keypoints(self) -> tuple[int, ...]:
        """Indices of the five fingertip keypoints, thumb to little."""
        return tuple(chain[-1] for chain in self.fingers)

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        """Bones to draw, as pairs of keypoint indices."""
        return self.bones

    @property
    def joint_names(self) -> tuple[str, ...]:
        """``keypoint_x, keypoint_y, keypoint_z`` for each keypoint."""
        return tuple(f"{k}_{axis}" for k in self.keypoint_names for axis in "xyz")

    @property
    def joint_limits(self) -> torch.Tensor:
        """``(3K, 2)`` the coordinate sanity bound, in metres."""
        limit = self.config.coordinate_limit_m
        return torch.tensor([[-limit, limit]] * (3 * self.num_keypoints), dtype=torch.float64)

    def side_template(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``(K, 3)`` the open template hand of this side, in its wrist frame."""
        template = self.template().to(dtype)
        return template * torch.tensor(_MIRROR, dtype=dtype) if self.side == "left" else template

    def keypoints(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., 3K)`` joints → ``(..., K, 3)`` keypoints (validated)."""
        joints = self.check_joints(joints, strict=self.config.strict_limits)
        return joints.reshape(*joints.shape[:-1], self.num_keypoints, 3)

    def wrist_pose(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The contract wrist frame in the keypoints' frame.

        Returns:
            ``(rotation (..., 3, 3), origin (..., 3))``, axes as columns.

        Raises:
            ContractError: For degenerate keypoints (coincident or collinear palm points).
        """
        points = self.keypoints(joints)
        wrist, index, middle, little = (points[..., i, :] for i in self.frame_keypoints)
        return wrist_frame_from_keypoints(wrist, index, middle, little)

    def keypoints_in_wrist(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., 3K)`` → ``(..., K, 3)`` all keypoints in the contract wrist frame."""
        rotation, origin = self.wrist_pose(joints)
        return to_wrist_frame(self.keypoints(joints), origin, rotation)

    def contract_pose(
        self, joints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One hand's part of the contract from keypoints given in the ego camera frame.

        Args:
            joints: ``(..., 3K)`` keypoints in the camera frame (metres).

        Returns:
            ``(wrist_position (..., 3), wrist_rotation_6d (..., 6), fingertips (..., 5, 3))``:
            the first two in the camera frame, the fingertips in the wrist frame.
        """
        rotation, origin = self.wrist_pose(joints)
        return origin, matrix_to_rot6d(rotation), self.forward_kinematics(joints)

    def forward_kinematics(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., 3K)`` keypoints → ``(..., 5, 3)`` fingertips in the contract wrist frame."""
        return self.keypoints_in_wrist(joints)[..., list(self.fingertip_keypoints), :]

    def mirror_joints(self, joints: torch.Tensor) -> torch.Tensor:
        """Reflect the keypoints through the plane x = 0 of their frame (the mirror-image hand)."""
        points = joints.reshape(*joints.shape[:-1], -1, 3)
        return (points * torch.tensor(_MIRROR, dtype=joints.dtype)).reshape(joints.shape)

    def inverse_kinematics(
        self, fingertips: torch.Tensor, *, initial_joints: torch.Tensor | None = None
    ) -> IKResult:
        """Keypoints (in the wrist frame) of a hand whose fingertips are ``fingertips``.

        The palm comes from ``initial_joints`` (re-expressed in its own wrist frame) or from the
        template; each finger chain is rotated about its base keypoint and scaled along itself
        so that its tip reaches the target.

        Args:
            fingertips: ``(..., 5, 3)`` in the contract wrist frame.
            initial_joints: ``(..., 3K)`` or ``(3K,)`` keypoints of a previous frame.

        Returns:
            :class:`IKResult` with ``joints (..., 3K)`` (keypoints in the wrist frame) and
            ``fingertip_error (..., 5)``.
        """
        fingertips = check_fingertips(self.name, fingertips)
        batch = fingertips.shape[:-2]
        dtype = fingertips.dtype
        if initial_joints is None:
            start = self.side_template(dtype).expand(*batch, -1, -1)
        else:
            initial_joints = self.check_joints(initial_joints, strict=False).to(dtype)
            if initial_joints.dim() > 1 and initial_joints.shape[:-1] != batch:
                raise ValueError(
                    f"{self.name}: initial_joints must have shape ({self.num_joints},) or "
                    f"{(*batch, self.num_joints)}, got {tuple(initial_joints.shape)}"
                )
            start = self.keypoints_in_wrist(initial_joints).expand(*batch, -1, -1)
        points = start.clone()
        for finger, chain in enumerate(self.fingers):
            base = start[..., chain[0], :]
            old = start[..., chain[-1], :] - base
            new = fingertips[..., finger, :] - base
            old_norm = old.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            new_norm = new.norm(dim=-1, keepdim=True)
            a, b = old / old_norm, new / new_norm.clamp_min(1e-12)
            axis = torch.linalg.cross(a, b, dim=-1)
            sin = axis.norm(dim=-1)
            cos = (a * b).sum(-1)
            # Antiparallel (rare): rotate about any axis orthogonal to a; aligned: identity.
            fallback = torch.linalg.cross(a, torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand_as(a), dim=-1)  # fmt: skip
            fallback = torch.where(fallback.norm(dim=-1, keepdim=True) < 1e-6, torch.linalg.cross(a, torch.tensor([0.0, 1.0, 0.0], dtype=dtype).expand_as(a), dim=-1), fallback)  # fmt: skip
            axis = torch.where((sin < 1e-9)[..., None], fallback, axis)
            axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            rotation = _rodrigues(axis, torch.atan2(sin, cos))
            scale = (new_norm / old_norm)[..., None]
            moved = list(chain[1:])
            offsets = start[..., moved, :] - base[..., None, :]
            points[..., moved, :] = base[..., None, :] + scale * (offsets @ rotation.transpose(-1, -2))  # fmt: skip
            # Land the tip exactly (the rotation is exact up to rounding).
            points[..., chain[-1], :] = fingertips[..., finger, :]
        joints = points.reshape(*batch, self.num_joints)
        with torch.no_grad():
            error = (self.forward_kinematics(joints.detach()) - fingertips.detach()).norm(dim=-1)
        return IKResult(joints=joints, fingertip_error=error, iterations=0)

    def hand_length(self, joints: torch.Tensor) -> torch.Tensor:
        """``(...)`` length of the middle finger's chain from the wrist to the tip (metres).

        The sum of the wrist → middle MCP distance and the middle finger's bone lengths, so it
        does not change as the finger flexes; used to scale human hands onto robot hands.
        """
        points = self.keypoints(joints)
        chain = (self.frame_keypoints[0], *self.fingers[2])
        bones = points[..., list(chain[1:]), :] - points[..., list(chain[:-1]), :]
        return bones.norm(dim=-1).sum(-1)

    def sample_joints(
        self, count: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Random realistic hands: the template, each finger joint flexed by −10° … 80°
        (thumb 0° … 50°), scaled by 0.85 … 1.15, at a random orientation within 0.5 m of the origin.

        Returns:
            ``(count, 3K)`` keypoints in metres.
        """
        flexion = torch.rand(count, 5, 3, generator=generator, dtype=torch.float64)
        flexion[:, 1:] = flexion[:, 1:] * math.radians(90) - math.radians(10)
        flexion[:, 0] = flexion[:, 0] * math.radians(50)
        hand = curl_fingers(flexion, self.template()) if self.num_keypoints == 21 else None
        if hand is None:
            hand = self._curl_own_template(flexion)
        scale = 0.85 + 0.3 * torch.rand(count, 1, 1, generator=generator, dtype=torch.float64)
        axis = torch.randn(count, 3, generator=generator, dtype=torch.float64)
        axis = axis / axis.norm(dim=-1, keepdim=True)
        angle = torch.rand(count, generator=generator, dtype=torch.float64) * math.pi
        rotation = _rodrigues(axis, angle)
        offset = torch.rand(count, 1, 3, generator=generator, dtype=torch.float64) - 0.5
        points = (scale * hand) @ rotation.transpose(-1, -2) + offset
        if self.side == "left":
            points = points * torch.tensor(_MIRROR, dtype=torch.float64)
        return points.reshape(count, self.num_joints)

    def _curl_own_template(self, flexion: torch.Tensor) -> torch.Tensor:
        """Flex this hand's own template finger by finger (like :func:`curl_fingers`)."""
        template = self.template().to(torch.float64)
        points = template.expand(flexion.shape[0], -1, -1).clone()
        palm_normal = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
        for finger, chain in enumerate(self.fingers):
            if finger == 0:
                axis = torch.linalg.cross(template[chain[1]] - template[chain[0]], palm_normal)
                axis = axis / axis.norm() + palm_normal
                axis = axis / axis.norm()
            else:
                axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
            for joint in range(min(3, len(chain) - 1)):
                rotation = _rodrigues(axis.expand(flexion.shape[0], 3), flexion[:, finger, joint])
                pivot = points[:, chain[joint], :]
                moved = list(chain[joint + 1 :])
                points[:, moved, :] = (points[:, moved, :] - pivot[:, None, :]) @ rotation.transpose(-1, -2) + pivot[:, None, :]  # fmt: skip
        return points
