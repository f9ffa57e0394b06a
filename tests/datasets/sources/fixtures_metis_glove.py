"""Records a tiny ``metis_glove`` episode with the public writer, from known camera-frame hands.

The ground-truth hands move in the ego camera frame. A head tracker and two wrist trackers move
in an OpenVR tracking universe (y up); the glove keypoints written are the truth carried into
each glove's wrist frame through the trackers and the mount calibrations, so the adapter must
undo the whole chain to land back on the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from source_fixtures import HandTruth, hand_motion

from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.sources.metis_glove import GloveRecordingWriter

RATE_HZ = 20.0
START_S = 1000.0
K_EGO = np.array([[60.0, 0.0, 31.5], [0.0, 60.0, 23.5], [0.0, 0.0, 1.0]])
EGO_SIZE = (48, 64)
TOP_SIZE = (32, 32)


def manus_25(openpose: np.ndarray) -> np.ndarray:
    """``(T, 21, 3)`` OpenPose keypoints → ``(T, 25, 3)`` Manus order (finger metacarpal bases
    at 30 % of the way from the wrist to each MCP)."""
    wrist = openpose[:, :1]
    out = [wrist, openpose[:, 1:5]]
    for mcp in (5, 9, 13, 17):
        out += [wrist + 0.3 * (openpose[:, mcp : mcp + 1] - wrist), openpose[:, mcp : mcp + 4]]
    return np.concatenate(out, axis=1)


def _pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.tile(np.eye(4), (*rotation.shape[:-2], 1, 1))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    return out


def _rotation(vector) -> np.ndarray:
    return np.asarray(axis_angle_to_matrix(torch.tensor(np.asarray(vector, dtype=np.float64))))


def calibration() -> dict[str, np.ndarray]:
    """Mount calibrations of the rig (tracker → glove wrist, head tracker → ego camera)."""
    return {
        "left_wrist_tracker_to_wrist": _pose(
            _rotation([0.3, -0.2, 1.4]), np.array([0.01, -0.035, 0.02])
        ),
        "right_wrist_tracker_to_wrist": _pose(
            _rotation([-0.4, 0.1, -1.2]), np.array([-0.012, -0.03, 0.025])
        ),
        # OpenCV camera in the head tracker's OpenVR axes: flip y and z, tilt down, 6 cm ahead.
        "head_tracker_to_ego_camera": _pose(
            _rotation([-0.35, 0.0, 0.0]) @ np.diag([1.0, -1.0, -1.0]), np.array([0.0, -0.04, -0.06])
        ),
    }


def write_metis_glove(
    root: Path,
    *,
    episode_id: str = "ep_0001",
    frames: int = 16,
    seed: int = 0,
    left_invalid: tuple[int, ...] = (5,),
    right_tracker_lost: tuple[int, ...] = (9,),
    head_lost: tuple[int, ...] = (),
    video: bool = True,
) -> dict[str, HandTruth]:
    """Record one episode at 20 Hz; returns the truth per hand (``present`` = usable at the tick).

    The left glove reports invalid data at ``left_invalid`` (a one-hand frame), the right wrist
    tracker loses tracking at ``right_tracker_lost`` and the head tracker at ``head_lost``
    (both hands unusable). Ego video frame ``k`` is grey level ``15 k`` and comes 4 ms after
    tick ``k``; subtasks are [0.1, 0.4) s "reach for the cup" and [0.4, 0.75) s "lift the cup".
    """
    rng = np.random.default_rng(seed)
    truths = {"left": hand_motion(frames, "left", seed=seed + 10, absent=left_invalid + head_lost), "right": hand_motion(frames, "right", seed=seed + 11, absent=right_tracker_lost + head_lost)}  # fmt: skip
    times = START_S + np.arange(frames) / RATE_HZ
    t = np.linspace(0.0, 1.0, frames)[:, None]
    world_head = _pose(_rotation(rng.normal(size=3) * 0.3 + t * np.array([0.0, 0.4, 0.1])), np.array([0.2, 1.6, -0.4]) + t * np.array([0.05, 0.0, 0.1]))  # fmt: skip
    cal = calibration()
    world_camera = world_head @ cal["head_tracker_to_ego_camera"]
    local: dict[str, np.ndarray] = {}
    trackers: dict[str, np.ndarray] = {}
    for side in ("left", "right"):
        points = manus_25(truths[side].keypoints)
        world_points = np.einsum("tij,tkj->tki", world_camera[:, :3, :3], points) + world_camera[:, None, :3, 3]  # fmt: skip
        trackers[side] = _pose(_rotation(rng.normal(size=3) + t * rng.normal(size=3) * 0.5), np.array([0.1 if side == "right" else -0.2, 1.1, -0.6]) + t * rng.normal(size=3) * 0.1)  # fmt: skip
        world_wrist = trackers[side] @ cal[f"{side}_wrist_tracker_to_wrist"]
        inverse = np.linalg.inv(world_wrist)
        local[side] = np.einsum("tij,tkj->tki", inverse[:, :3, :3], world_points) + inverse[:, None, :3, 3]  # fmt: skip
    with GloveRecordingWriter(root, episode_id, instruction="put the cup in the basket", ego_intrinsics=K_EGO, ego_size=EGO_SIZE, calibration=cal, top_intrinsics=np.array([[30.0, 0, 15.5], [0, 30.0, 15.5], [0, 0, 1]]), top_size=TOP_SIZE) as recording:  # fmt: skip
        for k in range(frames):
            recording.add_frame(
                float(times[k]),
                left_keypoints=local["left"][k],
                right_keypoints=local["right"][k],
                left_wrist_pose=trackers["left"][k][:3],
                right_wrist_pose=trackers["right"][k],  # 4x4 is accepted too
                head_pose=world_head[k][:3],
                left_valid=k not in left_invalid,
                right_wrist_valid=k not in right_tracker_lost,
                head_valid=k not in head_lost,
            )
            if video:
                recording.add_video_frame("ego", float(times[k]) + 0.004, np.full((*EGO_SIZE, 3), 15 * k, np.uint8))  # fmt: skip
                recording.add_video_frame("top", float(times[k]), np.full((*TOP_SIZE, 3), 100, np.uint8))  # fmt: skip
        recording.add_subtask(START_S + 0.1, START_S + 0.4, "reach for the cup")
        recording.add_subtask(START_S + 0.4, START_S + 0.75, "lift the cup")
    return truths
