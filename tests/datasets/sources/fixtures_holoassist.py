"""Writes a tiny HoloAssist recording (``<video>/Export_py/...``) plus an annotation JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from source_fixtures import HandTruth, hand_motion

from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.video import encode_video

FLU_TO_OPENCV = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
K_PV = np.array([[1450.0, 0.0, 448.0], [0.0, 1450.0, 252.0], [0.0, 0.0, 1.0]])


def openpose_to_hololens(points: np.ndarray) -> np.ndarray:
    """``(T, 21, 3)`` OpenPose keypoints → ``(T, 26, 3)`` HoloLens joints (palm and finger
    metacarpals, which HoloLens has and OpenPose lacks, interpolated from the wrist)."""
    wrist = points[:, 0]
    out = [0.5 * (wrist + points[:, 9]), wrist, *[points[:, i] for i in (1, 2, 3, 4)]]
    for base in (5, 9, 13, 17):
        out += [0.5 * (wrist + points[:, base]), *[points[:, base + j] for j in range(4)]]
    return np.stack(out, axis=1)


def write_holoassist(root: Path, *, frames: int = 12, video: str = "R007-7July-DSLR", untracked_right: tuple[int, ...] = (5,)) -> dict[str, HandTruth]:  # fmt: skip
    export = root / video / "Export_py"
    for folder in ("Video", "Hands", "Head"):
        (export / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    times = 12.5 + np.arange(frames) / 30.0
    cam_rotation = np.asarray(
        axis_angle_to_matrix(torch.tensor(rng.normal(size=(frames, 3)) * 0.4))
    )
    camera_to_world = np.tile(np.eye(4), (frames, 1, 1))
    camera_to_world[:, :3, :3] = cam_rotation
    camera_to_world[:, :3, 3] = rng.normal(size=(frames, 3))
    with (export / "Video" / "Pose_sync.txt").open("w") as handle:
        for t in range(frames):
            handle.write("\t".join([f"{times[t]:.6f}", str(1000 + t), *(f"{v:.12f}" for v in camera_to_world[t].ravel())]) + "\n")  # fmt: skip
    truth = {"left": hand_motion(frames, "left", seed=11), "right": hand_motion(frames, "right", seed=12, absent=untracked_right)}  # fmt: skip
    for side, hand in truth.items():
        joints_cv = openpose_to_hololens(hand.keypoints)
        joints_flu = joints_cv @ FLU_TO_OPENCV  # B^T p for each row
        world = np.einsum("tij,tkj->tki", camera_to_world, np.concatenate([joints_flu, np.ones((frames, 26, 1))], -1))[..., :3]  # fmt: skip
        with (export / "Hands" / f"{side.title()}_sync.txt").open("w") as handle:
            for t in range(frames):
                tracked = hand.present[t]
                matrices = np.tile(np.eye(4), (26, 1, 1))
                if tracked:
                    matrices[:, :3, 3] = world[t]
                    # joint orientations are irrelevant to the contract: make them arbitrary
                    matrices[:, :3, :3] = np.asarray(axis_angle_to_matrix(torch.tensor(rng.normal(size=(26, 3)))))  # fmt: skip
                flags = np.full(26, 1.0 if tracked else 0.0)
                values = [f"{times[t]:.6f}", str(1000 + t), "1" if tracked else "0", *(f"{v:.12f}" for v in matrices.ravel()), *map(str, flags), *map(str, flags)]  # fmt: skip
                handle.write("\t".join(values) + "\n")
    intrinsics = [*K_PV.ravel(), *np.zeros(8), 1450, 1450, 1450, 448, 252, 0, 896, 504]
    (export / "Video" / "Intrinsics.txt").write_text("\t".join(map(str, intrinsics)) + "\n")
    pixels = np.zeros((frames, 56, 100, 3), np.uint8)
    pixels[:] = (np.arange(frames) * 20 % 256)[:, None, None, None]
    encode_video(export / "Video_pitchshift.mp4", pixels, 30.0)
    annotation = [
        {
            "video_name": video,
            "taskType": "assemble the printer",
            "events": [
                {
                    "id": 1,
                    "label": "Coarse grained action",
                    "start": 0.0,
                    "end": 0.4,
                    "type": "range",
                    "attributes": {"Verb": "assemble", "Noun": "printer"},
                },
                {
                    "id": 2,
                    "label": "Fine grained action",
                    "start": 0.0,
                    "end": 0.2,
                    "type": "range",
                    "attributes": {"Verb": "grab", "Noun": "cartridge"},
                },
                {
                    "id": 3,
                    "label": "Fine grained action",
                    "start": 0.2,
                    "end": 0.4,
                    "type": "range",
                    "attributes": {"Verb": "insert", "Noun": "cartridge"},
                },
                {
                    "id": 4,
                    "label": "Narration",
                    "start": 0.0,
                    "end": 0.4,
                    "type": "range",
                    "attributes": {},
                },
            ],
        }
    ]
    (root / "data-annotation-trainval-v1_1.json").write_text(json.dumps(annotation))
    return truth
