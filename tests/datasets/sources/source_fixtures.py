"""Ground-truth two-hand motion for the adapter fixtures, and the checks against it.

The hands are the MANO template of ``metis_embodiments`` with curling fingers, placed by a known
wrist pose in the ego camera frame. Because the template is given in its own contract wrist
frame, the expected contract values are exactly the wrist pose and the template's fingertips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from metis_core.contract import LEFT, RIGHT
from metis_core.rotations import axis_angle_to_matrix, geodesic_angle, rot6d_to_matrix
from metis_embodiments.human import curl_fingers

#: OpenPose-21 index of each ARCTIC (smplx MANO + tips) keypoint.
OPENPOSE_TO_ARCTIC = [0, 5, 6, 7, 9, 10, 11, 17, 18, 19, 13, 14, 15, 1, 2, 3, 4, 8, 12, 16, 20]
TIPS = [4, 8, 12, 16, 20]


@dataclass
class HandTruth:
    """One hand's ground truth over ``T`` frames (camera frame, metres)."""

    keypoints: np.ndarray  # (T, 21, 3) OpenPose order, camera frame
    wrist: np.ndarray  # (T, 3)
    rotation: np.ndarray  # (T, 3, 3) wrist axes as columns
    fingertips: np.ndarray  # (T, 5, 3) in the wrist frame
    present: np.ndarray  # (T,) bool


def hand_motion(
    frames: int, side: str, seed: int = 0, *, absent: tuple[int, ...] = ()
) -> HandTruth:
    """A hand moving and rotating in front of the camera while its fingers curl."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, frames)
    sign = 1.0 if side == "right" else -1.0
    wrist = np.stack([sign * 0.15 + 0.05 * np.sin(2 * t + rng.uniform(0, 3)), 0.08 + 0.03 * t, 0.45 + 0.1 * t], axis=1)  # fmt: skip
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    base = np.asarray(axis_angle_to_matrix(torch.tensor(rng.normal(size=3) * 1.2)))
    spin = np.asarray(axis_angle_to_matrix(torch.tensor(axis[None] * (0.9 * t)[:, None])))
    rotation = spin @ base
    flexion = torch.zeros(frames, 5, 3, dtype=torch.float64)
    flexion[:, 1:] = torch.tensor(0.2 + 0.9 * t)[:, None, None]
    flexion[:, 0] = torch.tensor(0.4 * t)[:, None]
    local = curl_fingers(flexion).numpy()  # (T, 21, 3) right hand in its wrist frame
    if side == "left":
        local = local * np.array([-1.0, 1.0, 1.0])
    keypoints = np.einsum("tij,tkj->tki", rotation, local) + wrist[:, None]
    present = np.ones(frames, dtype=bool)
    present[[a for a in absent if a < frames]] = False
    return HandTruth(keypoints, wrist, rotation, local[:, TIPS], present)


def check_hand(vectors: np.ndarray, mask: np.ndarray, truth: HandTruth, side: str, frames: np.ndarray | None = None) -> tuple[float, float]:  # fmt: skip
    """Largest wrist/fingertip error (mm) and wrist rotation error (deg) over present frames.

    Also asserts that the mask equals the truth's presence and absent hands are zeros.
    """
    layout = LEFT if side == "left" else RIGHT
    index = np.arange(vectors.shape[0]) if frames is None else frames
    present = truth.present[index]
    np.testing.assert_array_equal(mask[:, layout.index], present)
    assert np.all(vectors[~present][:, list(layout.indices)] == 0.0)
    rot = np.asarray(rot6d_to_matrix(torch.tensor(vectors[present][:, layout.wrist_rot6d], dtype=torch.float64)))  # fmt: skip
    wrist_mm = np.linalg.norm(vectors[present][:, layout.wrist_position] - truth.wrist[index][present], axis=-1) * 1000  # fmt: skip
    tips = vectors[present][:, layout.fingertips].reshape(-1, 5, 3)
    tips_mm = np.linalg.norm(tips - truth.fingertips[index][present], axis=-1) * 1000
    angle = np.degrees(np.asarray(geodesic_angle(torch.tensor(rot), torch.tensor(truth.rotation[index][present]))))  # fmt: skip
    return float(max(wrist_mm.max(initial=0), tips_mm.max(initial=0))), float(angle.max(initial=0))
