"""ARCTIC adapter: splits (precomputed joints) and raw_seqs (stand-in MANO layer) fixtures."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_arctic import K_EGO, fake_mano_joints, write_arctic_raw, write_arctic_splits
from source_fixtures import check_hand

from metis_core.registry import DATASET_SOURCES
from metis_datasets.sources._common import load_pickled_npy
from metis_datasets.sources.arctic import ArcticConfig, ArcticSource, instruction_for


def test_registered_and_instruction() -> None:
    assert DATASET_SOURCES.get("arctic") is ArcticSource
    assert instruction_for("espressomachine_use_01") == "use the espresso machine"
    assert instruction_for("box_grab_01") == "grab the box"


def test_splits_to_ground_truth(tmp_path) -> None:
    truths = write_arctic_splits(tmp_path, frames=10)
    source = ArcticSource(ArcticConfig(splits="p2_val", image_height=100, image_width=140))
    source.check_layout(tmp_path)
    assert source.list_episodes(tmp_path) == ["s01/box_use_01", "s01/laptop_grab_02"]
    episode = source.load_episode(tmp_path, "s01/laptop_grab_02")
    truth = truths["s01/laptop_grab_02"]
    for side in ("left", "right"):
        hand = truth[side]
        hand.present = hand.present & np.append(hand.present[1:], True)
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, hand, side)
        assert error_mm < 1.0
        assert error_deg < 0.5
    assert not episode.hand_mask[3, 0]
    assert not episode.hand_mask[4, 0]
    assert episode.hand_mask[5, 0]
    assert episode.instruction == "grab the laptop"
    assert episode.images["ego"].shape == (10, 100, 140, 3)
    # 280x200 frames → 140x100: K halves (pixel centres aligned)
    k = np.asarray(episode.metadata["camera_intrinsics"])
    np.testing.assert_allclose(k[0], [600.0, 0.0, (1400 + 0.5) * 0.5 - 0.5])
    # image at frame t is jpg number t + ioi_offset, whose grey level the fixture set to 20 t
    np.testing.assert_allclose(episode.images["ego"][:, 50, 70, 0], 20 * np.arange(10), atol=2)


def test_raw_seqs_with_stand_in_mano_layer(tmp_path, monkeypatch) -> None:
    truth = write_arctic_raw(tmp_path, frames=10)
    (tmp_path / "mano").mkdir()
    for name in ("MANO_RIGHT.pkl", "MANO_LEFT.pkl"):
        (tmp_path / "mano" / name).write_bytes(b"user-provided")
    source = ArcticSource(ArcticConfig(annotations="raw_seqs", mano_model_dir=str(tmp_path / "mano"), with_images=False))  # fmt: skip
    monkeypatch.setattr(source, "mano_joints", fake_mano_joints)
    source.check_layout(tmp_path)
    assert source.list_episodes(tmp_path) == ["s02/ketchup_use_03"]
    episode = source.load_episode(tmp_path, "s02/ketchup_use_03")
    for side in ("left", "right"):
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth[side], side)
        assert error_mm < 1.0
        assert error_deg < 0.5
    np.testing.assert_allclose(episode.metadata["camera_intrinsics"], K_EGO)


def test_raw_seqs_needs_mano_dir() -> None:
    with pytest.raises(ValueError, match="mano_model_dir"):
        ArcticConfig(annotations="raw_seqs")


def test_wrong_layout_names_what_is_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"meta/misc.json"):
        ArcticSource().check_layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"splits/p2_train.npy"):
        ArcticSource(ArcticConfig(with_images=False)).check_layout(tmp_path)
    (tmp_path / "splits").mkdir()
    np.save(tmp_path / "splits" / "p2_val.npy", {"data_dict": {"s01/box_use_01": {"cam_coord": {"joints.right": np.zeros((2, 10, 21, 3))}, "params": {"K_ego": np.eye(3)}}}}, allow_pickle=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['joints.left'\]"):
        ArcticSource(ArcticConfig(splits="p2_val", with_images=False)).check_layout(tmp_path)


def test_pickled_npy_reader_refuses_code(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    np.save(tmp_path / "ok.npy", {"a": np.arange(3)}, allow_pickle=True)
    np.testing.assert_array_equal(load_pickled_npy(tmp_path / "ok.npy")["a"], np.arange(3))
    np.save(tmp_path / "evil.npy", np.array(Evil(), dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        load_pickled_npy(tmp_path / "evil.npy")


def test_resamples_to_target_rate(tmp_path) -> None:
    truths = write_arctic_splits(tmp_path, frames=11, invalid_left=())
    source = ArcticSource(ArcticConfig(splits="p2_val", target_fps=15.0, with_images=False))
    episode = source.load_episode(tmp_path, "s01/box_use_01")
    assert (episode.fps, episode.length) == (15.0, 6)
    # new frame k is source frame 2k
    for side in ("left", "right"):
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truths["s01/box_use_01"][side], side, frames=np.arange(0, 11, 2))  # fmt: skip
        assert error_mm < 1.0
        assert error_deg < 0.5
