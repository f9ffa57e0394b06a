"""Synthetic two-hand manipulation windows for tests, examples and benchmarks.

Each window is about one second of two hands doing manipulation-like motion, sampled at
``window_len`` frames in the ``metis-hand-v1`` contract:

* **wrists** start at random poses in front of the ego camera (OpenCV frame: x right, y down,
  z forward) and move along smooth minimum-jerk segments — a *reach* towards a target, a
  *lift* (upwards, −y), a *place* (down and sideways) — adding up to as much as
  ``max_translation`` (25 cm by default) within the window, while turning about a random axis
  by up to ``max_rotation_deg`` (60°);
* **fingers** close and open (grasp / release, with per-finger timing and extent) by curling
  about their knuckles, the thumb opposing; hand size varies from window to window;
* **sensor noise**: Gaussian noise on positions (``noise_mm``) and on wrist rotations.

Splits use disjoint random streams, so ``split="heldout"`` windows never repeat training ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metis_core.contract import pack_hands
from metis_core.rotations import axis_angle_to_matrix, random_rotation_matrices

__all__ = ["MotionWindows", "generate_motion_windows"]

_SPLITS = {"train": 0, "heldout": 1, "test": 2}
# Open-hand fingertips in the wrist frame (metres): z towards the middle MCP, y towards the index.
_OPEN_TIPS = np.array(
    [
        [0.035, 0.055, 0.085],  # thumb
        [0.0, 0.030, 0.175],  # index
        [0.0, 0.006, 0.185],  # middle
        [0.0, -0.016, 0.175],  # ring
        [0.0, -0.036, 0.150],  # little
    ]
)
_KNUCKLE_Z = 0.09
_THUMB_CLOSED = np.array([-0.025, 0.020, 0.115])


@dataclass
class MotionWindows:
    """Generated windows.

    Attributes:
        actions: ``(N, T, 48)`` float32 contract actions.
        hand_mask: ``(N, 2)`` bool presence (left, right).
        window_seconds: Duration each window spans (first to last frame), if known; checked
            against the tokenizer's ``window_seconds`` when training.
    """

    actions: torch.Tensor
    hand_mask: torch.Tensor
    window_seconds: float | None = None


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


def _segments(rng: np.random.Generator, count: int, times: np.ndarray, max_segments: int):
    """Smooth 0→1 profiles: ``(count, max_segments, T)`` and random weights of each segment."""
    starts = rng.uniform(-0.2, 0.6, size=(count, max_segments))
    lengths = rng.uniform(0.25, 0.9, size=(count, max_segments))
    profile = _min_jerk((times[None, None, :] - starts[..., None]) / lengths[..., None])
    return profile


def generate_motion_windows(
    num_windows: int,
    *,
    window_len: int = 16,
    seed: int = 0,
    split: str = "train",
    max_translation: float = 0.25,
    max_rotation_deg: float = 60.0,
    noise_mm: float = 1.0,
    one_hand_fraction: float = 0.0,
) -> MotionWindows:
    """Generate realistic two-hand manipulation-like windows.

    Args:
        num_windows: ``N``.
        window_len: Frames per window (the window spans one second).
        seed: Base seed; with ``split`` it fixes the stream.
        split: ``"train"``, ``"heldout"`` or ``"test"`` (disjoint streams).
        max_translation: Largest wrist displacement within a window (metres).
        max_rotation_deg: Largest wrist rotation within a window (degrees).
        noise_mm: Standard deviation of position noise (mm); rotation noise is
            ``noise_mm × 0.3`` degrees.
        one_hand_fraction: Fraction of windows in which one hand (chosen at random) is missing.

    Returns:
        :class:`MotionWindows`.
    """
    if num_windows < 1:
        raise ValueError(f"num_windows must be >= 1, got {num_windows}")
    if window_len < 2:
        raise ValueError(f"window_len must be >= 2, got {window_len}")
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    if not 0.0 <= one_hand_fraction <= 1.0:
        raise ValueError(f"one_hand_fraction must be in [0, 1], got {one_hand_fraction}")
    rng = np.random.default_rng([seed, _SPLITS[split], 0x4D455449])
    n, h = num_windows, 2
    times = np.linspace(0.0, 1.0, window_len)

    # Wrist start poses: left hand on the left (x < 0), right on the right.
    start_position = np.stack(
        [
            rng.uniform(0.05, 0.35, size=(n, h)) * np.array([-1.0, 1.0]),
            rng.uniform(-0.05, 0.30, size=(n, h)),
            rng.uniform(0.30, 0.65, size=(n, h)),
        ],
        -1,
    )
    torch_gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))
    start_rotation = random_rotation_matrices(n * h, generator=torch_gen).double().numpy()
    start_rotation = start_rotation.reshape(n, h, 3, 3)

    # Wrist translation: reach + lift + place segments with min-jerk profiles.
    segments = 3
    profile = _segments(rng, n * h, times, segments).reshape(n, h, segments, window_len)
    directions = rng.normal(size=(n, h, segments, 3))
    directions[..., 0, 1] -= 0.5  # the lift leans upwards (−y)
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    activity = rng.choice([0.1, 0.5, 1.0], p=[0.2, 0.3, 0.5], size=(n, h, 1))
    magnitude = rng.uniform(0.2, 1.0, size=(n, h, segments)) * activity
    steps = directions * magnitude[..., None]
    path = np.einsum("nhst,nhsd->nhtd", profile, steps)
    extent = np.linalg.norm(path - path[:, :, :1], axis=-1).max(-1, keepdims=True)
    target = rng.uniform(0.3, 1.0, size=(n, h, 1)) * max_translation * activity
    path = path / np.maximum(extent, 1e-9)[..., None] * target[..., None]
    position = start_position[:, :, None, :] + path

    # Wrist rotation: one or two turns about random local axes.
    turn_profile = _segments(rng, n * h, times, 2).reshape(n, h, 2, window_len)
    axes = rng.normal(size=(n, h, 2, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    total_angle = (
        np.deg2rad(max_rotation_deg) * rng.uniform(0.0, 1.0, size=(n, h)) * activity[..., 0]
    )
    first_share = rng.uniform(0.6, 1.0, size=(n, h))
    # The two turns' rotation vectors add up to at most max_rotation_deg.
    angles = np.stack([total_angle * first_share, total_angle * (1.0 - first_share)], -1)
    rotvec = np.einsum("nhst,nhsd->nhtd", turn_profile, axes * angles[..., None])
    local = axis_angle_to_matrix(torch.from_numpy(rotvec)).numpy()
    rotation = np.einsum("nhij,nhtjk->nhtik", start_rotation, local)

    # Fingers: grasp (close) then maybe release, per-finger timing and extent.
    hand_size = rng.uniform(0.85, 1.15, size=(n, h, 1, 1, 1))
    closure_start = rng.uniform(0.0, 0.6, size=(n, h, 1))
    closure_from = rng.uniform(0.0, 0.4, size=(n, h, 1))
    closure_to = rng.uniform(0.0, 1.0, size=(n, h, 1))
    finger_delay = rng.uniform(-0.1, 0.1, size=(n, h, 5))
    finger_extent = rng.uniform(0.7, 1.0, size=(n, h, 5))
    duration = rng.uniform(0.2, 0.6, size=(n, h, 1))
    tau = (times[None, None, None, :] - (closure_start + finger_delay)[..., None]) / duration[
        ..., None
    ]
    release = rng.random(size=(n, h, 1, 1)) < 0.3
    grasp = _min_jerk(tau) - np.where(release, _min_jerk(tau - 1.3), 0.0)
    closure = closure_from[..., None] + (closure_to - closure_from)[..., None] * grasp
    closure = np.clip(closure * finger_extent[..., None], 0.0, 1.0)  # (n, h, 5, T)
    closure = closure.transpose(0, 1, 3, 2)  # (n, h, T, 5)
    tips = np.broadcast_to(_OPEN_TIPS, (n, h, window_len, 5, 3)).copy()
    curl = 1.7 * closure[..., 1:]
    length = _OPEN_TIPS[1:, 2] - _KNUCKLE_Z
    tips[..., 1:, 0] = -length * np.sin(curl)
    tips[..., 1:, 2] = _KNUCKLE_Z + length * np.cos(curl)
    tips[..., 0, :] = _OPEN_TIPS[0] + closure[..., 0:1] * (_THUMB_CLOSED - _OPEN_TIPS[0])
    tips = tips * hand_size

    # Sensor noise.
    sigma = noise_mm / 1000.0
    position = position + rng.normal(scale=sigma, size=position.shape)
    tips = tips + rng.normal(scale=sigma, size=tips.shape)
    jitter = rng.normal(scale=np.deg2rad(0.3 * noise_mm), size=(*rotation.shape[:3], 3))
    rotation = rotation @ axis_angle_to_matrix(torch.from_numpy(jitter)).numpy()

    hand_mask = np.ones((n, h), dtype=bool)
    missing = rng.random(n) < one_hand_fraction
    hand_mask[missing, rng.integers(0, 2, size=int(missing.sum()))] = False
    mask_per_frame = np.broadcast_to(hand_mask[:, None, :], (n, window_len, h))
    actions = pack_hands(
        torch.from_numpy(position.transpose(0, 2, 1, 3)).float(),
        torch.from_numpy(rotation.transpose(0, 2, 1, 3, 4)).float(),
        torch.from_numpy(tips.transpose(0, 2, 1, 3, 4)).float(),
        hand_mask=torch.from_numpy(mask_per_frame.copy()),
    )
    return MotionWindows(
        actions=actions.float(), hand_mask=torch.from_numpy(hand_mask), window_seconds=1.0
    )
