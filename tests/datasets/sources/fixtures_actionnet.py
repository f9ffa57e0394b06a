"""Writes a Fourier ActionNet episode (``<ULID>.hdf5``, ``<ULID>/top/``, ``metadata.json``) with known ground truth."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import torch

from metis_core.frames import wrist_frame_from_keypoints
from metis_core.registry import EMBODIMENTS
from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.video import encode_video

ULID = "01JH00FCRH6EIBDXTA"
FRAMES = 40  # robot samples at 60 Hz
START = 1736400000.0
# Palm-fixed joint origins of Fourier's right hand base link: index, middle, little MCPs.
MCPS = np.array([[0.026864, 0.012307, -0.095892], [0.0084962, 0.012307, -0.097896], [-0.028232, 0.012307, -0.095916]])  # fmt: skip


def base_to_camera(points: np.ndarray) -> np.ndarray:
    """Base-frame points → OpenCV head camera (pitched down 44.5°, 0.11252 m ahead, 0.55029 m up)."""
    theta = np.radians(44.5)
    forward, left, up = np.array([np.cos(theta), 0, -np.sin(theta)]), np.array([0, 1.0, 0]), np.array([np.sin(theta), 0, np.cos(theta)])  # fmt: skip
    d = points - np.array([0.11252, 0.0, 0.55029])
    return np.stack([-(d @ left), -(d @ up), d @ forward], axis=-1)


def actionnet_scene(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, FRAMES)
    hand = np.zeros((FRAMES, 12))
    pose = np.zeros((FRAMES, 27))
    truth = {}
    for k, side in enumerate(("left", "right")):
        embodiment = EMBODIMENTS.create("fourier", side=side)
        limits = embodiment.joint_limits.double().numpy()
        q = limits[:, 0] + (0.1 + 0.8 * t[:, None] * rng.uniform(0.3, 1.0, 6)) * (limits[:, 1] - limits[:, 0])  # fmt: skip
        hand[:, 6 * k : 6 * k + 6] = q
        rotation = np.asarray(axis_angle_to_matrix(torch.tensor(rng.normal(size=3) + t[:, None] * rng.normal(size=3) * 0.4)))  # fmt: skip
        position = np.stack([0.35 + 0.1 * t, (0.2 if side == "left" else -0.2) + 0.03 * t, 0.1 + 0.05 * t], axis=1)  # fmt: skip
        pose[:, 9 * k : 9 * k + 3] = position
        pose[:, 9 * k + 3 : 9 * k + 9] = np.concatenate(
            [rotation[:, :, 0], rotation[:, :, 1]], axis=1
        )
        mirror = np.array([1.0, -1.0 if side == "left" else 1.0, 1.0])
        keypoints = [np.array([0, 0, -0.021]), *(MCPS * mirror + np.array([0, 0, -0.021]))]
        camera = [base_to_camera(position + np.einsum("tij,j->ti", rotation, p)) for p in keypoints]
        wrist_rotation, wrist = wrist_frame_from_keypoints(*[torch.tensor(c) for c in camera])
        truth[side] = {"wrist": wrist.numpy(), "rotation": wrist_rotation.numpy(), "tips": embodiment.forward_kinematics(torch.tensor(q)).numpy()}  # fmt: skip
    pose[:, 21:27] = [1, 0, 0, 0, 1, 0]  # head orientation (not used)
    return {"hand": hand, "pose": pose, "truth": truth}


def frame_stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H-%M-%S_%f")


def write_actionnet(
    root: Path, scene: dict, *, drop: str | None = None, hand_width: int = 12
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    times = START + np.arange(FRAMES) / 60.0
    times[5] = times[4]  # the robot clock repeats a stamp now and then
    with h5py.File(root / f"{ULID}.hdf5", "w") as handle:
        for group in ("state", "action"):
            hand = scene["hand"] if hand_width == 12 else np.zeros((FRAMES, hand_width))
            handle[f"{group}/hand"] = hand.astype(np.float32)
            handle[f"{group}/pose"] = scene["pose"].astype(np.float32)
            handle[f"{group}/robot"] = np.zeros((FRAMES, 32), np.float32)
        handle["timestamp"] = times
        if drop:
            del handle[drop]
    camera = root / ULID / "top"
    camera.mkdir(parents=True, exist_ok=True)
    video_frames = 21  # 30 Hz over the same span
    frames = np.zeros((video_frames, 80, 128, 3), dtype=np.uint8)
    frames[..., 1] = (np.arange(video_frames) * 12)[:, None, None]
    encode_video(camera / "rgb.mp4", frames, 30.0)
    (camera / "timestamps.json").write_text(json.dumps([frame_stamp(START + i / 30.0) for i in range(video_frames)]))  # fmt: skip
    (root / "metadata.json").write_text(json.dumps([{"id": ULID, "prompt": "put the cup on the plate"}]))  # fmt: skip
