"""A minimal 5-DoF hand with closed-form kinematics, written as a third party would.

Geometry, in the contract's wrist frame of a right hand (origin at the wrist, z towards the
middle-finger MCP, y from the little MCP towards the index MCP, x = y × z out of the palm):
each finger's base joint sits at a fixed point and the finger is one rigid link that starts
along its rest direction and flexes towards +x (into the palm) by the joint angle. A left hand
is the mirror image: x is negated. Because the index, middle and little bases lie on the
frame's construction points, the frame built from this hand's keypoints is the frame its
fingertips are expressed in; no extra calibration transform is needed.
"""

from __future__ import annotations

import math

import torch

from metis_core import Embodiment, IKResult
from metis_paddle_hand.paddle_hand.configuration_paddle_hand import PaddleHandConfig

# Base joint of each finger (thumb, index, middle, ring, little) in the right-hand wrist frame.
_BASES = (
    (0.0, 0.030, 0.035),
    (0.0, 0.024, 0.088),
    (0.0, 0.000, 0.090),
    (0.0, -0.018, 0.086),
    (0.0, -0.034, 0.078),
)
# Direction of each straight finger (unit length, in the y-z plane): the thumb points sideways.
_REST_DIRECTIONS = (
    (0.0, math.sin(math.radians(50)), math.cos(math.radians(50))),
    (0.0, 0.05, 1.0),
    (0.0, 0.0, 1.0),
    (0.0, -0.05, 1.0),
    (0.0, -0.12, 1.0),
)


class PaddleHand(Embodiment):
    """Five one-link fingers, one flexion joint each.

    Joints: ``thumb_flex, index_flex, middle_flex, ring_flex, little_flex`` in radians,
    0 = straight. Fingertip of finger f at angle q: ``base_f + L_f (sin q · x̂ + cos q · d_f)``
    with ``d_f`` the rest direction, for the right hand; the left hand's fingertips are the
    right hand's with x negated.
    """

    name = "paddle_hand"
    config_class = PaddleHandConfig

    def __init__(self, config: PaddleHandConfig) -> None:
        self.config = config
        directions = torch.tensor(_REST_DIRECTIONS, dtype=torch.float64)
        self._rest = directions / directions.norm(dim=-1, keepdim=True)
        self._bases = torch.tensor(_BASES, dtype=torch.float64)
        self._lengths = torch.tensor(config.finger_lengths, dtype=torch.float64)
        self._flex_sign = 1.0 if config.side == "right" else -1.0
        self._limits = torch.stack(
            [
                torch.zeros(5, dtype=torch.float64),
                torch.tensor(config.max_flexion, dtype=torch.float64),
            ],
            dim=-1,
        )

    @property
    def joint_names(self) -> tuple[str, ...]:
        return ("thumb_flex", "index_flex", "middle_flex", "ring_flex", "little_flex")

    @property
    def joint_limits(self) -> torch.Tensor:
        return self._limits.clone()

    def forward_kinematics(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., 5)`` flexion angles → ``(..., 5, 3)`` fingertips in the wrist frame."""
        joints = self.check_joints(joints, strict=False)
        dtype = joints.dtype
        flex_axis = torch.tensor([1.0, 0.0, 0.0], dtype=dtype)  # right-hand model, mirrored below
        angle = joints.unsqueeze(-1)
        direction = torch.sin(angle) * flex_axis + torch.cos(angle) * self._rest.to(dtype)
        tips = self._bases.to(dtype) + self._lengths.to(dtype).unsqueeze(-1) * direction
        return tips * torch.tensor(
            [self._flex_sign, 1.0, 1.0], dtype=dtype
        )  # left = mirrored right

    def inverse_kinematics(
        self, fingertips: torch.Tensor, *, initial_joints: torch.Tensor | None = None
    ) -> IKResult:
        """Closed form: each finger's angle is the direction of its target in its flexion plane.

        ``initial_joints`` is accepted for interface compatibility; a closed-form solution
        needs no warm start.
        """
        if not isinstance(fingertips, torch.Tensor) or fingertips.shape[-2:] != (5, 3):
            shape = (
                tuple(fingertips.shape)
                if isinstance(fingertips, torch.Tensor)
                else type(fingertips).__name__
            )
            raise ValueError(f"paddle_hand: expected fingertips of shape (..., 5, 3), got {shape}")
        if not bool(torch.isfinite(fingertips).all()):
            raise ValueError("paddle_hand: fingertips contain NaN or infinity")
        dtype = fingertips.dtype if fingertips.is_floating_point() else torch.float64
        target = fingertips.to(dtype) * torch.tensor([self._flex_sign, 1.0, 1.0], dtype=dtype)
        relative = target - self._bases.to(dtype)
        along_rest = (relative * self._rest.to(dtype)).sum(-1)
        towards_palm = relative[..., 0]
        angle = torch.atan2(towards_palm, along_rest)
        limits = self._limits.to(dtype)
        joints = torch.minimum(torch.maximum(angle, limits[:, 0]), limits[:, 1])
        error = (self.forward_kinematics(joints) - fingertips.to(dtype)).norm(dim=-1)
        return IKResult(joints=joints, fingertip_error=error, iterations=1)
