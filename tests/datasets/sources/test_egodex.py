"""EgoDex adapter: an episode written in EgoDex's HDF5 + MP4 layout, checked against ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures_egodex import FRAMES, write_egodex
from source_fixtures import HandTruth, check_hand, hand_motion

from metis_core.registry import DATASET_SOURCES
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes


@pytest.fixture(scope="module")
def egodex(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("egodex")
    truths = {"left": hand_motion(FRAMES, "left", seed=3, absent=(4,)), "right": hand_motion(FRAMES, "right", seed=4)}  # fmt: skip
    write_egodex(root / "part_test" / "box_open_close" / "0.hdf5", truths)
    write_egodex(root / "part_test" / "box_open_close" / "1.hdf5", truths, confidences=False)
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
    write_egodex(tmp_path / "part1" / "task" / "0.hdf5", truths, drop="transforms/rightMiddleFingerKnuckle")  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['rightMiddleFingerKnuckle'\]"):
        source.check_layout(tmp_path)
    (tmp_path / "part1" / "task" / "0.mp4").unlink()
    write_egodex(tmp_path / "part1" / "task" / "0.hdf5", truths)
    (tmp_path / "part1" / "task" / "0.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="0.mp4"):
        source.load_episode(tmp_path, "part1/task/0")
