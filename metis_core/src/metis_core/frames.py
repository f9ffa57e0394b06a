"""The contract's wrist frame, built the same way for both hands from hand keypoints.

* origin: the wrist joint;
* z: unit vector from the wrist to the middle-finger MCP joint;
* y: the direction from the little-finger MCP to the index-finger MCP, made orthogonal to z;
* x: ``y × z``, so that (x, y, z) is right-handed.

For a right hand, x then points out of the palm (for a left hand, out of the back of the hand).
:func:`to_paper_frame` and :func:`from_paper_frame` convert to and from the wrist frames of the
METIS paper's appendix (see :data:`PAPER_FROM_WRIST`).
The construction only uses keypoints, so human hands and robot hands (whose embodiments state
the fixed transform from their base link to this frame) agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metis_core.errors import ContractError
from metis_core.rotations import numpy_to_tensor

__all__ = [
    "PAPER_FROM_WRIST",
    "from_paper_frame",
    "from_wrist_frame",
    "to_paper_frame",
    "to_wrist_frame",
    "wrist_frame_from_keypoints",
]


def _tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return numpy_to_tensor(x, what)
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(
        f"{what}: expected a torch.Tensor or numpy.ndarray, got "
        f"{type(x).__module__}.{type(x).__qualname__}"
    )


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
        strict: Raise on degenerate keypoints (coincident, collinear, NaN or infinite). If
            False, degenerate entries get the identity rotation, for batches where missing hands
            are zeros (or NaN).
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
    finite = torch.stack([torch.isfinite(t).all(-1) for t in tensors]).all(0)[..., None]
    if strict and not bool(finite.all()):
        where = tuple((~finite).squeeze(-1).nonzero()[0].tolist()) if finite.dim() > 1 else ()
        raise ContractError(
            f"wrist_frame_from_keypoints: keypoints contain NaN or infinity at batch index {where}"
        )
    degenerate = ~(z_norm >= eps) | ~(y_norm >= eps) | ~finite  # NaN norms count as degenerate
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


#: The paper's appendix wrist axes in our wrist frame, per side. Each matrix R has the paper's
#: x, y and z axes as columns, so that ``p_ours = R @ p_paper``.
#:
#: * Ours, both sides (built from keypoints): z from the wrist to the middle MCP (towards the
#:   fingertips), y from the little towards the index MCP (towards the thumb side), x = y × z,
#:   which points out of the palm of a right hand and out of the back of a left hand.
#: * The paper's: left hand x towards the fingertips, right hand x along the forearm (from the
#:   hand towards the elbow); both: y from the palm to the back of the hand, z from the little
#:   finger to the thumb.
#:
#: Left: paper x = our z, paper y = our x (out of the back), paper z = our y. Right: paper
#: x = −z, paper y = −x (our x points out of the palm), paper z = y. Both are proper rotations.
PAPER_FROM_WRIST: dict[str, tuple[tuple[float, float, float], ...]] = {
    "left": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "right": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (-1.0, 0.0, 0.0)),
}


def _paper_rotation(side: str, like: torch.Tensor) -> torch.Tensor:
    if side not in PAPER_FROM_WRIST:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return torch.tensor(PAPER_FROM_WRIST[side], dtype=like.dtype, device=like.device)


def to_paper_frame(points: torch.Tensor | np.ndarray, side: str) -> torch.Tensor:
    """Points in our wrist frame → the same points in the paper's appendix wrist frame.

    Args:
        points: ``(..., 3)`` in the contract wrist frame of a ``side`` hand (e.g. fingertips).
        side: ``"left"`` or ``"right"``.

    Returns:
        ``(..., 3)``: ``Rᵀ p`` with ``R = PAPER_FROM_WRIST[side]``. A wrist rotation (wrist →
        camera) converts the same way: ``R_cam_paper = R_cam_ours @ R``.
    """
    p = _tensor(points, "points")
    return p @ _paper_rotation(side, p)


def from_paper_frame(points: torch.Tensor | np.ndarray, side: str) -> torch.Tensor:
    """Inverse of :func:`to_paper_frame`: paper appendix wrist frame → our wrist frame (``R p``)."""
    p = _tensor(points, "points")
    return p @ _paper_rotation(side, p).T
