"""EgoDex adapter: an episode written in EgoDex's HDF5 + MP4 layout, checked against ground truth."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from source_fixtures import HandTruth, check_hand, hand_motion

from metis_core.registry import DATASET_SOURCES
from metis_core.rotations import axis_angle_to_matrix
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes
from metis_datasets.sources.egodex import egodex_joint_names
from metis_datasets.video import encode_video

FRAMES = 10
K = np.array([[736.6339, 0, 960], [0, 736.6339, 540], [0, 0, 1]], dtype=np.float32)


def _egodex_25(openpose: np.ndarray) -> np.ndarray:
    """OpenPose-21 keypoints → EgoDex's 25 (metacarpals placed 30 % of the way to each MCP)."""
    wrist = openpose[:, :1]
    out = [wrist, openpose[:, 1:5]]
    for mcp in (5, 9, 13, 17):
        out.append(wrist + 0.3 * (openpose[:, mcp : mcp + 1] - wrist))
        out.append(openpose[:, mcp : mcp + 4])
    return np.concatenate(out, axis=1)


def _write(path: Path, truths: dict[str, HandTruth], *, confidences: bool = True, drop: str | None = None) -> None:  # fmt: skip
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
            joints = _egodex_25(truths[side].keypoints)
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


@pytest.fixture(scope="module")
def egodex(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("egodex")
    truths = {"left": hand_motion(FRAMES, "left", seed=3, absent=(4,)), "right": hand_motion(FRAMES, "right", seed=4)}  # fmt: skip
    _write(root / "part_test" / "box_open_close" / "0.hdf5", truths)
    _write(root / "part_test" / "box_open_close" / "1.hdf5", truths, confidences=False)
    return {"root": root, "truths": truths}


def test_wrists_and_fingertips_land_on_ground_truth(egodex: dict) -> None:
    source = DATASET_SOURCES.create("egodex", image_height=48, image_width=64)
    source.check_layout(egodex["root"])
    assert source.list_episodes(egodex["root"]) == ["part_test/box_open_close/0", "part_test/box_open_close/1"]  # fmt: skip
    episode = source.load_episode(egodex["root"], "part_test/box_open_close/0")
    assert episode.instruction == "close the box"  # reversible task, second description
    truths = egodex["truths"]
    left = HandTruth(**{**vars(truths["left"]), "present": truths["left"].present & np.append(truths["left"].present[1:], True)})  # fmt: skip
    # Low confidence at frame 4 masks the left hand at 4 (state) and 3 (its action is frame 4).
    np.testing.assert_array_equal(np.flatnonzero(~episode.hand_mask[:, 0]), [3, 4])
    for side, truth in (("left", left), ("right", truths["right"])):
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth, side)
        assert error_mm < 1.0, (side, error_mm, error_deg)
        assert error_deg < 0.5, (side, error_mm, error_deg)
    # 1920x1080 (here 192x108) fitted to 64x48: the video is read frame by frame in order.
    assert episode.images["ego"].shape == (FRAMES, 48, 64, 3)
    assert (
        np.abs(episode.images["ego"][:, 24, 32, 0].astype(int) - np.arange(FRAMES) * 20).max() < 8
    )
    k = np.asarray(episode.metadata["camera_intrinsics"])
    # K (for 1920x1080) scaled to the 192x108 video, then resized to cover 64x48 (85x48).
    assert k[0, 0] == pytest.approx(736.6339 * 85 / 1920, rel=1e-6)
    assert k[1, 1] == pytest.approx(736.6339 * 48 / 1080, rel=1e-6)


def test_missing_confidences_mean_tracked_and_lerobot_round_trip(
    egodex: dict, tmp_path: Path
) -> None:
    source = DATASET_SOURCES.create("egodex", with_images=False, target_fps=15.0)
    episode = source.load_episode(egodex["root"], "part_test/box_open_close/1")
    assert episode.hand_mask.all()
    assert episode.length == 5
    right = egodex["truths"]["right"]
    error_mm, error_deg = check_hand(episode.state, episode.hand_mask, right, "right", frames=np.arange(0, FRAMES, 2))  # fmt: skip
    assert error_mm < 1.0
    assert error_deg < 0.5
    root = write_episodes(tmp_path / "egodex", [episode], fps=15.0, source="egodex", embodiment="human_mano", progress=False)  # fmt: skip
    back = LeRobotDataset(root).episode(0, with_images=False)
    np.testing.assert_array_equal(back.state, episode.state)
    assert back.instruction == "close the box"


def test_wrong_layout_names_the_missing_joint(tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("egodex")
    tmp_path.joinpath("part1").mkdir()
    with pytest.raises(FileNotFoundError, match="no <part>/<task_name>/<k>.hdf5"):
        source.check_layout(tmp_path)
    truths = {"left": hand_motion(FRAMES, "left"), "right": hand_motion(FRAMES, "right", seed=1)}
    _write(tmp_path / "part1" / "task" / "0.hdf5", truths, drop="transforms/rightMiddleFingerKnuckle")  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['rightMiddleFingerKnuckle'\]"):
        source.check_layout(tmp_path)
    (tmp_path / "part1" / "task" / "0.mp4").unlink()
    _write(tmp_path / "part1" / "task" / "0.hdf5", truths)
    (tmp_path / "part1" / "task" / "0.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="0.mp4"):
        source.load_episode(tmp_path, "part1/task/0")
