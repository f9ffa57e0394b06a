"""The contract's wrist frame, built the same way for both hands from hand keypoints.

* origin: the wrist joint;
* z: unit vector from the wrist to the middle-finger MCP joint;
* y: the direction from the little-finger MCP to the index-finger MCP, made orthogonal to z;
* x: ``y × z``, so that (x, y, z) is right-handed.

For a right hand, x then points out of the palm (for a left hand, out of the back of the hand).
The construction only uses keypoints, so human hands and robot hands (whose embodiments state
the fixed transform from their base link to this frame) agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metis_core.errors import ContractError

__all__ = [
    "from_wrist_frame",
    "to_wrist_frame",
    "wrist_frame_from_keypoints",
]


def _tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{what}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def wrist_frame_from_keypoints(
    wrist: torch.Tensor | np.ndarray,
    index_mcp: torch.Tensor | np.ndarray,
    middle_mcp: torch.Tensor | np.ndarray,
    little_mcp: torch.Tensor | np.ndarray,
    *,
    strict: bool = True,
    eps: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the contract wrist frame from four keypoints (batched, differentiable).

    Args:
        wrist: ``(..., 3)`` wrist joint position.
        index_mcp: ``(..., 3)`` index-finger MCP joint.
        middle_mcp: ``(..., 3)`` middle-finger MCP joint.
        little_mcp: ``(..., 3)`` little-finger MCP joint.
        strict: Raise on degenerate keypoints (coincident or collinear). If False, degenerate
            entries get the identity rotation, for batches where missing hands are zeros.
        eps: Length below which a direction counts as degenerate (metres).

    Returns:
        ``(rotation, origin)``: ``rotation (..., 3, 3)`` has the frame's x, y, z axes as columns,
        expressed in the keypoints' frame; ``origin (..., 3)`` is the wrist.

    Raises:
        ContractError: If ``strict`` and a frame cannot be built.
    """
    tensors = [_tensor(x, n) for x, n in ((wrist, "wrist"), (index_mcp, "index_mcp"), (middle_mcp, "middle_mcp"), (little_mcp, "little_mcp"))]  # fmt: skip
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or tensors[0].shape[-1:] != (3,):
        raise ContractError(
            "wrist_frame_from_keypoints: the four keypoints must share one shape (..., 3), got "
            + ", ".join(str(tuple(t.shape)) for t in tensors)
        )
    wrist_t, index_t, middle_t, little_t = tensors
    z = middle_t - wrist_t
    z_norm = z.norm(dim=-1, keepdim=True)
    across = index_t - little_t
    z_unit = z / z_norm.clamp_min(eps)
    y = across - (across * z_unit).sum(-1, keepdim=True) * z_unit
    y_norm = y.norm(dim=-1, keepdim=True)
    degenerate = (z_norm < eps) | (y_norm < eps)
    if strict and bool(degenerate.any()):
        where = tuple(degenerate.squeeze(-1).nonzero()[0].tolist()) if degenerate.dim() > 1 else ()
        raise ContractError(
            f"wrist_frame_from_keypoints: degenerate keypoints at batch index {where}: the wrist "
            "and middle MCP coincide, or the index and little MCPs lie on the wrist→middle line"
        )
    y_unit = y / y_norm.clamp_min(eps)
    x_unit = torch.linalg.cross(y_unit, z_unit, dim=-1)
    rotation = torch.stack([x_unit, y_unit, z_unit], dim=-1)
    if not strict and bool(degenerate.any()):
        eye = torch.eye(3, dtype=rotation.dtype, device=rotation.device).expand_as(rotation)
        rotation = torch.where(degenerate.unsqueeze(-1), eye, rotation)
    return rotation, wrist_t


def to_wrist_frame(
    points: torch.Tensor | np.ndarray,
    wrist_position: torch.Tensor | np.ndarray,
    wrist_rotation: torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """Express points given in the parent (camera) frame in a wrist frame: ``Rᵀ (p − o)``.

    Args:
        points: ``(..., N, 3)``.
        wrist_position: ``(..., 3)`` origin of the wrist frame.
        wrist_rotation: ``(..., 3, 3)`` wrist axes as columns.

    Returns:
        ``(..., N, 3)``.
    """
    p, o, r = _tensor(points, "points"), _tensor(wrist_position, "wrist_position"), _tensor(wrist_rotation, "wrist_rotation")  # fmt: skip
    return torch.einsum("...ji,...nj->...ni", r, p - o[..., None, :])


def from_wrist_frame(
    points_in_wrist: torch.Tensor | np.ndarray,
    wrist_position: torch.Tensor | np.ndarray,
    wrist_rotation: torch.Tensor | np.ndarray,
) -> torch.Tensor:
    """Inverse of :func:`to_wrist_frame`: ``R p + o``.

    Args:
        points_in_wrist: ``(..., N, 3)``.
        wrist_position: ``(..., 3)``.
        wrist_rotation: ``(..., 3, 3)``.

    Returns:
        ``(..., N, 3)`` in the parent frame.
    """
    p, o, r = _tensor(points_in_wrist, "points_in_wrist"), _tensor(wrist_position, "wrist_position"), _tensor(wrist_rotation, "wrist_rotation")  # fmt: skip
    return torch.einsum("...ij,...nj->...ni", r, p) + o[..., None, :]
