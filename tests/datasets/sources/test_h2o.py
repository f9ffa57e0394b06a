"""H2O adapter: numeric conversion of a fixture written in H2O's layout, layout errors."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_h2o import write_h2o
from source_fixtures import check_hand

from metis_core.registry import DATASET_SOURCES
from metis_datasets.sources.h2o import H2OConfig, H2OSource


def test_registered() -> None:
    assert DATASET_SOURCES.get("h2o") is H2OSource


def test_converts_to_ground_truth(tmp_path) -> None:
    truths = write_h2o(tmp_path, frames=12)
    source = H2OSource(H2OConfig(image_height=32, image_width=48))
    source.check_layout(tmp_path)
    assert source.list_episodes(tmp_path) == ["subject1/h1/0", "subject1/h1/1"]
    episode = source.load_episode(tmp_path, "subject1/h1/0")
    truth = truths["subject1/h1/0"]
    assert episode.fps == 30.0
    assert episode.length == 12
    # state = the pose at t; action = the pose at t + 1, so a hand present at t but not t + 1
    # is masked at t (left hand: unannotated at 3, 4 -> masked at 2, 3, 4).
    mask_truth_left = truth["left"].present & np.append(truth["left"].present[1:], True)
    np.testing.assert_array_equal(episode.hand_mask[:, 0], mask_truth_left)
    for side in ("left", "right"):
        hand = truth[side]
        hand.present = hand.present & np.append(hand.present[1:], True)
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, hand, side)
        assert error_mm < 1.0
        assert error_deg < 0.5
        following = np.append(np.arange(1, 12), 11)
        error_mm, error_deg = check_hand(episode.action, episode.hand_mask, _shifted(hand, following), side)  # fmt: skip
        assert error_mm < 1.0
        assert error_deg < 0.5
    assert [(s.start, s.end, s.text) for s in episode.subtasks] == [(2, 7, "grab milk"), (7, 12, "pour milk")]  # fmt: skip
    assert episode.instruction == "grab milk, then pour milk"
    assert episode.images["ego"].shape == (12, 32, 48, 3)
    # 1280x720 resized to 57x32 (cover 48x32), then 4 columns cropped on the left
    k = np.asarray(episode.metadata["camera_intrinsics"])
    np.testing.assert_allclose(k[0], [636.6 * 57 / 1280, 0, (635.3 + 0.5) * 57 / 1280 - 0.5 - 4], rtol=1e-12)  # fmt: skip
    np.testing.assert_allclose(k[1], [0, 636.6 * 32 / 720, (366.8 + 0.5) * 32 / 720 - 0.5], rtol=1e-12)  # fmt: skip


def _shifted(hand, order):
    from source_fixtures import HandTruth

    return HandTruth(hand.keypoints[order], hand.wrist[order], hand.rotation[order], hand.fingertips[order], hand.present)  # fmt: skip


def test_resamples_to_target_rate(tmp_path) -> None:
    truths = write_h2o(tmp_path, frames=13, sequences=("subject2/k1/3",), images=False)
    episode = H2OSource(H2OConfig(target_fps=15.0, with_images=False)).load_episode(tmp_path, "subject2/k1/3")  # fmt: skip
    assert episode.fps == 15.0
    assert episode.length == 7
    right = truths["subject2/k1/3"]["right"]
    # every second source frame coincides with a new frame
    picked = np.arange(0, 13, 2)
    error_mm, error_deg = check_hand(
        episode.state, episode.hand_mask, right, "right", frames=picked
    )
    assert error_mm < 1.0
    assert error_deg < 0.5
    assert [(s.start, s.end) for s in episode.subtasks] == [(1, 4), (4, 7)]


def test_wrong_layout_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"subject1/h1/0/cam4/hand_pose/000000.txt"):
        H2OSource().check_layout(tmp_path)
    write_h2o(tmp_path, frames=3, sequences=("subject1/h1/0",), images=False)
    (tmp_path / "subject1/h1/0/cam4/cam_intrinsics.txt").unlink()
    with pytest.raises(FileNotFoundError, match="cam_intrinsics.txt"):
        H2OSource().check_layout(tmp_path)
    write_h2o(tmp_path, frames=3, sequences=("subject1/h1/0",), images=False)
    (tmp_path / "subject1/h1/0/cam4/hand_pose/000000.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match=r"000000.txt: expected 128 numbers, found 3"):
        H2OSource().check_layout(tmp_path)
