"""LeRobot v3 storage: exact round trips, metadata, stats, resume, corrupt and foreign files."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metis_core.contract import ContractMismatchError
from metis_core.io import CorruptFileError, read_json, write_json
from metis_datasets import (
    IncompleteDatasetError,
    LeRobotDataset,
    LeRobotWriter,
    MixtureDataset,
    UnsupportedDatasetError,
    write_episodes,
)
from metis_datasets.synthetic import SyntheticConfig, SyntheticSource, make_dataset
from metis_datasets.synthetic.source_synthetic import generate_episode
from metis_datasets.video import VideoReader, encode_video


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ds") / "synth", episodes=5, seed=1, frames=24, episodes_per_file=2)  # fmt: skip


def test_round_trip_is_exact(synth_root: Path) -> None:
    dataset = LeRobotDataset(synth_root)
    config = SyntheticConfig(episodes=5, seed=1, frames=24)
    assert len(dataset.episodes) == 5
    assert len(dataset) == 120
    for index in range(5):
        original = generate_episode(config, index)
        loaded = dataset.episode(index)
        np.testing.assert_array_equal(loaded.state, original.state)
        np.testing.assert_array_equal(loaded.action, original.action)
        np.testing.assert_array_equal(loaded.hand_mask, original.hand_mask)
        assert loaded.instruction == original.instruction
        assert loaded.subtasks == original.subtasks
        assert loaded.metadata == json.loads(json.dumps(original.metadata))
        # lossy video: mean absolute error stays small
        error = np.abs(loaded.images["ego"].astype(int) - original.images["ego"].astype(int))
        assert loaded.images["ego"].shape == (24, 240, 320, 3)
        assert error.mean() < 4.0


def test_layout_and_metadata(synth_root: Path) -> None:
    info = read_json(synth_root / "meta" / "info.json")
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 5
    assert info["total_frames"] == 120
    record = info["features"]["observation.state"]["metis"]
    assert "metis" not in info  # LeRobot >= 0.5 drops unknown top-level keys; features survive
    assert record["contract"] == {"name": "metis-hand", "version": 1}
    assert record["source"] == "synthetic"
    assert record["embodiment"] == "human_mano"
    assert info["features"]["observation.state"]["shape"] == [48]
    assert info["features"]["observation.images.ego"]["dtype"] == "video"
    np.testing.assert_allclose(record["camera_intrinsics"]["ego"], [[307.5, 0, 160], [0, 307.5, 120], [0, 0, 1]])  # fmt: skip
    # many episodes per file: 5 episodes in 3 files
    assert len(list((synth_root / "data").rglob("*.parquet"))) == 3
    assert (synth_root / "data/chunk-000/file-002.parquet").exists()
    assert (synth_root / "videos/observation.images.ego/chunk-000/file-001.mp4").exists()
    episodes = pq.read_table(synth_root / "meta/episodes/chunk-000/file-001.parquet").to_pylist()
    assert [e["dataset_from_index"] for e in episodes] == [48, 72]
    assert episodes[1]["videos/observation.images.ego/from_timestamp"] == pytest.approx(24 / 30)


def test_stats_are_masked(synth_root: Path) -> None:
    dataset = LeRobotDataset(synth_root)
    stats = read_json(synth_root / "meta" / "stats.json")
    mask = dataset.hand_mask
    assert not mask.all()
    assert mask.any(axis=0).all()
    # independent reference: the contract's slices (DESIGN §3) and plain numpy per dimension
    left_dims = set(range(0, 9)) | set(range(18, 33))
    for key in ("observation.state", "action"):
        values = dataset.columns[key].astype(np.float64)
        for dim in range(48):
            present = mask[:, 0 if dim in left_dims else 1]
            column = values[present, dim]
            expected = {
                "mean": column.mean(), "std": column.std(), "min": column.min(), "max": column.max(),
                "q01": np.quantile(column, 0.01), "q99": np.quantile(column, 0.99),
            }  # fmt: skip
            for name, value in expected.items():
                assert stats[key][name][dim] == pytest.approx(value, rel=1e-9, abs=1e-12), (key, dim, name)  # fmt: skip
            assert stats[key]["valid_count"][dim] == present.sum()
        assert stats[key]["count"] == [len(dataset)]  # LeRobot's shape (1,)
    # a missing hand's zeros are excluded: with them the mean of a left dimension would differ
    absent = ~mask[:, 0]
    with_zeros = dataset.action[:, 0].astype(np.float64).mean()
    assert absent.any()
    assert stats["action"]["mean"][0] != pytest.approx(with_zeros)
    assert dataset.stats["action"].count[0] == mask[:, 0].sum()


def test_resume_after_kill(tmp_path: Path) -> None:
    source = SyntheticSource(SyntheticConfig(episodes=5, frames=16, seed=2, render=False))
    episodes = list(source.iter_episodes())
    root = tmp_path / "resume"
    writer = LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2)  # fmt: skip
    for episode in episodes[:3]:
        writer.add_episode(episode)  # flushes after 2; the third stays in memory and is "killed"
    # a killed flush leaves a data file with no commit, plus a temp file
    stray = root / "data/chunk-000/file-001.parquet"
    stray.write_bytes(b"half a parquet")
    (root / "data/chunk-000/.file-001.parquet.123.tmp").write_bytes(b"tmp")
    before = (root / "data/chunk-000/file-000.parquet").read_bytes()
    resumed = LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2)  # fmt: skip
    assert resumed.committed_episodes == 2
    assert not stray.exists()
    assert (root / "data/chunk-000/file-000.parquet").read_bytes() == before
    write_episodes(root, iter(episodes), fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2, progress=False)  # fmt: skip
    dataset = LeRobotDataset(root)
    assert len(dataset.episodes) == 5
    for index, episode in enumerate(episodes):
        np.testing.assert_array_equal(dataset.episode(index).state, episode.state)


_KILL_CHILD = """
import os, signal, sys
calls = 0
real_replace = os.replace
def replace(src, dst):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # killed with this file written but not in place
    real_replace(src, dst)
os.replace = replace
from metis_datasets.synthetic import make_dataset
make_dataset(sys.argv[1], episodes=5, seed=3, frames=12, image_size=(32, 48), episodes_per_file=2)
"""


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("ref") / "ref", episodes=5, seed=3, frames=12, image_size=(32, 48), episodes_per_file=2)  # fmt: skip


# a full run renames 21 files: info.json before any data; per flush data, video, episodes,
# checksums, tasks, info (x3); then stats and the final info (complete)
@pytest.mark.parametrize("kill_at", [2, 9, 11, 13, 20, 21], ids=["first-data", "video", "after-episodes", "commit", "stats", "final-info"])  # fmt: skip
def test_killed_conversion_leaves_no_half_file_and_resumes(tmp_path: Path, uninterrupted: Path, kill_at: int) -> None:  # fmt: skip
    root = tmp_path / "killed"
    child = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(root), str(kill_at)], capture_output=True, text=True)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    # every file in place is whole: only "." temporaries can be partial
    for path in (p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix == ".parquet":
            pq.read_table(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.suffix == ".mp4", path
            VideoReader(path).close()
    assert list(root.rglob(".*.tmp")), (
        "the kill should have left the unfinished file as a temporary"
    )
    # the reader says the dataset is unfinished (never "corrupt", never a smaller whole one)
    with pytest.raises(IncompleteDatasetError, match="incomplete METIS dataset"):
        LeRobotDataset(root)
    make_dataset(root, episodes=5, seed=3, frames=12, image_size=(32, 48), episodes_per_file=2)  # resume  # fmt: skip
    assert not list(root.rglob(".*.tmp"))
    mine, reference = LeRobotDataset(root), LeRobotDataset(uninterrupted)
    assert sorted(_all_files(root)) == sorted(_all_files(uninterrupted))  # same files, no strays
    for key in ("observation.state", "action", "observation.hand_mask", "index", "episode_index", "task_index"):  # fmt: skip
        np.testing.assert_array_equal(mine.columns[key], reference.columns[key])
    assert read_json(root / "meta/stats.json") == read_json(uninterrupted / "meta/stats.json")
    for episode in range(5):
        assert mine.episode(episode, with_images=False).subtasks == reference.episode(episode, with_images=False).subtasks  # fmt: skip
        every = np.arange(12)
        assert np.abs(mine.frames(episode, every).astype(int) - reference.frames(episode, every)).max() <= 1  # fmt: skip


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit_info(root: Path, change) -> None:
    info = read_json(root / "meta/info.json")
    change(info)
    write_json(root / "meta/info.json", info)


def _open_and_decode(root: Path) -> None:
    dataset = LeRobotDataset(root)
    for episode in range(len(dataset.episodes)):
        dataset.frames(episode, [0])


CORRUPTIONS = {
    "truncated-data": (
        lambda r: _truncate(r / "data/chunk-000/file-001.parquet"),
        CorruptFileError,
        r"file-001.parquet: expected a parquet file of 48 frames",
    ),
    "truncated-episodes": (
        lambda r: _truncate(r / "meta/episodes/chunk-000/file-000.parquet"),
        CorruptFileError,
        r"file-000.parquet: expected a parquet file, found an unreadable one",
    ),
    "truncated-video": (
        lambda r: _truncate(r / "videos/observation.images.ego/chunk-000/file-002.mp4"),
        CorruptFileError,
        r"file-002.mp4: expected an MP4 video",
    ),
    "missing-video": (
        lambda r: (r / "videos/observation.images.ego/chunk-000/file-000.mp4").unlink(),
        FileNotFoundError,
        r"file-000.mp4 is missing",
    ),
    "info-missing-keys": (
        lambda r: _edit_info(r, lambda i: i.pop("total_episodes")),
        UnsupportedDatasetError,
        r"expected a LeRobot info record with 'features' and 'total_episodes'",
    ),
    "info-not-json": (
        lambda r: (r / "meta/info.json").write_text('{"codebase_version": "v3.0", '),
        CorruptFileError,
        r"info.json is not valid JSON",
    ),
    "wrong-contract-version": (
        lambda r: _edit_info(
            r, lambda i: i["features"]["observation.state"]["metis"]["contract"].update(version=2)
        ),
        ContractMismatchError,
        r"version 2",
    ),
    "foreign-dataset": (
        lambda r: _edit_info(r, lambda i: i["features"]["observation.state"].pop("metis")),
        UnsupportedDatasetError,
        r"not written by METIS",
    ),
    "missing-episode-commit": (
        lambda r: _edit_info(r, lambda i: i.update(total_episodes=6)),
        CorruptFileError,
        r"info.json commits 6 episodes but the episodes files record 5",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_or_foreign_files_refused_and_nothing_lost(synth_root: Path, tmp_path: Path, case: str) -> None:  # fmt: skip
    damage, error, message = CORRUPTIONS[case]
    root = tmp_path / case
    shutil.copytree(synth_root, root)
    damage(root)
    before = _all_files(root)
    with pytest.raises(error, match=message):
        LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", image_shape=(240, 320))  # fmt: skip
    assert _all_files(root) == before  # nothing deleted or rewritten
    if case != "foreign-dataset":  # a foreign dataset is readable, only not appendable
        with pytest.raises((CorruptFileError, UnsupportedDatasetError, FileNotFoundError, ContractMismatchError)):  # fmt: skip
            _open_and_decode(root)
    assert _all_files(root) == before


def test_refuses_to_append_other_source(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synth_root, root)
    with pytest.raises(UnsupportedDatasetError, match="source 'synthetic'"):
        LeRobotWriter(root, fps=30, source="arctic", embodiment="human_mano")


def test_wrong_contract_version(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "v2"
    shutil.copytree(synth_root, root)
    info = read_json(root / "meta" / "info.json")
    info["features"]["observation.state"]["metis"]["contract"]["version"] = 2
    write_json(root / "meta" / "info.json", info)
    with pytest.raises(ContractMismatchError, match="version 2"):
        LeRobotDataset(root)


def test_truncated_parquet(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "trunc"
    shutil.copytree(synth_root, root)
    path = root / "data/chunk-000/file-001.parquet"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptFileError, match="file-001.parquet"):
        LeRobotDataset(root)
    # nothing else was touched
    assert (root / "data/chunk-000/file-000.parquet").read_bytes() == (synth_root / "data/chunk-000/file-000.parquet").read_bytes()  # fmt: skip


def test_missing_keys_and_files(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "nokeys"
    shutil.copytree(synth_root, root)
    info = read_json(root / "meta" / "info.json")
    del info["features"]
    write_json(root / "meta" / "info.json", info)
    with pytest.raises(UnsupportedDatasetError, match="features"):
        LeRobotDataset(root)
    with pytest.raises(FileNotFoundError, match="info.json"):
        LeRobotDataset(tmp_path / "nothing")
    (root / "meta" / "info.json").write_text("{not json")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        LeRobotDataset(root)


def test_unknown_version(synth_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "v1"
    shutil.copytree(synth_root, root)
    info = read_json(root / "meta" / "info.json")
    info["codebase_version"] = "v1.6"
    write_json(root / "meta" / "info.json", info)
    with pytest.raises(UnsupportedDatasetError, match="v1.6"):
        LeRobotDataset(root)


# -- datasets written by others (LeRobot's own layouts, no METIS record) ---------------------------

FOREIGN_LENGTHS = [5, 7]
ARM_CAMERA = "observation.images.wrist"


def _grey_frames(length: int, offset: int) -> np.ndarray:
    """Uniform frames whose grey level identifies the global frame (H.264 keeps them to ~1 level)."""
    levels = 20 + 8 * np.arange(offset, offset + length)
    return np.broadcast_to(levels[:, None, None, None], (length, 32, 48, 3)).astype(np.uint8)


def _foreign_features(state_dim: int) -> dict:
    features = {
        "observation.state": {
            "dtype": "float32",
            "shape": [state_dim],
            "names": [f"joint_{i}" for i in range(state_dim)],
        },
        "action": {
            "dtype": "float32",
            "shape": [state_dim],
            "names": [f"joint_{i}" for i in range(state_dim)],
        },
        ARM_CAMERA: {
            "dtype": "video",
            "shape": [32, 48, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": 30.0, "video.codec": "h264"},
        },
    }
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):  # fmt: skip
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _foreign_values(state_dim: int) -> np.ndarray:
    total = sum(FOREIGN_LENGTHS)
    return np.arange(total * state_dim, dtype=np.float32).reshape(total, state_dim) / 7


def _foreign_frame_table(values: np.ndarray, episode: int, offset: int, length: int) -> pa.Table:
    # LeRobot stores vectors through Hugging Face datasets' Sequence: a variable-size list column
    rows = values[offset : offset + length]
    return pa.table(
        {
            "observation.state": pa.array(list(rows), type=pa.list_(pa.float32())),
            "action": pa.array(list(rows + 1), type=pa.list_(pa.float32())),
            "timestamp": pa.array(np.arange(length, dtype=np.float32) / 30),
            "frame_index": pa.array(np.arange(length, dtype=np.int64)),
            "episode_index": pa.array(np.full(length, episode, dtype=np.int64)),
            "index": pa.array(np.arange(offset, offset + length, dtype=np.int64)),
            "task_index": pa.array(np.full(length, episode % 2, dtype=np.int64)),
        }
    )


TASKS = ["open the drawer", "close the drawer"]


def _write_foreign_v21(root: Path, state_dim: int) -> None:
    """LeRobot v2.1 as another lab would have written it: one parquet and one mp4 per episode."""
    values = _foreign_values(state_dim)
    info = {
        "codebase_version": "v2.1", "robot_type": "franka_arm", "total_episodes": 2,
        "total_frames": sum(FOREIGN_LENGTHS), "total_tasks": 2, "total_videos": 2, "chunks_size": 1000,
        "fps": 30, "splits": {"train": "0:2"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _foreign_features(state_dim),
    }  # fmt: skip
    write_json(root / "meta" / "info.json", info)
    offset = 0
    for index, length in enumerate(FOREIGN_LENGTHS):
        path = root / f"data/chunk-000/episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(_foreign_frame_table(values, index, offset, length), path)
        encode_video(root / f"videos/chunk-000/{ARM_CAMERA}/episode_{index:06d}.mp4", _grey_frames(length, offset), 30)  # fmt: skip
        offset += length
    lines = [json.dumps({"episode_index": i, "tasks": [TASKS[i % 2]], "length": n}) for i, n in enumerate(FOREIGN_LENGTHS)]  # fmt: skip
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta" / "tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS)))  # fmt: skip


def _write_foreign_v30(root: Path, state_dim: int) -> None:
    """LeRobot v3.0 as LeRobot itself writes it: both episodes in one data file and one mp4."""
    values = _foreign_values(state_dim)
    info = {
        "codebase_version": "v3.0", "robot_type": "franka_arm", "total_episodes": 2,
        "total_frames": sum(FOREIGN_LENGTHS), "total_tasks": 2, "chunks_size": 1000,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": 30, "splits": {"train": "0:2"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _foreign_features(state_dim),
    }  # fmt: skip
    write_json(root / "meta" / "info.json", info)
    total = sum(FOREIGN_LENGTHS)
    tables = []
    offset = 0
    for index, length in enumerate(FOREIGN_LENGTHS):
        tables.append(_foreign_frame_table(values, index, offset, length))
        offset += length
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), root / "data/chunk-000/file-000.parquet")
    encode_video(root / f"videos/{ARM_CAMERA}/chunk-000/file-000.mp4", _grey_frames(total, 0), 30)
    starts = np.cumsum([0, *FOREIGN_LENGTHS[:-1]])
    episodes = pa.table(
        {
            "episode_index": pa.array([0, 1], pa.int64()),
            "tasks": pa.array([[TASKS[0]], [TASKS[1]]]),
            "length": pa.array(FOREIGN_LENGTHS, pa.int64()),
            "data/chunk_index": [0, 0],
            "data/file_index": [0, 0],
            "dataset_from_index": [int(s) for s in starts],
            "dataset_to_index": [int(s) + n for s, n in zip(starts, FOREIGN_LENGTHS, strict=True)],
            f"videos/{ARM_CAMERA}/chunk_index": [0, 0],
            f"videos/{ARM_CAMERA}/file_index": [0, 0],
            f"videos/{ARM_CAMERA}/from_timestamp": [float(s) / 30 for s in starts],
            f"videos/{ARM_CAMERA}/to_timestamp": [
                float(s + n) / 30 for s, n in zip(starts, FOREIGN_LENGTHS, strict=True)
            ],
            "meta/episodes/chunk_index": [0, 0],
            "meta/episodes/file_index": [0, 0],
        }
    )
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(episodes, root / "meta/episodes/chunk-000/file-000.parquet")
    # pandas' DataFrame.to_parquet with the task text as the (unnamed) index
    pq.write_table(pa.table({"task_index": pa.array([0, 1], pa.int64()), "__index_level_0__": TASKS}), root / "meta/tasks.parquet")  # fmt: skip


WRITERS = {"v2.1": _write_foreign_v21, "v3.0": _write_foreign_v30}


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_reads_foreign_contract_dataset(tmp_path: Path, version: str) -> None:
    WRITERS[version](tmp_path / "ok", 48)
    dataset = LeRobotDataset(tmp_path / "ok")
    values = _foreign_values(48)
    assert (dataset.version, len(dataset), len(dataset.episodes)) == (version, 12, 2)
    assert dataset.source == "franka_arm"  # no METIS record: robot_type names the source
    episode = dataset.episode(1)
    assert episode.length == 7
    assert episode.instruction == "close the drawer"
    np.testing.assert_array_equal(episode.state, values[5:12])
    np.testing.assert_array_equal(episode.action, values[5:12] + 1)
    assert episode.hand_mask.all()  # no mask column: both hands present
    assert episode.images == {}  # the camera is not the ego key; read it by name
    frames = dataset.frames(1, np.arange(7), key=ARM_CAMERA)
    levels = frames.reshape(7, -1).mean(1)
    np.testing.assert_allclose(levels, 20 + 8 * np.arange(5, 12), atol=2.0)


@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_foreign_arm_dataset_reads_and_refuses_clearly(tmp_path: Path, version: str) -> None:
    WRITERS[version](tmp_path / "arm", 7)  # a downstream robot dataset: 7-D arm joints
    dataset = LeRobotDataset(tmp_path / "arm")
    values = _foreign_values(7)
    # everything that exists is readable, exactly
    np.testing.assert_array_equal(dataset.columns["observation.state"], values)
    np.testing.assert_array_equal(dataset.columns["action"], values + 1)
    np.testing.assert_array_equal(dataset.columns["episode_index"][:, 0], np.repeat([0, 1], FOREIGN_LENGTHS))  # fmt: skip
    assert [dataset.instruction(e) for e in range(2)] == TASKS
    levels = dataset.frames(0, [0, 4], key=ARM_CAMERA).reshape(2, -1).mean(1)
    np.testing.assert_allclose(levels, [20, 52], atol=2.0)
    # what cannot be mapped to the hand contract says so, with the shapes and the way out
    message = r"cannot map to the metis-hand-v1 contract: expected .*shape \[48\].*\[7\].*forward kinematics"  # fmt: skip
    with pytest.raises(UnsupportedDatasetError, match=message):
        dataset.episode(0)
    with pytest.raises(UnsupportedDatasetError, match=message):
        _ = dataset.action
    with pytest.raises(UnsupportedDatasetError, match=message):
        MixtureDataset({"arm": dataset}, weights=[1.0])
    with pytest.raises(UnsupportedDatasetError, match="not written by METIS"):
        LeRobotWriter(tmp_path / "arm", fps=30, source="franka_arm", embodiment="inspire")
