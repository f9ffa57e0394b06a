"""Retargeting human hand keypoints onto any robot embodiment through fingertip IK.

The human keypoints give the contract fingertips in the human wrist frame (forward kinematics
of the keypoint hand); those are scaled by the ratio of hand lengths (wrist to middle fingertip,
robot over human, so a small human hand still spans a large robot hand) and handed
to the robot's inverse kinematics. Because both hands use the same keypoint-defined wrist frame
(each robot states its calibration), no further alignment is needed. A robot without a finger
(LEAP Hand: no little finger) ignores that human fingertip: its target is reported as zeros and
its error as 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from metis_core.interfaces import Embodiment

__all__ = ["RetargetResult", "retarget"]


@dataclass
class RetargetResult:
    """Result of :func:`retarget`.

    Args:
        joints: ``(..., J)`` robot joints within the limits.
        fingertip_error: ``(..., 5)`` metres between the scaled human fingertips and the robot's
            (0 for fingertips the robot does not have).
        target_fingertips: ``(..., 5, 3)`` the scaled human fingertips in the wrist frame
            (zeros for fingertips the robot does not have).
        scale: ``(...)`` the scale applied to the human fingertips.
        iterations: Iterations of the robot's IK solver.
    """

    joints: torch.Tensor
    fingertip_error: torch.Tensor
    target_fingertips: torch.Tensor
    scale: torch.Tensor
    iterations: int


def retarget(
    human: Embodiment,
    keypoints: torch.Tensor,
    robot: Embodiment,
    *,
    scale: float | None = None,
    initial_joints: torch.Tensor | None = None,
) -> RetargetResult:
    """Map human keypoints to robot joints whose fingertips match the human's.

    Args:
        human: A keypoint hand (``human.is_human``), e.g. ``human_mano`` or ``human_manus``.
        keypoints: ``(..., K, 3)`` or ``(..., 3K)`` human keypoints (any frame, metres).
        robot: Any robot embodiment of the same side.
        scale: Factor on the human fingertips. Default, per frame: the robot's hand length
            (``hand_length_m``, wrist → middle fingertip when open) over the human's (wrist →
            middle MCP plus the middle finger's bones, which does not change with flexion);
            1 for robots that do not state a hand length.
        initial_joints: ``(..., J)`` or ``(J,)`` robot warm start (e.g. the previous frame's).

    Returns:
        :class:`RetargetResult`.

    Raises:
        ValueError: If ``human`` is not a keypoint hand, ``robot`` is one, the sides differ,
            or the keypoints have the wrong shape.
    """
    if not getattr(human, "is_human", False):
        raise ValueError(f"retarget: the source must be a human keypoint hand, got {human.name!r}")
    if getattr(robot, "is_human", False):
        raise ValueError(f"retarget: the target must be a robot hand, got {robot.name!r}")
    if human.side != robot.side:
        raise ValueError(f"retarget: a {human.side} human hand onto a {robot.side} robot hand")
    if not isinstance(keypoints, torch.Tensor):
        raise ValueError(f"retarget: expected keypoints as a torch.Tensor, got {type(keypoints).__name__}")  # fmt: skip
    if (
        keypoints.dim() >= 2
        and keypoints.shape[-1] == 3
        and keypoints.shape[-2] * 3 == human.num_joints
    ):
        keypoints = keypoints.reshape(*keypoints.shape[:-2], human.num_joints)
    tips = human.forward_kinematics(keypoints)
    if scale is not None:
        if not scale > 0:
            raise ValueError(f"retarget: scale must be > 0, got {scale}")
        factor = torch.full(tips.shape[:-2], float(scale), dtype=tips.dtype)
    elif hasattr(robot, "hand_length_m") and hasattr(human, "hand_length"):
        factor = robot.hand_length_m / human.hand_length(keypoints)
    else:
        factor = torch.ones(tips.shape[:-2], dtype=tips.dtype)
    target = tips * factor[..., None, None]
    present = robot.fingertip_mask.to(target.device)
    if not bool(present.all()):
        target = target * present[:, None].to(target.dtype)
    result = robot.inverse_kinematics(target, initial_joints=initial_joints)
    return RetargetResult(
        joints=result.joints,
        fingertip_error=result.fingertip_error,
        target_fingertips=target,
        scale=factor,
        iterations=result.iterations,
    )
