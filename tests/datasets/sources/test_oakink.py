"""OakInk-Image adapter: right hand in a static camera, gaps masked, layout errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fixtures_oakink import SEQ, write_oakink
from source_fixtures import check_hand

from metis_core.registry import DATASET_SOURCES
from metis_datasets.sources.oakink import OakInkConfig, OakInkSource, info_string


def test_converts_to_ground_truth(tmp_path) -> None:
    assert DATASET_SOURCES.get("oakink") is OakInkSource
    assert info_string(["A/b", 0, 5, 2]) == "A__b__0__5__2"
    truth = write_oakink(tmp_path)
    source = OakInkSource(OakInkConfig(image_height=48, image_width=84))
    source.check_layout(tmp_path)
    assert source.list_episodes(tmp_path) == [f"{SEQ}/0"]
    episode = source.load_episode(tmp_path, f"{SEQ}/0")
    assert episode.length == 14
    assert episode.instruction == "lift up the mug"
    # frames 6..11 are not annotated: a gap of 7 capture frames > max_gap_frames=3 → masked;
    # frame 5's action would be frame 6, so 5 is masked too
    expected = np.ones(14, bool)
    expected[5:12] = False
    np.testing.assert_array_equal(episode.hand_mask[:, 1], expected)
    assert not episode.hand_mask[:, 0].any()
    truth.present = expected
    error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth, "right")
    assert error_mm < 1.0
    assert error_deg < 0.5
    assert episode.images["ego"].shape == (14, 48, 84, 3)


def test_pickles_are_read_without_running_code(tmp_path) -> None:
    write_oakink(tmp_path, frames=(0, 1))
    info = f"{SEQ}__0__0__0".replace("/", "__")

    class Evil:
        def __reduce__(self):
            return (eval, ("1",))

    with (tmp_path / "image/anno/hand_j" / f"{info}.pkl").open("wb") as handle:
        pickle.dump(Evil(), handle)
    with pytest.raises(ValueError, match="refusing to unpickle builtins.eval"):
        OakInkSource().check_layout(tmp_path)


def test_wrong_layout(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"image/anno/seq_all.json"):
        OakInkSource().check_layout(tmp_path)
    write_oakink(tmp_path, frames=(0, 1))
    (tmp_path / "image/anno/cam_intr" / f"{SEQ.replace('/', '__')}__0__0__0.pkl").unlink()
    with pytest.raises(FileNotFoundError, match=r"cam_intr/A01001_0003_0000__2021-09-26-19-59-58__0__0__0.pkl"):  # fmt: skip
        OakInkSource().check_layout(tmp_path)
    (tmp_path / "image/anno/seq_all.json").write_text('[["no-slash", 0, 1, 0]]')
    with pytest.raises(ValueError, match="entry 0: expected"):
        OakInkSource(OakInkConfig(camera=1)).check_layout(tmp_path)


def test_resamples_to_target_rate(tmp_path) -> None:
    truth = write_oakink(tmp_path, frames=tuple(range(9)))
    episode = OakInkSource(OakInkConfig(target_fps=15.0, with_images=False)).load_episode(tmp_path, f"{SEQ}/0")  # fmt: skip
    assert (episode.fps, episode.length) == (15.0, 5)
    assert episode.hand_mask[:, 1].all()
    error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth, "right", frames=np.arange(0, 9, 2))  # fmt: skip
    assert error_mm < 1.0
    assert error_deg < 0.5
