"""LeRobot v3 storage: exact round trips, metadata, stats, resume, corrupt and foreign files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from metis_core.contract import ContractMismatchError, hand_value_mask
from metis_core.io import CorruptFileError, read_json, write_json
from metis_core.normalization import compute_stats
from metis_datasets import LeRobotDataset, LeRobotWriter, UnsupportedDatasetError, write_episodes
from metis_datasets.synthetic import SyntheticConfig, SyntheticSource, make_dataset
from metis_datasets.synthetic.source_synthetic import generate_episode


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
    expected = compute_stats(dataset.action, hand_value_mask(dataset.hand_mask).numpy())
    for name in ("mean", "std", "min", "max", "q01", "q99"):
        np.testing.assert_allclose(stats["action"][name], getattr(expected, name), rtol=1e-12)
    # a missing hand's zeros are excluded: the count of a left-hand dimension equals its frames
    assert stats["action"]["valid_count"][0] == dataset.hand_mask[:, 0].sum()
    assert stats["action"]["count"] == [len(dataset)]  # LeRobot's shape (1,)
    assert dataset.stats["action"].count[0] == dataset.hand_mask[:, 0].sum()


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


def _write_foreign_v21(root: Path, state_dim: int) -> None:
    """A LeRobot v2.1 dataset as another lab would write it (no metis block)."""
    lengths = [5, 7]
    features = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [state_dim], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {
        "codebase_version": "v2.1", "robot_type": "g1_inspire", "total_episodes": 2,
        "total_frames": 12, "total_tasks": 1, "chunks_size": 1000, "fps": 30,
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": None, "features": features,
    }  # fmt: skip
    write_json(root / "meta" / "info.json", info)
    offset = 0
    for index, length in enumerate(lengths):
        values = np.arange(offset * state_dim, (offset + length) * state_dim, dtype=np.float32).reshape(length, state_dim)  # fmt: skip
        table = pa.table(
            {
                "observation.state": pa.array(list(values), type=pa.list_(pa.float32())),
                "action": pa.array(list(values + 1), type=pa.list_(pa.float32())),
                "timestamp": pa.array(np.arange(length, dtype=np.float32) / 30),
                "frame_index": pa.array(np.arange(length)),
                "episode_index": pa.array(np.full(length, index)),
                "index": pa.array(np.arange(offset, offset + length)),
                "task_index": pa.array(np.zeros(length, dtype=np.int64)),
            }
        )
        path = root / f"data/chunk-000/episode_{index:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        offset += length
    lines = [json.dumps({"episode_index": i, "tasks": ["open the drawer"], "length": n}) for i, n in enumerate(lengths)]  # fmt: skip
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    (root / "meta" / "tasks.jsonl").write_text(json.dumps({"task_index": 0, "task": "open the drawer"}) + "\n")  # fmt: skip


def test_reads_foreign_v21(tmp_path: Path) -> None:
    _write_foreign_v21(tmp_path / "ok", 48)
    dataset = LeRobotDataset(tmp_path / "ok")
    assert len(dataset) == 12
    assert dataset.source == "g1_inspire"
    episode = dataset.episode(1)
    assert episode.length == 7
    assert episode.instruction == "open the drawer"
    np.testing.assert_array_equal(episode.state[0], np.arange(5 * 48, 6 * 48, dtype=np.float32))
    assert episode.hand_mask.all()


def test_foreign_unmappable_is_clear(tmp_path: Path) -> None:
    _write_foreign_v21(tmp_path / "arm", 7)
    dataset = LeRobotDataset(tmp_path / "arm")
    assert dataset.columns["observation.state"].shape == (12, 7)
    with pytest.raises(UnsupportedDatasetError, match=r"shape \[48\].*\[7\]"):
        dataset.episode(0)
