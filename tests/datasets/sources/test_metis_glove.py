"""metis_glove: the recorder-side writer, then the adapter, checked against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_metis_glove import EGO_SIZE, K_EGO, calibration, write_metis_glove
from source_fixtures import HandTruth, check_hand

from metis_core.registry import DATASET_SOURCES
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes
from metis_datasets.sources._common import SkipEpisode
from metis_datasets.sources.metis_glove import (
    GloveRecordingWriter,
    MetisGloveSource,
    manus_node_order,
)
from metis_embodiments.human_manus.embodiment_human_manus import MANUS_KEYPOINT_NAMES

FRAMES = 16


def _usable(truth: HandTruth) -> HandTruth:
    """Presence of a converted frame: usable at ``t`` and at ``t + 1`` (the action)."""
    return HandTruth(truth.keypoints, truth.wrist, truth.rotation, truth.fingertips, truth.present & np.append(truth.present[1:], True))  # fmt: skip


@pytest.fixture(scope="module")
def glove(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("metis_glove")
    truths = write_metis_glove(root, frames=FRAMES)
    return {"root": root, "truths": truths}


def test_writer_output_is_the_documented_layout(glove: dict) -> None:
    folder = glove["root"] / "ep_0001"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "frames.parquet",
        "meta.json",
        "subtasks.json",
        "videos",
        "videos/ego.mp4",
        "videos/timestamps.json",
        "videos/top.mp4",
    ]
    assert not [p for p in glove["root"].iterdir() if p.name.startswith(".")]  # no staging left
    meta = json.loads((folder / "meta.json").read_text())
    assert (meta["format"], meta["version"], meta["rate_hz"]) == ("metis_glove", 1, 20.0)
    assert meta["keypoint_names"] == list(MANUS_KEYPOINT_NAMES)
    np.testing.assert_array_equal(meta["cameras"]["ego"]["intrinsics"], K_EGO)
    np.testing.assert_allclose(meta["calibration"]["head_tracker_to_ego_camera"], calibration()["head_tracker_to_ego_camera"][:3])  # fmt: skip
    table = pq.read_table(folder / "frames.parquet")
    assert table.num_rows == FRAMES
    assert table.schema.field("left_keypoints").type == pa.list_(pa.float32(), 75)
    assert table.schema.field("head_pose").type == pa.list_(pa.float64(), 12)
    np.testing.assert_allclose(np.diff(table.column("timestamp_s").to_numpy()), 0.05, atol=1e-9)
    assert table.column("left_valid").to_pylist()[5] is False
    assert table.column("right_wrist_valid").to_pylist()[9] is False


def test_converts_to_ground_truth_at_the_rig_rate(glove: dict) -> None:
    source = DATASET_SOURCES.create("metis_glove", target_fps=20.0, image_height=48, image_width=64)  # fmt: skip
    assert isinstance(source, MetisGloveSource)
    source.check_layout(glove["root"])
    assert source.list_episodes(glove["root"]) == ["ep_0001"]
    episode = source.load_episode(glove["root"], "ep_0001")
    assert (episode.length, episode.fps, episode.embodiment) == (FRAMES, 20.0, "human_manus")
    assert episode.instruction == "put the cup in the basket"
    assert [(s.start, s.end, s.text) for s in episode.subtasks] == [(2, 8, "reach for the cup"), (8, 15, "lift the cup")]  # fmt: skip
    # invalid left glove at tick 5 (one-hand frames 4, 5); lost right tracker at tick 9 (8, 9)
    np.testing.assert_array_equal(np.flatnonzero(~episode.hand_mask[:, 0]), [4, 5])
    np.testing.assert_array_equal(np.flatnonzero(~episode.hand_mask[:, 1]), [8, 9])
    following = np.append(np.arange(1, FRAMES), FRAMES - 1)
    for side in ("left", "right"):
        truth = _usable(glove["truths"][side])
        error_mm, error_deg = check_hand(episode.state, episode.hand_mask, truth, side)
        assert error_mm < 1.0, (side, error_mm)
        assert error_deg < 0.5, (side, error_deg)
        ahead = HandTruth(truth.keypoints[following], truth.wrist[following], truth.rotation[following], truth.fingertips[following], truth.present)  # fmt: skip
        error_mm, error_deg = check_hand(episode.action, episode.hand_mask, ahead, side)
        assert error_mm < 1.0, (side, error_mm)
        assert error_deg < 0.5, (side, error_deg)
    # ego frame k (grey 15 k, 4 ms after tick k) is the nearest frame of tick k
    assert episode.images["ego"].shape == (FRAMES, *EGO_SIZE, 3)
    np.testing.assert_allclose(episode.images["ego"][:, 24, 32, 0], 15 * np.arange(FRAMES), atol=3)  # fmt: skip
    np.testing.assert_allclose(episode.metadata["camera_intrinsics"], K_EGO)
    assert episode.metadata["cameras"] == ["ego", "top"]


def test_resampled_to_30hz(glove: dict, tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("metis_glove", with_images=False)
    episode = source.load_episode(glove["root"], "ep_0001")
    assert (episode.fps, episode.length) == (30.0, 23)  # 0.75 s
    assert [(s.start, s.end) for s in episode.subtasks] == [(3, 12), (12, 23)]
    # every third 30 Hz frame is every second 20 Hz tick
    ticks, frames = np.arange(0, FRAMES, 2), np.arange(0, 23, 3)
    for side in ("left", "right"):
        truth = glove["truths"][side]
        usable = episode.hand_mask[frames, 0 if side == "left" else 1]
        picked = HandTruth(truth.keypoints, truth.wrist, truth.rotation, truth.fingertips, np.zeros(FRAMES, bool))  # fmt: skip
        picked.present[ticks] = usable
        error_mm, error_deg = check_hand(episode.state[frames], episode.hand_mask[frames], picked, side, frames=ticks)  # fmt: skip
        assert error_mm < 1.0
        assert error_deg < 0.5
    # interpolation never bridges an invalid tick: frames within 50 ms of it are masked
    assert not episode.hand_mask[[6, 7, 8], 0].any()
    assert episode.hand_mask[[0, 3, 9, 12], 0].all()
    assert not episode.hand_mask[[12, 13, 14], 1].any()
    root = write_episodes(tmp_path / "glove", [episode], fps=30.0, source="metis_glove", embodiment="human_manus", progress=False)  # fmt: skip
    back = LeRobotDataset(root).episode(0, with_images=False)
    np.testing.assert_array_equal(back.state, episode.state)
    assert [s.text for s in back.subtasks] == ["reach for the cup", "lift the cup"]


def test_lost_head_tracker_masks_both_hands(tmp_path: Path) -> None:
    write_metis_glove(tmp_path, frames=8, left_invalid=(), right_tracker_lost=(), head_lost=(3,), video=False)  # fmt: skip
    episode = MetisGloveSource(DATASET_SOURCES.get("metis_glove").config_class(target_fps=20.0, with_images=False)).load_episode(tmp_path, "ep_0001")  # fmt: skip
    np.testing.assert_array_equal(np.flatnonzero(~episode.hand_mask.all(axis=1)), [2, 3])
    assert not episode.hand_mask[[2, 3]].any()


def test_writer_is_atomic_and_validates(tmp_path: Path) -> None:
    common = {"instruction": "x", "ego_intrinsics": K_EGO, "ego_size": EGO_SIZE, "calibration": calibration()}  # fmt: skip
    pose = np.eye(4)[:3]

    def crash_mid_recording() -> None:
        with GloveRecordingWriter(tmp_path, "ep_crash", **common) as recording:
            recording.add_frame(0.0, left_keypoints=np.zeros((25, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=pose)  # fmt: skip
            raise RuntimeError("recorder crashed")

    with pytest.raises(RuntimeError, match="recorder crashed"):
        crash_mid_recording()
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no staging directory left
    with GloveRecordingWriter(tmp_path, "ep_bad", **common) as recording:
        with pytest.raises(ValueError, match=r"left_keypoints: expected finite \(25, 3\)"):
            recording.add_frame(0.0, left_keypoints=np.zeros((21, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=pose)  # fmt: skip
        recording.add_frame(0.0, left_keypoints=np.zeros((25, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=pose)  # fmt: skip
        with pytest.raises(ValueError, match="does not come after 0.0"):
            recording.add_frame(0.0, left_keypoints=np.zeros((25, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=pose)  # fmt: skip
        with pytest.raises(ValueError, match="head_pose: expected a finite 3x4"):
            recording.add_frame(0.1, left_keypoints=np.zeros((25, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=np.eye(3))  # fmt: skip
        with pytest.raises(ValueError, match="camera 'top' was not declared"):
            recording.add_video_frame("top", 0.0, np.zeros((*EGO_SIZE, 3), np.uint8))
        recording.add_frame(0.1, left_keypoints=np.zeros((25, 3)), right_keypoints=np.zeros((25, 3)), left_wrist_pose=pose, right_wrist_pose=pose, head_pose=pose)  # fmt: skip
    assert (tmp_path / "ep_bad" / "frames.parquet").is_file()
    with pytest.raises(FileExistsError, match="ep_bad already exists"):
        GloveRecordingWriter(tmp_path, "ep_bad", **common).__enter__()
    with pytest.raises(ValueError, match="calibration lacks \\['head_tracker_to_ego_camera'\\]"):
        GloveRecordingWriter(tmp_path, "ep_2", **{**common, "calibration": {k: v for k, v in calibration().items() if k.startswith(("left", "right"))}})  # fmt: skip
    with pytest.raises(ValueError, match="episode_id '../x'"):
        GloveRecordingWriter(tmp_path, "../x", **common)


def test_manus_nodes_are_mapped_by_chain_and_joint_type() -> None:
    names = [("ChainType_Hand", "FingerJointType_Invalid")]
    names += [("ChainType_FingerThumb", f"FingerJointType_{j}") for j in ("Metacarpal", "Proximal", "Distal", "Tip")]  # fmt: skip
    for finger in ("Index", "Middle", "Ring", "Pinky"):
        names += [(f"ChainType_Finger{finger}", f"FingerJointType_{j}") for j in ("Metacarpal", "Proximal", "Intermediate", "Distal", "Tip")]  # fmt: skip
    shuffled = np.random.default_rng(0).permutation(25)
    order = manus_node_order([names[i] for i in shuffled])
    np.testing.assert_array_equal(shuffled[order], np.arange(25))
    with pytest.raises(ValueError, match=r"missing \['little_tip'\]"):
        manus_node_order(names[:-1])


def test_wrong_layout_names_the_missing_file_or_key(glove: dict, tmp_path: Path) -> None:
    source = MetisGloveSource()
    with pytest.raises(FileNotFoundError, match="expected a metis_glove dataset"):
        source.check_layout(tmp_path / "nowhere")
    (tmp_path / "h2o_like" / "subject1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no <episode>/meta.json; found \['subject1'\]"):
        source.check_layout(tmp_path / "h2o_like")
    write_metis_glove(tmp_path / "a", frames=4, left_invalid=(), right_tracker_lost=(), video=False)  # fmt: skip
    (tmp_path / "a" / "ep_0001" / "frames.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="ep_0001/frames.parquet is missing"):
        source.check_layout(tmp_path / "a")
    write_metis_glove(tmp_path / "b", frames=4, left_invalid=(), right_tracker_lost=(), video=False)  # fmt: skip
    frames = tmp_path / "b" / "ep_0001" / "frames.parquet"
    pq.write_table(pq.read_table(frames).drop_columns(["head_pose"]), frames)
    with pytest.raises(ValueError, match=r"frames.parquet: missing key\(s\) \['head_pose'\]"):
        source.check_layout(tmp_path / "b")
    write_metis_glove(tmp_path / "c", frames=4, left_invalid=(), right_tracker_lost=(), video=False)  # fmt: skip
    meta_path = tmp_path / "c" / "ep_0001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["calibration"]["head_tracker_to_ego_camera"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"calibration: missing key\(s\) \['head_tracker_to_ego_camera'\]"):  # fmt: skip
        source.check_layout(tmp_path / "c")
    meta_path.write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ValueError, match="version 2; this reader expects 'metis_glove' version 1"):
        source.check_layout(tmp_path / "c")
    write_metis_glove(tmp_path / "d", frames=4, left_invalid=(), right_tracker_lost=(), video=False)  # fmt: skip
    with pytest.raises(SkipEpisode, match="ego video .*ep_0001/videos/ego.mp4 is missing"):
        DATASET_SOURCES.create("metis_glove").load_episode(tmp_path / "d", "ep_0001")
