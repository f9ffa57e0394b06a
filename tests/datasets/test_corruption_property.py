"""Property: a corrupted dataset is refused clearly or read exactly, never read differently.

Random small valid datasets (episodes, lengths, files, hand masks drawn by hypothesis) get one
random corruption: a truncated file, a flipped bit, a deleted file, or a consistent edit of
indices, metadata or statistics (with the edited file's checksum refreshed, so the structural
checks have to catch it). Every read must then either raise a clear error (one of the reader's
error types, naming a path inside the dataset) or return exactly the data that was written; and
``metis-datasets check`` must report every corruption the reader refuses and every changed byte.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests_helpers import refresh_digest

from metis_core.contract import ContractMismatchError
from metis_core.io import CorruptFileError, read_json, write_json
from metis_datasets import LeRobotDataset, LeRobotWriter, UnsupportedDatasetError, check_dataset
from metis_datasets.lerobot_format import _write_parquet
from metis_datasets.synthetic import SyntheticConfig
from metis_datasets.synthetic.source_synthetic import generate_episode

CLEAR_ERRORS = (CorruptFileError, UnsupportedDatasetError, FileNotFoundError, ContractMismatchError)


def _write(root: Path, seed: int, lengths: list[int], per_file: int) -> None:
    writer = LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=per_file)  # fmt: skip
    for index, length in enumerate(lengths):
        config = SyntheticConfig(episodes=len(lengths), seed=seed, frames=length, render=False, absent_hand_probability=0.5)  # fmt: skip
        writer.add_episode(generate_episode(config, index))
    writer.finalize()


def _snapshot(root: Path) -> dict:
    dataset = LeRobotDataset(root)
    return {
        "columns": {k: v.copy() for k, v in dataset.columns.items()},
        "episodes": [
            (e["length"], e["tasks"], e["subtasks"], e["metadata"], e["embodiment"])
            for e in dataset.episodes
        ],
        "tasks": dict(dataset.tasks),
        "instructions": [dataset.instruction(i) for i in range(len(dataset.episodes))],
        "stats": {
            k: (np.asarray(v.mean).copy(), np.asarray(v.std).copy())
            for k, v in dataset.stats.items()
        },
        "fps": dataset.fps,
    }


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys() or a["columns"].keys() != b["columns"].keys():
        return False
    if any(not np.array_equal(a["columns"][k], b["columns"][k]) for k in a["columns"]):
        return False
    if a["stats"].keys() != b["stats"].keys():
        return False
    if any(not (np.array_equal(a["stats"][k][0], b["stats"][k][0]) and np.array_equal(a["stats"][k][1], b["stats"][k][1])) for k in a["stats"]):  # fmt: skip
        return False
    return all(a[k] == b[k] for k in ("episodes", "tasks", "instructions", "fps"))


def _refresh(root: Path, rel: str) -> None:
    refresh_digest(root, rel)


def _edit_column(root: Path, rel: str, column: str, row: int, delta: int) -> bool:
    table = pq.read_table(root / rel)
    values = table.column(column).to_pylist()
    values[row % len(values)] += delta
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(values, type=table.schema.field(column).type))  # fmt: skip
    _write_parquet(root / rel, table)
    _refresh(root, rel)
    return True


def _corrupt(root: Path, data: st.DataObject) -> bool:
    """Apply one corruption; return whether file bytes were damaged (not a consistent edit)."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "metis_conversion" not in p.name)  # fmt: skip
    kind = data.draw(st.sampled_from(["truncate", "flip", "delete", "index", "episodes", "info", "stats", "mask"]))  # fmt: skip
    if kind in ("truncate", "flip", "delete"):
        rel = data.draw(st.sampled_from(files))
        path = root / rel
        content = bytearray(path.read_bytes())
        if kind == "truncate":
            path.write_bytes(bytes(content[: data.draw(st.integers(0, len(content) - 1))]))
        elif kind == "flip":
            position = data.draw(st.integers(0, len(content) - 1))
            content[position] ^= 1 << data.draw(st.integers(0, 7))
            path.write_bytes(bytes(content))
        else:
            path.unlink()
        return True
    delta = data.draw(st.sampled_from([-3, -1, 1, 2, 7]))
    row = data.draw(st.integers(0, 10_000))
    data_files = [f for f in files if f.startswith("data/")]
    episode_files = [f for f in files if f.startswith("meta/episodes/")]
    if kind == "index":
        column = data.draw(st.sampled_from(["index", "episode_index", "frame_index", "task_index"]))
        return not _edit_column(root, data.draw(st.sampled_from(data_files)), column, row, delta)
    if kind == "episodes":
        column = data.draw(st.sampled_from(["episode_index", "length", "dataset_from_index", "dataset_to_index", "data/file_index"]))  # fmt: skip
        return not _edit_column(root, data.draw(st.sampled_from(episode_files)), column, row, delta)
    if kind == "mask":
        rel = data.draw(st.sampled_from(data_files))
        table = pq.read_table(root / rel)
        mask = np.asarray(table.column("observation.hand_mask").to_pylist())
        mask[row % len(mask), data.draw(st.integers(0, 1))] ^= True
        array = pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1)), 2)
        _write_parquet(root / rel, table.set_column(table.schema.get_field_index("observation.hand_mask"), "observation.hand_mask", array))  # fmt: skip
        _refresh(root, rel)
        return False
    if kind == "stats":
        stats = read_json(root / "meta/stats.json")
        feature = data.draw(st.sampled_from(["action", "observation.state"]))
        name = data.draw(st.sampled_from(["mean", "std"]))
        stats[feature][name][row % 48] = data.draw(st.sampled_from([float("nan"), -1.0, float("inf")]))  # fmt: skip
        (root / "meta/stats.json").write_text(json.dumps(stats))
        _refresh(root, "meta/stats.json")
        return False
    info = read_json(root / "meta/info.json")
    key = data.draw(st.sampled_from(["total_episodes", "total_frames", "fps", "data_path", "features"]))  # fmt: skip
    if key in ("total_episodes", "total_frames"):
        info[key] = max(info[key] + delta, 0)
    elif key == "fps":
        info["fps"] = 30 + delta
    elif key == "data_path":
        info["data_path"] = "data/chunk-{chunk_index:03d}/part-{file_index:03d}.parquet"
    else:
        info["features"]["action"]["shape"] = [48 + delta]
    write_json(root / "meta/info.json", info)
    return False


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(
    seed=st.integers(0, 2**16),
    lengths=st.lists(st.integers(8, 12), min_size=1, max_size=4),
    per_file=st.integers(1, 3),
    data=st.data(),
)
def test_corrupted_datasets_are_refused_clearly_or_read_exactly(seed: int, lengths: list[int], per_file: int, data: st.DataObject) -> None:  # fmt: skip
    base = Path(tempfile.mkdtemp(prefix="metis-prop-"))
    try:
        root = base / "ds"
        _write(root, seed, lengths, per_file)
        written = _snapshot(root)
        assert check_dataset(root).ok
        damaged_bytes = _corrupt(root, data)
        error: Exception | None = None
        try:
            read = _snapshot(root)
        except CLEAR_ERRORS as err:
            error = err
        refused = error is not None
        if refused:
            assert str(root) in str(error), f"{type(error).__name__} does not name a file: {error}"
        else:
            assert _same(read, written), "a corrupted dataset read as different data"
        report = check_dataset(root)
        if refused or damaged_bytes:
            assert not report.ok, "check missed a corruption"
            assert all(str(root) in p.path for p in report.problems)
    finally:
        shutil.rmtree(base, ignore_errors=True)
