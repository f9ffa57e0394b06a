"""Writes a tiny ARCTIC download (``splits/``, ``raw_seqs/``, ``meta/misc.json``, ``images/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from source_fixtures import OPENPOSE_TO_ARCTIC, HandTruth, hand_motion

from metis_core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from metis_embodiments.human import curl_fingers

K_EGO = np.array([[1200.0, 0.0, 1400.0], [0.0, 1200.0, 1000.0], [0.0, 0.0, 1.0]])
IOI_OFFSET = 3


def _truth(frames: int, seed: int) -> dict[str, HandTruth]:
    return {"left": hand_motion(frames, "left", seed=seed), "right": hand_motion(frames, "right", seed=seed + 1)}  # fmt: skip


def write_meta_and_images(root: Path, sequence: str, frames: int) -> None:
    subject, name = sequence.split("/")
    (root / "meta").mkdir(parents=True, exist_ok=True)
    misc_path = root / "meta" / "misc.json"
    import json

    misc = json.loads(misc_path.read_text()) if misc_path.exists() else {}
    misc[subject] = {"ioi_offset": IOI_OFFSET, "gender": "female", "image_size": [[2800, 2000]] * 9}
    misc_path.write_text(json.dumps(misc))
    folder = root / "images" / subject / name / "0"
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        Image.fromarray(np.full((200, 280, 3), 20 * t % 256, np.uint8)).save(folder / f"{t + IOI_OFFSET:05d}.jpg")  # fmt: skip


def write_arctic_splits(root: Path, *, frames: int = 10, sequences: tuple[str, ...] = ("s01/box_use_01", "s01/laptop_grab_02"), split: str = "p2_val", invalid_left: tuple[int, ...] = (4,)) -> dict[str, dict[str, HandTruth]]:  # fmt: skip
    """``splits/<split>.npy`` with view-0 joints = ground truth (other views: noise)."""
    data_dict, truths = {}, {}
    rng = np.random.default_rng(0)
    for number, sequence in enumerate(sequences):
        truth = _truth(frames, 10 * number)
        truth["left"].present[list(invalid_left)] = False
        cam = {}
        for side in ("left", "right"):
            joints = rng.normal(size=(frames, 10, 21, 3))
            joints[:, 0] = truth[side].keypoints[:, OPENPOSE_TO_ARCTIC]
            cam[f"joints.{side}"] = joints.astype(np.float32)
            valid = np.ones((frames, 10), np.float32)
            valid[:, 0] = truth[side].present
            cam[f"{side}_valid"] = valid
        cam["rot_r_cam"] = np.zeros((frames, 9, 3), np.float32)
        cam["rot_l_cam"] = np.zeros((frames, 9, 3), np.float32)
        params = {"K_ego": np.repeat(K_EGO[None], frames, 0).astype(np.float32), "dist": np.zeros((frames, 8), np.float32)}  # fmt: skip
        data_dict[sequence] = {"cam_coord": cam, "params": params, "2d": {}, "bbox": np.zeros((frames, 10, 3))}  # fmt: skip
        truths[sequence] = truth
        write_meta_and_images(root, sequence, frames)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    np.save(root / "splits" / f"{split}.npy", {"data_dict": data_dict, "imgnames": []}, allow_pickle=True)  # fmt: skip
    return truths


def fake_mano_joints(side: str, params: dict[str, np.ndarray]) -> np.ndarray:
    """A stand-in MANO layer: the template hand curled by ``pose[:, :15]`` (5 fingers x 3 joints),
    rotated by ``rot`` and moved to ``trans`` (smplx joint order + tips)."""
    flexion = torch.tensor(params["pose"][:, :15], dtype=torch.float64).reshape(-1, 5, 3)
    local = curl_fingers(flexion).numpy()
    if side == "left":
        local = local * np.array([-1.0, 1.0, 1.0])
    rotation = np.asarray(axis_angle_to_matrix(torch.tensor(params["rot"], dtype=torch.float64)))
    points = np.einsum("tij,tkj->tki", rotation, local) + params["trans"][:, None]
    return points[:, OPENPOSE_TO_ARCTIC]


def write_arctic_raw(root: Path, *, frames: int = 10, sequence: str = "s02/ketchup_use_03") -> dict[str, HandTruth]:  # fmt: skip
    """``raw_seqs/<seq>.{mano,egocam.dist,object}.npy`` whose stand-in MANO joints, moved by the
    world → ego transform, are the ground truth."""
    truth = _truth(frames, 7)
    rng = np.random.default_rng(3)
    cam_rotation = np.asarray(
        axis_angle_to_matrix(torch.tensor(rng.normal(size=(frames, 3)) * 0.3))
    )
    cam_translation = rng.normal(size=(frames, 3)) * 0.2
    mano = {}
    t = np.linspace(0.0, 1.0, frames)
    for side in ("left", "right"):
        hand = truth[side]
        world_rotation = np.einsum("tji,tjk->tik", cam_rotation, hand.rotation)
        world_wrist = np.einsum("tji,tj->ti", cam_rotation, hand.wrist - cam_translation)
        pose = np.zeros((frames, 45))
        flexion = np.zeros((frames, 5, 3))
        flexion[:, 1:] = (0.2 + 0.9 * t)[:, None, None]
        flexion[:, 0] = (0.4 * t)[:, None]
        pose[:, :15] = flexion.reshape(frames, 15)
        mano[side] = {
            "rot": np.asarray(matrix_to_axis_angle(torch.tensor(world_rotation))).astype(
                np.float32
            ),
            "pose": pose.astype(np.float32),
            "trans": world_wrist.astype(np.float32),
            "shape": np.zeros(10, np.float32),
            "fitting_err": np.zeros(frames, np.float32),
        }
    base = root / "raw_seqs" / sequence
    base.parent.mkdir(parents=True, exist_ok=True)
    np.save(f"{base}.mano.npy", mano, allow_pickle=True)
    egocam = {"R_k_cam_np": cam_rotation.astype(np.float32), "T_k_cam_np": cam_translation[..., None].astype(np.float32), "intrinsics": K_EGO.astype(np.float32), "dist8": np.zeros(8, np.float32)}  # fmt: skip
    np.save(f"{base}.egocam.dist.npy", egocam, allow_pickle=True)
    np.save(f"{base}.object.npy", np.zeros((frames, 7), np.float32))
    write_meta_and_images(root, sequence, frames)
    return truth
