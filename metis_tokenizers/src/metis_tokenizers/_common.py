"""Shared pieces of the tokenizers: input checks and the start-relative motion representation.

Every tokenizer in this package codes *motion*, not where the hands happen to be. A window of
contract actions ``(B, T, 48)`` is turned into start-relative features of the same layout:

* wrist position: ``R0ᵀ (p_t − p_0)`` — the displacement expressed in the starting wrist frame;
* wrist rotation: 6D of ``R0ᵀ R_t`` — the rotation relative to the starting wrist pose;
* fingertips (already in the wrist frame): ``f_t − f_0``.

Frame 0 of the features is therefore always (0, identity, 0); decoding takes the start state
``(B, 48)`` (at inference, the robot's current proprio state) and maps the features back.

Dimension letters: ``B`` batch, ``T`` frames per window, ``D`` = 48 contract values,
``H`` hands (2), ``L`` latent steps, ``Q`` quantiser levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from metis_core.contract import ACTION_DIM, LEFT, RIGHT, hand_value_mask
from metis_core.rotations import matrix_to_rot6d, rot6d_to_matrix

__all__ = [
    "HAND_LAYOUT_LIST",
    "check_actions",
    "check_hand_mask",
    "check_start",
    "from_relative",
    "present_from_start",
    "to_relative",
    "zero_motion_frame",
]

HAND_LAYOUT_LIST = (LEFT, RIGHT)


def _as_float_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{what}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected floating-point values (metres), got dtype {x.dtype}")
    return x.float()


def check_actions(actions: Any, window_len: int, *, what: str = "actions") -> torch.Tensor:
    """Validate a batch of windows and return it as float32.

    Args:
        actions: ``(B, T, 48)`` with ``T == window_len``.
        window_len: Frames per window the tokenizer was built for.

    Raises:
        ValueError: For a wrong type, rank, window length, width or non-finite values.
    """
    x = _as_float_tensor(actions, what)
    if x.dim() != 3:
        raise ValueError(
            f"{what}: expected shape (B, {window_len}, {ACTION_DIM}) (batch, frames, contract "
            f"values), got {tuple(x.shape)}"
        )
    if x.shape[1] != window_len or x.shape[2] != ACTION_DIM:
        raise ValueError(
            f"{what}: expected shape (B, {window_len}, {ACTION_DIM}), got {tuple(x.shape)} "
            f"(this tokenizer codes windows of {window_len} frames of the 48-D hand contract)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")
    if not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x))[0].tolist()
        raise ValueError(f"{what}: contains NaN or infinity (first at index {tuple(bad)})")
    return x


def check_hand_mask(hand_mask: Any, batch: int, window_len: int) -> torch.Tensor:
    """Validate a hand mask and reduce it to one presence flag per window and hand.

    Args:
        hand_mask: ``None`` (both hands present), ``(B, 2)`` or ``(B, T, 2)`` bools. With a
            per-frame mask a hand counts as present only if it is present in every frame.

    Returns:
        ``(B, 2)`` bool.
    """
    if hand_mask is None:
        return torch.ones(batch, 2, dtype=torch.bool)
    if isinstance(hand_mask, np.ndarray):
        hand_mask = torch.from_numpy(hand_mask)
    if not isinstance(hand_mask, torch.Tensor):
        raise ValueError(
            f"hand_mask: expected a bool tensor of shape ({batch}, 2), got {type(hand_mask).__name__}"
        )
    if hand_mask.dim() == 3 and tuple(hand_mask.shape) == (batch, window_len, 2):
        hand_mask = hand_mask.bool().all(dim=1)
    if tuple(hand_mask.shape) != (batch, 2):
        raise ValueError(
            f"hand_mask: expected shape ({batch}, 2) or ({batch}, {window_len}, 2) (left, right), "
            f"got {tuple(hand_mask.shape)}"
        )
    if hand_mask.dtype != torch.bool:
        if not bool(((hand_mask == 0) | (hand_mask == 1)).all()):
            raise ValueError("hand_mask: expected booleans (or 0/1 values)")
        hand_mask = hand_mask.bool()
    return hand_mask


def check_start(start: Any, batch: int, *, name: str) -> torch.Tensor:
    """Validate the start state ``(B, 48)`` that relative decoding needs."""
    if start is None:
        raise ValueError(
            f"{name}.decode needs `start`: the (B, {ACTION_DIM}) state at the window's first "
            "frame (at inference, the current proprio state), because tokens code motion "
            "relative to it"
        )
    x = _as_float_tensor(start, "start")
    if tuple(x.shape) != (batch, ACTION_DIM):
        raise ValueError(
            f"start: expected shape ({batch}, {ACTION_DIM}) (one contract state per window), "
            f"got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("start: contains NaN or infinity")
    return x


def present_from_start(start: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` presence guessed from a start state: a missing hand's 24 values are zeros."""
    return torch.stack(
        [start[:, list(layout.indices)].abs().sum(-1) > 0 for layout in HAND_LAYOUT_LIST], -1
    )


def to_relative(actions: torch.Tensor, hand_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Contract windows to start-relative features.

    Args:
        actions: ``(B, T, 48)``.
        hand_mask: ``(B, 2)`` bool; a missing hand's features are zeros.

    Returns:
        ``(B, T, 48)`` features in the contract layout (see the module docstring).
    """
    out = torch.zeros_like(actions)
    for layout in HAND_LAYOUT_LIST:
        position = actions[..., layout.wrist_position]
        rotation = rot6d_to_matrix(actions[..., layout.wrist_rot6d])
        start_rotation = rotation[:, :1]
        start_inverse = start_rotation.transpose(-1, -2)
        displacement = position - position[:, :1]
        out[..., layout.wrist_position] = torch.einsum(
            "btij,btj->bti", start_inverse.expand_as(rotation), displacement
        )
        out[..., layout.wrist_rot6d] = matrix_to_rot6d(start_inverse @ rotation)
        tips = actions[..., layout.fingertips]
        out[..., layout.fingertips] = tips - tips[:, :1]
    if hand_mask is not None:
        out = out * hand_value_mask(hand_mask)[:, None, :].to(out.dtype)
    return out


def from_relative(features: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Start-relative features back to contract windows.

    Args:
        features: ``(B, T, 48)`` as made by :func:`to_relative` (or predicted).
        start: ``(B, 48)`` the state at the first frame.

    Returns:
        ``(B, T, 48)``; hands whose start values are all zero (missing) come back as zeros.
    """
    out = torch.zeros_like(features)
    for layout in HAND_LAYOUT_LIST:
        start_position = start[:, None, layout.wrist_position]
        start_rotation = rot6d_to_matrix(start[:, layout.wrist_rot6d])[:, None]
        relative_rotation = rot6d_to_matrix(features[..., layout.wrist_rot6d])
        out[..., layout.wrist_position] = start_position + torch.einsum(
            "btij,btj->bti",
            start_rotation.expand_as(relative_rotation),
            features[..., layout.wrist_position],
        )
        out[..., layout.wrist_rot6d] = matrix_to_rot6d(start_rotation @ relative_rotation)
        out[..., layout.fingertips] = (
            start[:, None, layout.fingertips] + features[..., layout.fingertips]
        )
    present = present_from_start(start)
    return out * hand_value_mask(present)[:, None, :].to(out.dtype)


def fit_windows(actions: Any, hand_mask: Any, window_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate training windows for ``fit`` methods: ``(N, T, 48)`` float32 and ``(N, 2)`` mask."""
    x = check_actions(actions, window_len)
    mask = check_hand_mask(hand_mask, x.shape[0], window_len)
    return x, mask


def zero_motion_frame(batch: int) -> torch.Tensor:
    """``(B, 1, 48)`` relative features of "no motion": zero displacements, identity rotations."""
    frame = torch.zeros(batch, 1, ACTION_DIM)
    for layout in HAND_LAYOUT_LIST:
        frame[..., layout.wrist_rot6d] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return frame
