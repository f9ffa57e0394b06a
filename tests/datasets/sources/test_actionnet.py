"""Fourier ActionNet adapter: an episode written in ActionNet's layout, checked against ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_actionnet import FRAMES, START, ULID, actionnet_scene, write_actionnet

from metis_core.contract import LEFT, RIGHT
from metis_core.registry import DATASET_SOURCES
from metis_core.rotations import geodesic_angle, rot6d_to_matrix
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes
from metis_datasets.sources.actionnet import parse_frame_time


def _errors(vectors: np.ndarray, truth: dict, rows: np.ndarray) -> tuple[float, float]:
    worst_mm, worst_deg = 0.0, 0.0
    for side, layout in (("left", LEFT), ("right", RIGHT)):
        expected = truth[side]
        wrist_mm = np.linalg.norm(vectors[:, layout.wrist_position] - expected["wrist"][rows], axis=-1) * 1000  # fmt: skip
        tips_mm = np.linalg.norm(vectors[:, layout.fingertips].reshape(-1, 5, 3) - expected["tips"][rows], axis=-1) * 1000  # fmt: skip
        rotation = rot6d_to_matrix(
            torch.tensor(vectors[:, layout.wrist_rot6d], dtype=torch.float64)
        )
        angle = np.degrees(
            geodesic_angle(rotation, torch.tensor(expected["rotation"][rows])).numpy()
        )
        worst_mm = max(worst_mm, float(wrist_mm.max()), float(tips_mm.max()))
        worst_deg = max(worst_deg, float(angle.max()))
    return worst_mm, worst_deg


@pytest.fixture(scope="module")
def actionnet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("actionnet")
    scene = actionnet_scene(0)
    write_actionnet(root, scene)
    return {"root": root, **scene}


def test_wrists_and_fingertips_land_on_ground_truth(actionnet: dict) -> None:
    source = DATASET_SOURCES.create("actionnet", target_fps=60.0, image_height=80, image_width=128)
    source.check_layout(actionnet["root"])
    assert source.list_episodes(actionnet["root"]) == [ULID]
    episode = source.load_episode(actionnet["root"], ULID)
    assert episode.instruction == "put the cup on the plate"
    assert episode.embodiment == "fourier"
    assert episode.hand_mask.all()
    # 60 Hz from the first stamp: sample 5 repeated sample 4 and was dropped, so frame k of the
    # output is sample k for k < 5 and the interpolation of the true samples around it after.
    kept = np.delete(np.arange(FRAMES), 5)
    exact = np.array([0, 1, 2, 3, 4, 6, 7])  # output frames that coincide with a kept sample
    rows = np.searchsorted(np.delete(START + np.arange(FRAMES) / 60.0, 5), START + exact / 60.0)
    mm, deg = _errors(episode.state[exact].astype(np.float64), actionnet["truth"], kept[rows])
    assert mm < 1.0, (mm, deg)
    assert deg < 0.5, (mm, deg)
    # Video frames at 30 Hz are matched by nearest time: output frame k shows video frame ~k/2.
    green = episode.images["ego"][:, 40, 64, 1].astype(int)
    assert abs(green[0] - 0) < 8
    assert abs(green[8] - 4 * 12) < 8


def test_resampled_to_30hz_and_written_as_lerobot(actionnet: dict, tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("actionnet", image_height=80, image_width=128)
    episodes = list(source.iter_episodes(actionnet["root"]))
    episode = episodes[0]
    assert episode.fps == 30.0
    assert episode.length == 20
    # Even robot samples (60 Hz) coincide with 30 Hz frames; sample 4 is the first after the gap.
    mm, deg = _errors(episode.action[[0, 1, 4, 10]].astype(np.float64), actionnet["truth"], np.array([0, 2, 8, 20]))  # fmt: skip
    assert mm < 1.0
    assert deg < 0.5
    root = write_episodes(tmp_path / "actionnet", episodes, fps=30.0, source="actionnet", embodiment="fourier", camera_intrinsics=episode.metadata["camera_intrinsics"], image_shape=(80, 128), progress=False)  # fmt: skip
    back = LeRobotDataset(root).episode(0, with_images=False)
    np.testing.assert_array_equal(back.state, episode.state)
    assert back.instruction == "put the cup on the plate"


def test_frame_times_in_both_published_forms() -> None:
    assert parse_frame_time("2025-01-09T05-20-00_250000") == pytest.approx(1736400000.25)
    assert parse_frame_time(1736400000250000) == pytest.approx(1736400000.25)
    with pytest.raises(ValueError, match="YYYY-mm-dd"):
        parse_frame_time("yesterday")


def test_wrong_layout_and_units_are_named(actionnet: dict, tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("actionnet", with_images=False)
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        source.check_layout(tmp_path)
    write_actionnet(tmp_path / "a", actionnet, drop="action/pose")
    with pytest.raises(ValueError, match=r"action: missing key\(s\) \['pose'\]"):
        source.check_layout(tmp_path / "a")
    write_actionnet(tmp_path / "b", actionnet, hand_width=24)
    with pytest.raises(ValueError, match="12-DoF hand is not supported"):
        source.check_layout(tmp_path / "b")
    urdf_signs = dict(actionnet)
    urdf_signs["hand"] = actionnet["hand"] * np.array([-1, -1, -1, -1, 1, -1] * 2)
    write_actionnet(tmp_path / "c", urdf_signs)
    with pytest.raises(ValueError, match="hand_units='fourier_urdf'"):
        source.load_episode(tmp_path / "c", ULID)
    converted = DATASET_SOURCES.create("actionnet", with_images=False, hand_units="fourier_urdf", target_fps=60.0).load_episode(tmp_path / "c", ULID)  # fmt: skip
    mm, _ = _errors(converted.state[:5].astype(np.float64), actionnet["truth"], np.arange(5))
    assert mm < 1.0
