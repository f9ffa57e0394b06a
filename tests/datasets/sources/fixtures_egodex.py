"""Writes EgoDex files (``<part>/<task>/<k>.hdf5`` + ``.mp4``) from known hand motion."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from source_fixtures import HandTruth

from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.sources.egodex import egodex_joint_names
from metis_datasets.video import encode_video

FRAMES = 10
K = np.array([[736.6339, 0, 960], [0, 736.6339, 540], [0, 0, 1]], dtype=np.float32)


def egodex_25(openpose: np.ndarray) -> np.ndarray:
    """OpenPose-21 keypoints → EgoDex's 25 (metacarpals placed 30 % of the way to each MCP)."""
    wrist = openpose[:, :1]
    out = [wrist, openpose[:, 1:5]]
    for mcp in (5, 9, 13, 17):
        out.append(wrist + 0.3 * (openpose[:, mcp : mcp + 1] - wrist))
        out.append(openpose[:, mcp : mcp + 4])
    return np.concatenate(out, axis=1)


def write_egodex(path: Path, truths: dict[str, HandTruth], *, confidences: bool = True, drop: str | None = None) -> None:  # fmt: skip
    rng = np.random.default_rng(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The head moves: camera-to-world poses with a y-up world (ARKit) and drifting rotation.
    camera = np.tile(np.eye(4), (FRAMES, 1, 1))
    camera[:, :3, :3] = np.asarray(axis_angle_to_matrix(torch.tensor(rng.normal(size=3) + np.linspace(0, 0.3, FRAMES)[:, None])))  # fmt: skip
    camera[:, :3, 3] = np.array([0.1, 1.5, -0.2]) + np.linspace(0, 0.05, FRAMES)[:, None]
    with h5py.File(path, "w") as handle:
        handle["camera/intrinsic"] = K
        handle["transforms/camera"] = camera.astype(np.float32)
        for side in ("left", "right"):
            joints = egodex_25(truths[side].keypoints)
            world = np.einsum("tij,tkj->tki", camera[:, :3, :3], joints) + camera[:, None, :3, 3]
            for n, name in enumerate(egodex_joint_names(side)):
                pose = np.tile(np.eye(4), (FRAMES, 1, 1))
                pose[:, :3, 3] = world[:, n]
                handle[f"transforms/{name}"] = pose.astype(np.float32)
                if confidences:
                    value = np.where(truths[side].present, 0.9, 0.9)
                    if n == 7:  # one joint loses tracking where the hand is absent
                        value = np.where(truths[side].present, 0.9, 0.1)
                    handle[f"confidences/{name}"] = value.astype(np.float32)
        for name in ("hip", "spine1", "neck1"):
            handle[f"transforms/{name}"] = np.tile(np.eye(4, dtype=np.float32), (FRAMES, 1, 1))
        if drop:
            del handle[drop]
        handle.attrs.update({"llm_type": "reversible", "which_llm_description": "2", "llm_description": "open the box", "llm_description2": "close the box", "task": "box_open_close"})  # fmt: skip
    frames = np.zeros((FRAMES, 108, 192, 3), dtype=np.uint8)
    frames[..., 0] = (np.arange(FRAMES) * 20)[:, None, None]
    encode_video(path.with_suffix(".mp4"), frames, 30.0)
