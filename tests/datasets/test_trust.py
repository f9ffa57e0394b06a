"""Issue 12: no data loss, no silently wrong data, checksums, clear errors, partial datasets.

Each corruption is applied to a copy of a dataset the project's own writer produced. Where a
test is about a structural or value check (not the checksum), the edited file's recorded digest
is refreshed, so that the check itself has to catch the problem.
"""

from __future__ import annotations

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tests_helpers import refresh_digest

from metis_core.contract import ContractMismatchError
from metis_core.io import CorruptFileError, read_json, write_json
from metis_datasets import (
    IncompleteDatasetError,
    InvalidDatasetError,
    LeRobotDataset,
    LeRobotWriter,
    MixtureDataset,
    UnsupportedDatasetError,
    check_dataset,
)
from metis_datasets.cli import main
from metis_datasets.lerobot_format import _write_parquet
from metis_datasets.synthetic import SyntheticConfig, SyntheticSource, make_dataset

DATA0 = "data/chunk-000/file-000.parquet"
DATA1 = "data/chunk-000/file-001.parquet"
EPISODES0 = "meta/episodes/chunk-000/file-000.parquet"
EPISODES1 = "meta/episodes/chunk-000/file-001.parquet"
VIDEO0 = "videos/observation.images.ego/chunk-000/file-000.mp4"
VIDEO1 = "videos/observation.images.ego/chunk-000/file-001.mp4"
READ_ERRORS = (CorruptFileError, UnsupportedDatasetError, FileNotFoundError, ContractMismatchError)
sys.path.insert(0, str(Path(__file__).parent / "sources"))  # the source fixtures


@pytest.fixture(scope="module")
def tabular(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 5 episodes of 12 frames, 2 per file: files 0, 1, 2
    return make_dataset(tmp_path_factory.mktemp("t") / "tab", episodes=5, seed=4, frames=12, image_size=None, episodes_per_file=2)  # fmt: skip


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("v") / "vid", episodes=4, seed=5, frames=10, image_size=(32, 48), episodes_per_file=2)  # fmt: skip


def _copy(src: Path, tmp_path: Path, name: str = "copy") -> Path:
    root = tmp_path / name
    shutil.copytree(src, root)
    return root


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def _refresh_digest(root: Path, rel: str) -> None:
    """Record the current content of ``rel`` as its committed digest (a consistent edit)."""
    if not refresh_digest(root, rel):
        raise AssertionError(f"no digest recorded for {rel}")


def _edit_parquet(root: Path, rel: str, change) -> None:
    table = pq.read_table(root / rel)
    columns = {name: table.column(name) for name in table.column_names}
    change(columns)
    _write_parquet(root / rel, pa.table(columns))
    _refresh_digest(root, rel)


def _set_rows(column: str, rows: dict[int, object]):
    def change(columns: dict) -> None:
        values = columns[column].to_pylist()
        for row, value in rows.items():
            values[row] = value
        columns[column] = pa.array(values, type=columns[column].type)

    return change


def _edit_vectors(column: str, row: int, dims: list[int], value: float):
    def change(columns: dict) -> None:
        values = np.asarray(columns[column].to_pylist(), dtype=np.float32)
        values[row, dims] = value
        columns[column] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 48)

    return change


def _edit_json(root: Path, rel: str, change) -> None:
    document = read_json(root / rel)
    change(document)  # edits in place
    write_json(root / rel, document)
    if rel == "meta/info.json":
        return
    _refresh_digest(root, rel)


def _info(change):
    return lambda r: _edit_json(r, "meta/info.json", change)


def _first_present(root: Path, side: int) -> int:
    """Row of file 0 where hand ``side`` is present."""
    mask = np.asarray(pq.read_table(root / DATA0).column("observation.hand_mask").to_pylist())
    return int(np.flatnonzero(mask[:, side])[0])


def _first_absent(root: Path, side: int) -> int:
    mask = np.asarray(pq.read_table(root / DATA0).column("observation.hand_mask").to_pylist())
    return int(np.flatnonzero(~mask[:, side])[0])


def _drop_mask(root: Path) -> None:
    for path in sorted((root / "data").rglob("*.parquet")):
        rel = str(path.relative_to(root))
        _edit_parquet(root, rel, lambda c: c.pop("observation.hand_mask"))
    _edit_json(root, "meta/info.json", lambda i: i["features"].pop("observation.hand_mask"))


# name -> (damage, file named in the message, episode named, what the message says)
SILENTLY_WRONG = {
    "nan-state": (
        lambda r: _edit_parquet(r, DATA0, _edit_vectors("observation.state", 3, [10], np.nan)),
        DATA0,
        0,
        r"observation.state\[10\].* is nan",
    ),
    "inf-action": (
        lambda r: _edit_parquet(r, DATA1, _edit_vectors("action", 13, [40], np.inf)),
        DATA1,
        3,
        r"action\[40\].* is inf",
    ),
    "zero-rotation": (
        lambda r: _edit_parquet(
            r,
            DATA0,
            _edit_vectors("observation.state", _first_present(r, 1), list(range(12, 18)), 0.0),
        ),
        DATA0,
        None,
        r"right hand is marked present but its wrist rotation",
    ),
    "mask-disagrees": (
        lambda r: _edit_parquet(r, DATA0, _edit_vectors("action", _first_absent(r, 0), [0], 0.25)),
        DATA0,
        None,
        r"left hand is marked missing .* non-zero values",
    ),
    "missing-hand-mask": (
        _drop_mask,
        "meta/info.json",
        None,
        r"'observation.hand_mask' is missing",
    ),
    "to-index-past-end": (
        lambda r: _edit_parquet(
            r, "meta/episodes/chunk-000/file-002.parquet", _set_rows("dataset_to_index", {0: 70})
        ),
        "file-002.parquet",
        4,
        r"past the dataset's 60 frames",
    ),
    "overlapping-episode": (
        lambda r: _edit_parquet(
            r,
            EPISODES1,
            lambda c: (
                _set_rows("dataset_from_index", {0: 20})(c),
                _set_rows("dataset_to_index", {0: 32})(c),
            ),
        ),
        EPISODES1,
        2,
        r"dataset_from_index 20, expected 24",
    ),
    "shuffled-index": (
        lambda r: _edit_parquet(r, DATA1, _set_rows("index", {0: 25, 1: 24})),
        DATA1,
        2,
        r"column 'index' holds 25 at frame 0 .*shuffled",
    ),
    "offset-index": (
        lambda r: _edit_parquet(
            r, DATA0, lambda c: c.update(index=pa.array(np.arange(1, 25, dtype=np.int64))) or None
        ),
        DATA0,
        0,
        r"column 'index' holds 1 at frame 0",
    ),
    "subtask-beyond-episode": (
        lambda r: _edit_parquet(
            r, EPISODES0, _set_rows("subtasks", {1: [{"start": 2, "end": 30, "text": "too long"}]})
        ),
        EPISODES0,
        1,
        r"subtask 'too long' \[2, 30\) lies outside the episode's 12 frames",
    ),
    "stats-nan": (
        lambda r: _edit_json(
            r, "meta/stats.json", lambda s: s["action"]["mean"].__setitem__(5, float("nan"))
        ),
        "stats.json",
        None,
        r"action.mean\[5\].* is nan",
    ),
    "stats-negative-std": (
        lambda r: _edit_json(
            r, "meta/stats.json", lambda s: s["observation.state"]["std"].__setitem__(7, -0.5)
        ),
        "stats.json",
        None,
        r"observation.state.std\[7\].* is -0.5; a standard deviation cannot be negative",
    ),
}


@pytest.mark.parametrize("case", sorted(SILENTLY_WRONG))
def test_silently_wrong_data_is_refused_naming_file_and_episode(tabular: Path, tmp_path: Path, case: str) -> None:  # fmt: skip
    damage, file, episode, message = SILENTLY_WRONG[case]
    root = _copy(tabular, tmp_path)
    LeRobotDataset(root)  # sound before the edit
    damage(root)
    with pytest.raises(InvalidDatasetError, match=message) as caught:
        LeRobotDataset(root)
    text = str(caught.value)
    assert file in text
    if episode is not None:
        assert f"episode {episode}:" in text
    with pytest.raises(InvalidDatasetError):
        MixtureDataset([root], weights=[1.0])  # the mixture never samples it
    report = check_dataset(root)
    assert not report.ok
    assert any(file in p.path for p in report.problems), report.summary()


def test_video_file_index_pointing_at_another_episode(video: Path, tmp_path: Path) -> None:
    root = _copy(video, tmp_path)
    # episode 2 (file 1, from 0 s) now claims to live in file 0, where episode 0 is at [0, 1/3) s
    _edit_parquet(root, EPISODES1, _set_rows("videos/observation.images.ego/file_index", {0: 0}))
    with pytest.raises(InvalidDatasetError, match=r"file-001.parquet: episode 2: video .* inside episode 0's span"):  # fmt: skip
        LeRobotDataset(root)
    assert any(p.episode == 2 and p.kind == "index" for p in check_dataset(root).problems)


def test_video_frame_rate_disagreeing_with_info(video: Path, tmp_path: Path) -> None:
    root = _copy(video, tmp_path)
    _edit_json(root, "meta/info.json", lambda i: (i.update(fps=25), i["features"]["observation.state"]["metis"].update(fps=25)))  # fmt: skip
    # the episodes' video spans (written at 30 fps) already disagree: caught on open
    with pytest.raises(InvalidDatasetError, match=r"file-000.parquet: episode 0: video .* lasts 8.33 frames at 25 fps, but the episode has 10"):  # fmt: skip
        LeRobotDataset(root)
    # spans rewritten consistently for 25 fps: the video's own rate is checked when it opens
    for rel in (EPISODES0, EPISODES1):
        for column in ("from_timestamp", "to_timestamp"):
            name = f"videos/observation.images.ego/{column}"
            _edit_parquet(root, rel, lambda c, name=name: c.update({name: pa.array([v * 30 / 25 for v in c[name].to_pylist()])}))  # fmt: skip
    dataset = LeRobotDataset(root)
    with pytest.raises(InvalidDatasetError, match=r"file-000.mp4: the video runs at 30 fps but meta/info.json says 25 fps"):  # fmt: skip
        dataset.frames(0, [0])


# -- data loss ----------------------------------------------------------------------------------


def test_missing_info_json_never_deletes_committed_data(video: Path, tmp_path: Path) -> None:
    root = _copy(video, tmp_path)
    (root / "meta/info.json").unlink()
    before = _all_files(root)
    assert len([k for k in before if k.startswith(("data/", "videos/"))]) == 4
    with pytest.raises(FileExistsError, match=r"holds 2 file\(s\) under data, 2 file\(s\) under videos, 2 file\(s\) under meta/episodes.*no meta/info.json.*nothing was deleted.*--overwrite"):  # fmt: skip
        LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", image_shape=(32, 48))  # fmt: skip
    assert _all_files(root) == before
    with pytest.raises(FileNotFoundError, match="commit record was lost"):
        LeRobotDataset(root)


def test_convert_cli_refuses_a_folder_without_info_and_overwrite_replaces_it(tmp_path: Path) -> None:  # fmt: skip
    from fixtures_h2o import write_h2o

    write_h2o(tmp_path / "raw", frames=6, sequences=("subject1/h1/0", "subject1/h1/1"), images=False)  # fmt: skip
    out = tmp_path / "out"
    runner = CliRunner()
    args = ["convert", "h2o", str(tmp_path / "raw"), str(out), "--no-images"]
    assert runner.invoke(main, args).exit_code == 0
    (out / "meta/info.json").unlink()
    before = _all_files(out)
    result = runner.invoke(main, args)
    assert result.exit_code != 0
    assert "no meta/info.json" in result.output
    assert _all_files(out) == before
    result = runner.invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert len(LeRobotDataset(out).episodes) == 2


def test_convert_cli_options_reach_sources_with_their_own_field_names(tmp_path: Path) -> None:
    spec = tmp_path / "synthetic.json"
    spec.write_text('{"episodes": 2, "frames": 12, "seed": 1}')
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "synthetic", str(spec), str(tmp_path / "out"), "--image-size", "48x64"])  # fmt: skip
    assert result.exit_code == 0, result.output
    dataset = LeRobotDataset(tmp_path / "out")
    assert dataset.frames(0, [0]).shape == (1, 48, 64, 3)  # height x width, as asked
    result = runner.invoke(main, ["convert", "synthetic", str(spec), str(tmp_path / "flat"), "--no-images"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "observation.images.ego" not in LeRobotDataset(tmp_path / "flat").features


# -- checksums ----------------------------------------------------------------------------------


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rel", [DATA0, EPISODES1, "meta/tasks.parquet", "meta/stats.json"])
def test_flipped_byte_is_reported_never_read(tabular: Path, tmp_path: Path, rel: str) -> None:
    root = _copy(tabular, tmp_path)
    _flip(root / rel, (root / rel).stat().st_size // 2)
    with pytest.raises(CorruptFileError, match=rf"{rel}: content does not match the checksum recorded at commit"):  # fmt: skip
        LeRobotDataset(root)
    assert [p.kind for p in check_dataset(root).problems] == ["checksum"]


def test_flipped_byte_in_video_is_reported(video: Path, tmp_path: Path) -> None:
    root = _copy(video, tmp_path)
    _flip(root / VIDEO1, (root / VIDEO1).stat().st_size // 2)
    dataset = LeRobotDataset(root)  # the tabular part is intact
    dataset.frames(0, [0, 5])  # another video file: fine
    with pytest.raises(
        CorruptFileError, match=r"file-001.mp4: content does not match the checksum"
    ):
        dataset.frames(2, [0])
    report = check_dataset(root)
    assert [(p.kind, Path(p.path).name) for p in report.problems] == [("checksum", "file-001.mp4")]
    assert report.files_hashed == 8  # 2 data, 2 episodes files, tasks, stats, 2 videos


def test_parquet_page_checksums_catch_flips_without_recorded_digests(tabular: Path, tmp_path: Path) -> None:  # fmt: skip
    root = _copy(tabular, tmp_path)
    metadata = pq.ParquetFile(root / DATA0).metadata
    column = metadata.row_group(0).column(0)
    # a byte inside the first data page of observation.state
    position = column.data_page_offset + column.total_compressed_size // 2
    _edit_json(root, "meta/info.json", lambda i: i.pop("metis_integrity"))
    LeRobotDataset(root)
    _flip(root / DATA0, position)
    with pytest.raises(CorruptFileError, match=rf"{DATA0}: expected a parquet file, found an unreadable one"):  # fmt: skip
        LeRobotDataset(root)


def test_dataset_rewritten_by_other_tools_reads_with_structural_checks(tabular: Path, tmp_path: Path) -> None:  # fmt: skip
    # LeRobot's tools (aggregate_datasets, delete_episodes) rewrite info.json and the files
    # without our checksum records: the digests no longer apply, every other check still does
    root = _copy(tabular, tmp_path)
    table = pq.read_table(root / DATA0)
    pq.write_table(table, root / DATA0, compression="zstd")  # other bytes, same frames
    info = read_json(root / "meta/info.json")
    info["robot_type"] = "rewritten by lerobot"
    write_json(root / "meta/info.json", info)
    dataset = LeRobotDataset(root)
    assert not dataset.checksums_verified
    np.testing.assert_array_equal(dataset.state, LeRobotDataset(tabular).state)
    assert LeRobotDataset(tabular).checksums_verified
    report = check_dataset(root)  # check says info.json is not the one METIS wrote
    assert [p.kind for p in report.problems] == ["checksum"]
    assert "info_sha256" in report.problems[0].message
    _edit_parquet(root, DATA1, _set_rows("index", {0: 99}))
    with pytest.raises(InvalidDatasetError, match=r"file-001.parquet: episode 2: column 'index' holds 99"):  # fmt: skip
        LeRobotDataset(root)


def test_check_passes_on_what_the_project_writes_and_deep_counts_frames(video: Path, tabular: Path) -> None:  # fmt: skip
    report = check_dataset(video, deep=True)
    assert report.ok, report.summary()
    assert (report.episodes, report.frames, report.frames_decoded) == (4, 40, 40)
    assert check_dataset(tabular).ok
    result = CliRunner().invoke(main, ["check", str(video), "--deep"])
    assert result.exit_code == 0, result.output
    assert "OK (4 episodes, 40 frames" in result.output


def test_check_cli_reports_each_problem_and_exits_1(tabular: Path, tmp_path: Path) -> None:
    root = _copy(tabular, tmp_path)
    _flip(root / DATA1, 200)
    _edit_json(root, "meta/stats.json", lambda s: s["action"]["std"].__setitem__(0, -1.0))
    result = CliRunner().invoke(main, ["check", str(root)])
    assert result.exit_code == 1
    assert "[checksum]" in result.output
    assert "file-001.parquet" in result.output
    assert "[stats]" in result.output
    assert "cannot be negative" in result.output
    assert "2 problem(s)" in result.output


# -- raw errors -> clear errors -------------------------------------------------------------------


def _nan_fps(root: Path) -> None:
    text = (root / "meta/info.json").read_text()
    (root / "meta/info.json").write_text(text.replace('"fps": 30,', '"fps": NaN,', 1))


CLEAR = {
    "fps-abc": (
        _info(lambda i: i.update(fps="abc")),
        r"fps must be a positive finite number, got 'abc'",
    ),
    "fps-null": (
        _info(lambda i: i.update(fps=None)),
        r"fps must be a positive finite number, got None",
    ),
    "fps-zero": (_info(lambda i: i.update(fps=0)), r"fps must be a positive finite number, got 0"),
    "fps-nan": (_nan_fps, r"fps must be a positive finite number, got nan"),
    "total-episodes-null": (
        _info(lambda i: i.update(total_episodes=None)),
        r"total_episodes must be a non-negative integer, got None",
    ),
    "features-list": (_info(lambda i: i.update(features=[1, 2])), r"features must be an object"),
    "no-data-path": (
        _info(lambda i: i.pop("data_path")),
        r"data_path must be a path template string, got None",
    ),
    "null-document": (
        lambda r: (r / "meta/info.json").write_text("null"),
        r"expected a JSON object \(LeRobot info record\), got NoneType",
    ),
    "version-1.9": (
        _info(
            lambda i: i["features"]["observation.state"]["metis"]["contract"].update(version=1.9)
        ),
        r"contract version must be an integer, got 1.9",
    ),
    "version-true": (
        _info(
            lambda i: i["features"]["observation.state"]["metis"]["contract"].update(version=True)
        ),
        r"contract version must be an integer, got True",
    ),
    "version-inf": (
        _info(
            lambda i: i["features"]["observation.state"]["metis"]["contract"].update(
                version=float("inf")
            )
        ),
        r"contract version must be an integer, got inf",
    ),
    "stats-strings": (
        lambda r: _edit_json(r, "meta/stats.json", lambda s: s["action"].update(mean=["a"] * 48)),
        r"action.mean must be a list of 48 numbers",
    ),
    "stats-no-mean": (
        lambda r: _edit_json(r, "meta/stats.json", lambda s: s["action"].pop("mean")),
        r"statistics of 'action' lack \['mean'\]",
    ),
    "metadata-bad-json": (
        lambda r: _edit_parquet(r, EPISODES0, _set_rows("metis/metadata", {1: "{not json"})),
        r"file-000.parquet: episode 1: column 'metis/metadata' is not valid JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(CLEAR))
def test_malformed_metadata_gives_clear_errors(tabular: Path, tmp_path: Path, case: str) -> None:
    damage, message = CLEAR[case]
    root = _copy(tabular, tmp_path)
    damage(root)
    with pytest.raises(CorruptFileError, match=message) as caught:
        LeRobotDataset(root)
    assert str(root) in str(caught.value)
    report = check_dataset(root)
    assert not report.ok
    assert str(root) in str(report.problems[0])


def test_missing_video_path_and_flipped_string_byte(video: Path, tabular: Path, tmp_path: Path) -> None:  # fmt: skip
    root = _copy(video, tmp_path, "vp")
    _edit_json(root, "meta/info.json", lambda i: i.pop("video_path"))
    with pytest.raises(InvalidDatasetError, match="has video features but video_path is None"):
        LeRobotDataset(root)
    # a flipped byte inside a task string: UTF-8 that no longer decodes
    root = _copy(tabular, tmp_path, "utf")
    _edit_json(root, "meta/info.json", lambda i: i.pop("metis_integrity"))
    path = root / "meta/tasks.parquet"
    table = pq.read_table(path)
    text = table.column("task").to_pylist()[0]
    # uncompressed, no page checksum: only the reader's decoding stands between the flip and you
    pq.write_table(table, path, compression="none")
    data = bytearray(path.read_bytes())
    position = data.index(text.encode())
    data[position] = 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"tasks.parquet: .*(unreadable|cannot decode)"):
        LeRobotDataset(root)


def test_truncated_mp4_is_always_a_clear_error(video: Path, tmp_path: Path) -> None:
    # without the checksum (it would catch every cut first), at 24 cut points over the file
    path = video / VIDEO0
    whole = path.read_bytes()
    root = _copy(video, tmp_path)
    kinds = set()
    for cut in np.linspace(0, len(whole) * 0.95, 24).astype(int):
        (root / VIDEO0).write_bytes(whole[:cut])
        dataset = LeRobotDataset(root, verify_checksums=False)
        with pytest.raises(CorruptFileError, match=r"file-000.mp4") as caught:
            dataset.frames(1, np.arange(10))
        kinds.add(type(caught.value.__cause__).__name__)
    (root / VIDEO0).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        CorruptFileError, match=r"file-000.mp4: content does not match the checksum"
    ):
        LeRobotDataset(root).frames(0, [0])


# -- partial datasets ---------------------------------------------------------------------------


def test_killed_first_conversion_says_incomplete_and_resumes(tmp_path: Path) -> None:
    source = SyntheticSource(SyntheticConfig(episodes=5, frames=8, seed=7, render=False))
    episodes = list(source.iter_episodes())
    root = tmp_path / "partial"
    writer = LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2)  # fmt: skip
    for episode in episodes[:3]:
        writer.add_episode(episode)  # one flush of 2 episodes, then "killed"
    with pytest.raises(IncompleteDatasetError, match=r"incomplete METIS dataset: its conversion committed 2 episode\(s\) \(16 frames\).*allow_incomplete=True"):  # fmt: skip
        LeRobotDataset(root)
    partial = LeRobotDataset(root, allow_incomplete=True)
    assert (partial.complete, len(partial.episodes)) == (False, 2)
    report = check_dataset(root)
    assert not report.complete
    assert [p.kind for p in report.problems] == ["incomplete"]
    from metis_datasets import write_episodes

    write_episodes(root, iter(episodes), fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2, progress=False)  # fmt: skip
    done = LeRobotDataset(root)
    assert done.complete
    assert len(done.episodes) == 5
    assert check_dataset(root).ok


def test_kill_between_episodes_file_and_commit_is_incomplete_not_corrupt(tabular: Path, tmp_path: Path) -> None:  # fmt: skip
    root = _copy(tabular, tmp_path)
    # roll the commit record back by one flush: file 2's episodes now lie past it
    info = read_json(root / "meta/info.json")
    info.update(total_episodes=4, total_frames=48)
    info["features"]["observation.state"]["metis"]["complete"] = False
    write_json(root / "meta/info.json", info)
    (root / "meta/metis_checksums/chunk-000/file-002.json").unlink()
    with pytest.raises(IncompleteDatasetError, match=r"1 episode row\(s\) of an interrupted flush"):
        LeRobotDataset(root)
    dataset = LeRobotDataset(root, allow_incomplete=True)
    assert len(dataset.episodes) == 4
    assert len(dataset) == 48
    writer = LeRobotWriter(root, fps=30, source="synthetic", embodiment="human_mano", episodes_per_file=2)  # fmt: skip
    assert writer.committed_episodes == 4
    assert not (root / "meta/episodes/chunk-000/file-002.parquet").exists()


# -- pickles ------------------------------------------------------------------------------------


def test_pickle_allow_list_reads_numpy_protocols_0_to_5_and_refuses_code(tmp_path: Path) -> None:
    from metis_datasets.sources._common import load_pickle, load_pickled_npy

    value = {"pose": np.arange(12, dtype=np.float32).reshape(3, 4), "scale": np.float64(0.25), "ids": [np.int64(3), "a"], "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3))}  # fmt: skip
    for protocol in range(6):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        loaded = load_pickle(path)
        np.testing.assert_array_equal(loaded["pose"], value["pose"])
        np.testing.assert_array_equal(loaded["fortran"], value["fortran"])
        assert loaded["scale"] == 0.25
        assert loaded["ids"] == [3, "a"]
    np.save(tmp_path / "obj.npy", np.array(value, dtype=object), allow_pickle=True)
    np.testing.assert_array_equal(load_pickled_npy(tmp_path / "obj.npy")["pose"], value["pose"])

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    for protocol in range(6):
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil(), protocol=protocol))
        with pytest.raises(ValueError, match=r"refusing to unpickle (builtins|__builtin__).print"):
            load_pickle(tmp_path / "evil.pkl")
    # _codecs.encode is only accepted for latin-1 text
    payload = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x04\x00\x00\x00zlibq\x01\x86q\x02Rq\x03."  # fmt: skip
    (tmp_path / "codec.pkl").write_bytes(payload)
    with pytest.raises(ValueError, match="only latin-1 text"):
        load_pickle(tmp_path / "codec.pkl")
    # a truncated .npy says so
    np.save(tmp_path / "plain.npy", np.arange(100.0))
    data = (tmp_path / "plain.npy").read_bytes()
    (tmp_path / "plain.npy").write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match=r"truncated .npy file: the header promises 800 bytes"):
        load_pickled_npy(tmp_path / "plain.npy")
