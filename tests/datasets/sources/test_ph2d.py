"""PH2D adapter: human and H1 + Inspire fixtures in the 128-D layout, checked against ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_ph2d import FRAMES, TASK, ph2d_scene, write_ph2d_episode

from metis_core.contract import LEFT, RIGHT
from metis_core.registry import DATASET_SOURCES
from metis_core.rotations import geodesic_angle, rot6d_to_matrix
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes


@pytest.fixture(scope="module")
def ph2d_root(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ph2d")
    human, robot = ph2d_scene(0, robot=False), ph2d_scene(1, robot=True)
    folder = root / "processed" / TASK
    frames = write_ph2d_episode(folder / "processed_episode_0.hdf5", human, "human_avp")
    write_ph2d_episode(folder / "processed_episode_1.hdf5", robot, "h1_inspire")
    return {"root": root, "human": human, "robot": robot, "frames": frames}


def _errors(vectors: np.ndarray, truth: dict) -> tuple[float, float]:
    worst_mm, worst_deg = 0.0, 0.0
    for side, layout in (("left", LEFT), ("right", RIGHT)):
        expected = truth[side]
        wrist_mm = np.linalg.norm(vectors[:, layout.wrist_position] - expected["wrist"], axis=-1) * 1000  # fmt: skip
        tips_mm = np.linalg.norm(vectors[:, layout.fingertips].reshape(-1, 5, 3) - expected["tips"], axis=-1) * 1000  # fmt: skip
        rotation = rot6d_to_matrix(
            torch.tensor(vectors[:, layout.wrist_rot6d], dtype=torch.float64)
        )
        angle = np.degrees(geodesic_angle(rotation, torch.tensor(expected["rotation"])).numpy())
        worst_mm = max(worst_mm, float(wrist_mm.max()), float(tips_mm.max()))
        worst_deg = max(worst_deg, float(angle.max()))
    return worst_mm, worst_deg


@pytest.mark.parametrize("kind", ["human", "robot"])
def test_wrists_and_fingertips_land_on_ground_truth(ph2d_root: dict, kind: str) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64)
    source.check_layout(ph2d_root["root"])
    ids = source.list_episodes(ph2d_root["root"])
    assert ids == [f"{TASK}/processed_episode_0", f"{TASK}/processed_episode_1"]
    episode = source.load_episode(ph2d_root["root"], ids[0 if kind == "human" else 1])
    assert episode.embodiment == ("human_mano" if kind == "human" else "inspire")
    assert episode.instruction == "grasp the coke can"
    assert episode.hand_mask.all()
    mm, deg = _errors(episode.action.astype(np.float64), ph2d_root[kind]["truth"])
    assert mm < 1.0, (mm, deg)
    assert deg < 0.5, (mm, deg)


def test_images_are_rgb_and_resampling_keeps_exact_frames(ph2d_root: dict) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64, target_fps=15.0)
    episode = source.load_episode(ph2d_root["root"], f"{TASK}/processed_episode_1")
    assert episode.length == FRAMES // 2
    every_other = {s: {k: v[::2] for k, v in ph2d_root["robot"]["truth"][s].items()} for s in ("left", "right")}  # fmt: skip
    mm, deg = _errors(episode.action.astype(np.float64), every_other)
    assert mm < 1.0
    assert deg < 0.5
    ego = episode.images["ego"].astype(int)
    assert np.abs(ego[..., 0] - 200).max() < 12  # red stays red
    assert np.abs(ego[:, 20, 30, 2] - ph2d_root["frames"][::2, 20, 30, 2]).max() < 12


def test_write_and_read_back_with_lerobot(ph2d_root: dict, tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64, part="robot")
    episodes = list(source.iter_episodes(ph2d_root["root"]))
    assert len(episodes) == 1  # the human episode is skipped for part="robot"
    root = write_episodes(tmp_path / "ph2d_robot", episodes, fps=30.0, source="ph2d", embodiment="inspire", image_shape=(48, 64), progress=False)  # fmt: skip
    dataset = LeRobotDataset(root)
    back = dataset.episode(0, with_images=False)
    np.testing.assert_array_equal(back.action, episodes[0].action)
    mm, deg = _errors(back.action.astype(np.float64), ph2d_root["robot"]["truth"])
    assert mm < 1.0
    assert deg < 0.5


def test_wrong_layout_names_what_is_missing(tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("ph2d")
    with pytest.raises(FileNotFoundError, match="processed"):
        source.check_layout(tmp_path / "nowhere")
    (tmp_path / "processed" / TASK).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="processed_episode"):
        source.check_layout(tmp_path)
    write_ph2d_episode(tmp_path / "processed" / TASK / "processed_episode_0.hdf5", ph2d_scene(2, robot=False), "human_avp", drop="action")  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['action'\]"):
        source.check_layout(tmp_path)


def test_out_of_range_robot_hand_values_are_refused(tmp_path: Path) -> None:
    scene = ph2d_scene(3, robot=True)
    scene["array"][4, 109] = 3.0  # radians where normalised values are expected
    write_ph2d_episode(
        tmp_path / "processed" / TASK / "processed_episode_0.hdf5", scene, "h1_inspire"
    )
    source = DATASET_SOURCES.create("ph2d", with_images=False)
    with pytest.raises(ValueError, match="pinky_proximal_joint at frame 4"):
        source.load_episode(tmp_path, f"{TASK}/processed_episode_0")


def test_zeroed_hand_is_a_one_hand_frame(tmp_path: Path) -> None:
    scene = ph2d_scene(4, robot=False)
    scene["array"][[3, 4], 80:89] = 0.0  # the left wrist is not tracked at frames 3 and 4
    scene["array"][[3, 4], 10:28] = 0.0
    write_ph2d_episode(tmp_path / "processed" / TASK / "processed_episode_0.hdf5", scene, "human_avp")  # fmt: skip
    episode = DATASET_SOURCES.create("ph2d", with_images=False).load_episode(tmp_path, f"{TASK}/processed_episode_0")  # fmt: skip
    np.testing.assert_array_equal(np.flatnonzero(~episode.hand_mask[:, 0]), [3, 4])
    assert episode.hand_mask[:, 1].all()
    assert np.all(episode.action[[3, 4]][:, list(LEFT.indices)] == 0.0)
    keep = np.setdiff1d(np.arange(FRAMES), [3, 4])
    truth = {s: {k: v[keep] for k, v in scene["truth"][s].items()} for s in ("left", "right")}
    mm, deg = _errors(episode.action[keep].astype(np.float64), truth)
    assert mm < 1.0
    assert deg < 0.5
