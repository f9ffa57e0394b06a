"""Resampling contract vectors to a target rate: linear for positions, slerp for rotations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metis_core.contract import LEFT, RIGHT, ContractError, apply_hand_mask, validate_hand_mask
from metis_core.rotations import (
    matrix_to_quaternion,
    matrix_to_rot6d,
    numpy_to_tensor,
    quaternion_slerp,
    quaternion_to_matrix,
    rot6d_to_matrix,
)

__all__ = ["ResampledHands", "interpolation_weights", "resample_hand_vectors", "target_timestamps"]


@dataclass
class ResampledHands:
    """Result of :func:`resample_hand_vectors`.

    Args:
        vectors: ``(..., T', 48)`` resampled contract vectors.
        hand_mask: ``(..., T', 2)`` presence at the new times.
        timestamps: ``(T',)`` the new times in seconds.
    """

    vectors: torch.Tensor
    hand_mask: torch.Tensor
    timestamps: torch.Tensor


def _timestamps(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(
        np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float64
    )
    if t.dim() != 1:
        raise ValueError(f"{what}: expected a 1-D array of seconds, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what}: contains non-finite times")
    if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
        first = int((t[1:] <= t[:-1]).nonzero()[0])
        raise ValueError(
            f"{what}: times must be strictly increasing; t[{first + 1}]={t[first + 1].item():.6f} "
            f"does not come after t[{first}]={t[first].item():.6f}"
        )
    return t


def target_timestamps(start: float, end: float, fps: float) -> torch.Tensor:
    """Times ``start, start + 1/fps, ...`` up to and including ``end`` (to 1 µs)."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if end < start:
        raise ValueError(f"end ({end}) must not come before start ({start})")
    count = int(np.floor((end - start) * fps + 1e-6)) + 1
    return start + torch.arange(count, dtype=torch.float64) / fps


def interpolation_weights(
    source_times: torch.Tensor, query_times: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query time, the index of the source sample at or before it and the fraction to the next.

    Args:
        source_times: ``(T,)`` strictly increasing.
        query_times: ``(T',)`` within ``[source_times[0], source_times[-1]]``.

    Returns:
        ``(index (T',) int64, fraction (T',) float64)`` with ``index + 1 < T`` whenever fraction > 0.
    """
    if source_times.numel() == 0:
        raise ValueError("cannot interpolate from an empty sequence")
    lo, hi = source_times[0].item(), source_times[-1].item()
    tolerance = 1e-9 + 1e-12 * max(abs(lo), abs(hi))
    if bool((query_times < lo - tolerance).any()) or bool((query_times > hi + tolerance).any()):
        raise ValueError(
            f"query times [{query_times.min().item():.6f}, {query_times.max().item():.6f}] s fall "
            f"outside the source range [{lo:.6f}, {hi:.6f}] s; extrapolation is not supported"
        )
    query = query_times.clamp(lo, hi)
    index = torch.searchsorted(source_times.contiguous(), query.contiguous(), right=True) - 1
    index = index.clamp(0, max(source_times.numel() - 2, 0))
    if source_times.numel() == 1:
        return torch.zeros_like(index), torch.zeros_like(query)
    span = source_times[index + 1] - source_times[index]
    fraction = ((query - source_times[index]) / span).clamp(0.0, 1.0)
    return index, fraction


def resample_hand_vectors(
    vectors: torch.Tensor | np.ndarray,
    timestamps: torch.Tensor | np.ndarray,
    *,
    target_fps: float | None = 30.0,
    target_times: torch.Tensor | np.ndarray | None = None,
    hand_mask: torch.Tensor | np.ndarray | None = None,
) -> ResampledHands:
    """Resample a sequence of contract vectors to new times.

    Wrist positions and fingertips are interpolated linearly; wrist rotations by slerp of the
    rotations rebuilt from 6D (so the result is again an exact rotation). A hand counts as present
    at a new time only if it is present at both source samples around it (or at the one sample it
    coincides with); missing hands are zeros.

    Args:
        vectors: ``(..., T, 48)``.
        timestamps: ``(T,)`` seconds, strictly increasing.
        target_fps: Rate of the new, evenly spaced times from ``timestamps[0]`` on. Ignored if
            ``target_times`` is given.
        target_times: ``(T',)`` explicit new times in seconds.
        hand_mask: ``(..., T, 2)`` presence; all present if omitted.

    Returns:
        :class:`ResampledHands`.

    Raises:
        ContractError: For vectors that are not ``(..., T, 48)``.
        ValueError: For bad timestamps or targets outside the source range.
    """
    x = (
        numpy_to_tensor(vectors, "resample_hand_vectors")
        if isinstance(vectors, np.ndarray)
        else vectors
    )
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != 48:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(vectors).__name__
        raise ContractError(
            f"resample_hand_vectors: expected vectors of shape (..., T, 48), got {shape}"
        )
    if not x.is_floating_point():
        raise ContractError(f"resample_hand_vectors: expected float vectors, got {x.dtype}")
    if x.shape[-2] == 0:
        raise ContractError(
            "resample_hand_vectors: the sequence has no frames (shape "
            f"{tuple(x.shape)}); expected at least one frame to resample"
        )
    times = _timestamps(timestamps, "timestamps")
    if times.numel() != x.shape[-2]:
        raise ValueError(
            f"timestamps: expected {x.shape[-2]} times (one per frame), got {times.numel()}"
        )
    if target_times is not None:
        new_times = _timestamps(target_times, "target_times")
    elif target_fps is not None:
        new_times = target_timestamps(times[0].item(), times[-1].item(), target_fps)
    else:
        raise ValueError("give target_fps or target_times")
    mask = (
        torch.ones(*x.shape[:-1], 2, dtype=torch.bool)
        if hand_mask is None
        else validate_hand_mask(hand_mask, tuple(x.shape[:-1]))
    )

    index, fraction = interpolation_weights(times, new_times)
    next_index = (index + 1).clamp(max=x.shape[-2] - 1)
    alpha = fraction.to(x.dtype)
    a, b = x[..., index, :], x[..., next_index, :]
    out = a + (b - a) * alpha[:, None]
    # Both wrists' rotations at both ends in one batch (4 small conversions instead of 16).
    ends = torch.stack(
        [
            a[..., LEFT.wrist_rot6d],
            a[..., RIGHT.wrist_rot6d],
            b[..., LEFT.wrist_rot6d],
            b[..., RIGHT.wrist_rot6d],
        ]
    )
    quats = matrix_to_quaternion(rot6d_to_matrix(ends))
    q = quaternion_slerp(quats[:2], quats[2:], alpha)
    rotations = matrix_to_rot6d(quaternion_to_matrix(q))
    out[..., LEFT.wrist_rot6d] = rotations[0]
    out[..., RIGHT.wrist_rot6d] = rotations[1]

    exact = fraction <= 1e-12
    new_mask = mask[..., index, :] & (mask[..., next_index, :] | exact[:, None])
    out = apply_hand_mask(out, new_mask)
    return ResampledHands(vectors=out, hand_mask=new_mask, timestamps=new_times)
