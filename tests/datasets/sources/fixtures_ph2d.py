"""Writes PH2D ``processed/<task>/processed_episode_<i>.hdf5`` files (human and H1 + Inspire) with known ground truth."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import torch

from metis_core.frames import wrist_frame_from_keypoints
from metis_core.registry import EMBODIMENTS
from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.sources.ph2d import FLU_TO_OPENCV, PH2D_HAND_ORDER

FRAMES = 12
TASK = "303-grasp_coke_random-2024_12_12-19_13_53"
# Palm-fixed joint origins of the right Inspire hand (maker's URDF numbers): index, middle, little
# MCPs; the wrist is the base-link origin. The left hand is reflected through z (Unitree H1 URDF).
MCPS_RIGHT = np.array([[0.00028533, -0.13653, -0.032268], [0.00028533, -0.1371, -0.01295], [0.00028533, -0.13571, 0.025488]])  # fmt: skip


def random_rotations(rng: np.random.Generator, frames: int, scale: float) -> np.ndarray:
    base = rng.normal(size=3) * scale
    drift = rng.normal(size=3) * 0.3
    t = np.linspace(0, 1, frames)[:, None]
    return np.asarray(axis_angle_to_matrix(torch.tensor(base + drift * t)))


def rows6d(matrix: np.ndarray) -> np.ndarray:
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def ph2d_scene(seed: int, robot: bool) -> dict:
    """Raw 128-D arrays and the expected contract values (camera frame) for both hands."""
    rng = np.random.default_rng(seed)
    head = random_rotations(rng, FRAMES, 0.3)
    array = np.zeros((FRAMES, 128))
    array[:, 3:9] = rows6d(head)
    truth: dict = {"mask": np.ones((FRAMES, 2), dtype=bool)}
    t = np.linspace(0, 1, FRAMES)
    for side, wrist_slice, kp_slice, qpos_slice in (("left", slice(80, 89), slice(10, 28), slice(107, 113)), ("right", slice(30, 39), slice(40, 58), slice(120, 126))):  # fmt: skip
        sign = 1.0 if side == "left" else -1.0
        base_rot = random_rotations(rng, FRAMES, 1.0)
        base_pos = np.stack([0.35 + 0.05 * t, sign * 0.2 + 0.02 * t, -0.3 + 0.03 * t], axis=1)
        array[:, wrist_slice] = np.concatenate([base_pos, rows6d(base_rot)], axis=1)
        mirror = np.array([1.0, 1.0, -1.0 if side == "left" else 1.0])
        # Expected contract wrist frame: from the MCP keypoints moved to the camera.
        to_camera = FLU_TO_OPENCV @ np.swapaxes(head, 1, 2)
        points = [np.zeros(3), *(MCPS_RIGHT * mirror)]
        camera_points = [np.einsum("tij,tj->ti", to_camera, base_pos + np.einsum("tij,j->ti", base_rot, p)) for p in points]  # fmt: skip
        rotation, origin = wrist_frame_from_keypoints(*[torch.tensor(p) for p in camera_points])
        rotation, origin = rotation.numpy(), origin.numpy()
        hand = EMBODIMENTS.create("inspire", side=side)
        if robot:
            limits = hand.joint_limits.double().numpy()
            q = limits[:, 0] + (0.2 + 0.6 * t[:, None] * rng.uniform(0.5, 1.0, 6)) * (limits[:, 1] - limits[:, 0])  # fmt: skip
            tips = hand.forward_kinematics(torch.tensor(q)).numpy()
            order = [hand.joint_names.index(n) for n in PH2D_HAND_ORDER]
            opened = (limits[:, 1] - q) / (limits[:, 1] - limits[:, 0])
            array[:, 100:126][:, qpos_slice.start - 100 : qpos_slice.stop - 100] = opened[:, order]
        else:
            # Human fingertips given in the base-link frame of the hand.
            tips_camera = np.stack([origin + rng.normal(size=(FRAMES, 3)) * 0.02 + rotation[:, :, 2] * (0.12 + 0.03 * k) for k in range(5)], axis=1)  # fmt: skip
            tips = np.einsum("tji,tkj->tki", rotation, tips_camera - origin[:, None])
            tips_base_frame = np.einsum("tji,tkj->tki", base_rot, np.einsum("tji,tkj->tki", to_camera, tips_camera) - base_pos[:, None])  # fmt: skip
            keypoints = np.concatenate([np.zeros((FRAMES, 1, 3)), tips_base_frame], axis=1)
            array[:, kp_slice] = keypoints.reshape(FRAMES, 18)
        truth[side] = {"wrist": origin, "rotation": rotation, "tips": tips}
    return {"array": array.astype(np.float32), "truth": truth}


def bgr_jpeg(frame: np.ndarray) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    # The authors' JPEGs hold BGR data (OpenCV encodes the RGB array as if it were BGR).
    Image.fromarray(np.ascontiguousarray(frame[..., ::-1])).save(buffer, format="JPEG", quality=95)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def write_ph2d_episode(
    path: Path, scene: dict, embodiment: str, *, drop: str | None = None
) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.zeros((FRAMES, 48, 64, 3), dtype=np.uint8)
    frames[..., 0] = 200  # red images: a channel swap would turn them blue
    frames[:, :, :, 2] = np.arange(FRAMES)[:, None, None] * 10
    with h5py.File(path, "w") as handle:
        vlen = h5py.vlen_dtype(np.dtype("uint8"))
        for key in ("observation.image.left", "observation.image.right"):
            data = handle.create_dataset(key, (FRAMES,), dtype=vlen)
            for i in range(FRAMES):
                data[i] = bgr_jpeg(frames[i])
        state = scene["array"].copy()
        if "human" in embodiment:
            state[1:] = scene["array"][:-1]  # human state = action shifted by one step
        handle["observation.state"] = scene["array"]
        handle["action"] = scene["array"]
        if drop:
            del handle[drop]
        handle.attrs["description"] = "grasp the coke can"
        handle.attrs["embodiment"] = embodiment
    return frames
