"""HoloAssist adapter: camera/axis conversion, tracking masks, fine-grained subtasks."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_holoassist import K_PV, write_holoassist
from source_fixtures import check_hand

from metis_core.registry import DATASET_SOURCES
from metis_datasets.sources.holoassist import HoloAssistConfig, HoloAssistSource


def test_converts_to_ground_truth(tmp_path) -> None:
    assert DATASET_SOURCES.get("holoassist") is HoloAssistSource
    truth = write_holoassist(tmp_path, frames=12)
    source = HoloAssistSource(HoloAssistConfig(image_height=28, image_width=50))
    source.check_layout(tmp_path)
    assert source.list_episodes(tmp_path) == ["R007-7July-DSLR"]
    episode = source.load_episode(tmp_path, "R007-7July-DSLR")
    assert episode.length == 12
    for side in ("left", "right"):
        hand = truth[side]
        hand.present = hand.present & np.append(hand.present[1:], True)
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, hand, side)
        assert error_mm < 1.0
        assert error_deg < 0.5
    assert not episode.hand_mask[4, 1]
    assert not episode.hand_mask[5, 1]
    assert episode.instruction == "assemble the printer"
    assert [(s.start, s.end, s.text) for s in episode.subtasks] == [(0, 6, "grab cartridge"), (6, 12, "insert cartridge")]  # fmt: skip
    assert episode.metadata["coarse_actions"][0]["text"] == "assemble printer"
    # 896x504 K → 100x56 video (x 0.1116) → 50x28 stored (x 0.5)
    k = np.asarray(episode.metadata["camera_intrinsics"])
    assert k[0, 0] == pytest.approx(K_PV[0, 0] * 100 / 896 * 0.5, rel=1e-9)
    np.testing.assert_allclose(episode.images["ego"][:, 14, 25, 0].astype(float), np.arange(12) * 20, atol=6)  # fmt: skip


def test_wrong_layout(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"Export_py/Hands/Right_sync.txt"):
        HoloAssistSource().check_layout(tmp_path)
    write_holoassist(tmp_path, frames=4)
    path = tmp_path / "R007-7July-DSLR/Export_py/Video/Pose_sync.txt"
    path.write_text("1.0\t2\t3\n")
    with pytest.raises(ValueError, match=r"Pose_sync.txt:1: expected 18 tab-separated columns, found 3"):  # fmt: skip
        HoloAssistSource().check_layout(tmp_path)
    (tmp_path / "R007-7July-DSLR/Export_py/Video/Intrinsics.txt").unlink()
    with pytest.raises(FileNotFoundError, match="Intrinsics.txt"):
        HoloAssistSource().check_layout(tmp_path)


def test_resamples_to_target_rate(tmp_path) -> None:
    truth = write_holoassist(tmp_path, frames=13, untracked_right=())
    source = HoloAssistSource(HoloAssistConfig(target_fps=15.0, with_images=False))
    episode = source.load_episode(tmp_path, "R007-7July-DSLR")
    assert (episode.fps, episode.length) == (15.0, 7)
    for side in ("left", "right"):
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth[side], side, frames=np.arange(0, 13, 2))  # fmt: skip
        assert error_mm < 1.0
        assert error_deg < 0.5
    # fine-grained actions keep their times: [0, 0.2) s and [0.2, 0.4) s at 15 Hz
    assert [(s.start, s.end) for s in episode.subtasks] == [(0, 3), (3, 6)]
