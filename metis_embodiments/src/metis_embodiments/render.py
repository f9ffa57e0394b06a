"""Draw a hand's links and fingertips to a PNG (matplotlib, off-screen)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from metis_core.interfaces import Embodiment

__all__ = ["hand_skeleton", "render_hand"]


def hand_skeleton(
    hand: Embodiment, joints: torch.Tensor
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Points and segments to draw, in the contract wrist frame.

    Args:
        hand: A URDF hand (links from :meth:`link_poses`) or a keypoint hand (its keypoints).
        joints: ``(J,)``.

    Returns:
        ``(points (P, 3), segments)`` with segments as index pairs into ``points``.
    """
    if hasattr(hand, "link_poses") and hasattr(hand, "kinematics"):
        points = hand.link_poses(joints)[..., :3, 3].reshape(-1, 3)
        parents = hand.kinematics.link_parents
        return points, [(p, c) for c, p in enumerate(parents) if p >= 0]
    if hasattr(hand, "keypoints_in_wrist"):
        points = hand.keypoints_in_wrist(joints).reshape(-1, 3)
        return points, list(hand.skeleton)
    raise ValueError(f"{hand.name}: cannot draw a hand without link_poses or keypoints")


def render_hand(
    hand: Embodiment,
    joints: torch.Tensor,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write a PNG with the hand's links (grey), fingertips (coloured) and wrist axes.

    Args:
        hand: The embodiment.
        joints: ``(J,)`` joint values (checked against the limits).
        path: Output ``.png`` file; parent directories are created.
        title: Figure title (default: name, side and joint values).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    joints = hand.check_joints(joints.to(torch.float64), strict=True)
    if joints.dim() != 1:
        raise ValueError(f"{hand.name}: render one configuration of shape ({hand.num_joints},)")
    with torch.no_grad():
        points, segments = hand_skeleton(hand, joints)
        tips = hand.forward_kinematics(joints)
    points, tips = points.numpy(), tips.numpy()
    figure = plt.figure(figsize=(6, 6))
    axes = figure.add_subplot(projection="3d")
    for a, b in segments:
        axes.plot(*zip(points[a], points[b], strict=True), color="0.4", linewidth=2)
    axes.scatter(*points.T, color="0.2", s=8)
    colours = ["tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple"]
    for tip, colour, label in zip(tips, colours, hand.fingertip_names, strict=True):
        axes.scatter(*tip, color=colour, s=40, label=label)
    for column, colour in enumerate(("r", "g", "b")):
        axis = [0.0, 0.0, 0.0]
        axis[column] = 0.04
        axes.plot([0, axis[0]], [0, axis[1]], [0, axis[2]], color=colour, linewidth=1)
    every = points.reshape(-1, 3).tolist() + tips.tolist()
    low = min(min(p) for p in every)
    high = max(max(p) for p in every)
    axes.set(xlim=(low, high), ylim=(low, high), zlim=(low, high))
    axes.set_xlabel("x (m)")
    axes.set_ylabel("y (m)")
    axes.set_zlabel("z (m)")
    axes.legend(loc="upper left", fontsize=8)
    values = ", ".join(f"{v:.2f}" for v in joints.tolist()[:8])
    more = ", ..." if hand.num_joints > 8 else ""
    axes.set_title(title or f"{hand.name} ({hand.side}) q=[{values}{more}]", fontsize=9)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
