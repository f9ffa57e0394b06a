"""Sharded conversion and merge; conversions that survive bad episodes (issue 12)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_egodex import FRAMES as EGODEX_FRAMES
from fixtures_egodex import write_egodex
from fixtures_h2o import write_h2o
from source_fixtures import hand_motion

from metis_core.io import read_json
from metis_datasets import LeRobotDataset, check_dataset
from metis_datasets.cli import main
from metis_datasets.convert import ConversionError, convert, shard_block
from metis_datasets.merge import merge

SEQUENCES = ("subject1/h1/0", "subject1/h1/1", "subject1/k1/0", "subject2/o1/4", "subject2/o1/5", "subject3/k1/2", "subject3/h1/3")  # fmt: skip


def test_shard_blocks_partition_in_order() -> None:
    for count in (0, 1, 2, 7, 10, 101):
        for shards in (1, 2, 3, 8):
            blocks = [shard_block(count, (k, shards)) for k in range(shards)]
            assert [i for b in blocks for i in b] == list(range(count))
            assert max(len(b) for b in blocks) - min(len(b) for b in blocks) <= 1
    with pytest.raises(ValueError, match="0 <= K < N"):
        shard_block(5, (3, 3))


@pytest.fixture(scope="module")
def h2o_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("h2o") / "raw"
    write_h2o(raw, frames=8, sequences=SEQUENCES)
    return raw


def _columns(dataset: LeRobotDataset) -> dict[str, np.ndarray]:
    keys = ("observation.state", "action", "observation.hand_mask", "index", "episode_index", "frame_index", "task_index", "timestamp")  # fmt: skip
    return {k: dataset.columns[k] for k in keys}


def test_three_shards_merged_equal_one_conversion(h2o_raw: Path, tmp_path: Path) -> None:
    config = {"image_height": 32, "image_width": 48}
    single = convert("h2o", h2o_raw, tmp_path / "single", config=config, episodes_per_file=2, progress=False)  # fmt: skip
    assert single.written == 7
    runner = CliRunner()
    shards = []
    for k in range(3):
        shards.append(tmp_path / f"shard{k}")
        result = runner.invoke(main, ["convert", "h2o", str(h2o_raw), str(shards[-1]), "--image-size", "32x48", "--shard", f"{k}/3", "--episodes-per-file", "1"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"h2o (shard {k}/3): {len(shard_block(7, (k, 3)))} episode(s) written" in result.output  # fmt: skip
    # shards given out of order: merge orders them by K
    result = runner.invoke(main, ["merge", str(tmp_path / "merged"), str(shards[2]), str(shards[0]), str(shards[1])])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "merged 3 shard(s)" in result.output
    assert "7 episodes, 56 frames" in result.output
    one, merged = LeRobotDataset(tmp_path / "single"), LeRobotDataset(tmp_path / "merged")
    assert merged.complete
    assert (len(merged.episodes), len(merged)) == (7, 56)
    for key, values in _columns(one).items():
        np.testing.assert_array_equal(_columns(merged)[key], values, err_msg=key)
    assert merged.tasks == one.tasks
    for a, b in zip(one.episodes, merged.episodes, strict=True):
        assert (a["length"], a["tasks"], a["subtasks"], a["metadata"], a["embodiment"]) == (b["length"], b["tasks"], b["subtasks"], b["metadata"], b["embodiment"])  # fmt: skip
    stats_one, stats_merged = read_json(tmp_path / "single/meta/stats.json"), read_json(tmp_path / "merged/meta/stats.json")  # fmt: skip
    for feature in ("observation.state", "action"):
        for name, values in stats_one[feature].items():
            np.testing.assert_allclose(stats_merged[feature][name], values, rtol=1e-6, atol=1e-7, err_msg=f"{feature}.{name}")  # fmt: skip
    # videos were linked, not re-encoded: the merged frames are the shards' frames
    worst = 0
    for episode in range(7):
        every = np.arange(8)
        worst = max(worst, int(np.abs(merged.frames(episode, every).astype(int) - one.frames(episode, every)).max()))  # fmt: skip
    assert worst <= 2
    assert (tmp_path / "merged/videos/observation.images.ego/chunk-000/file-006.mp4").stat().st_nlink == 2  # fmt: skip
    report = check_dataset(tmp_path / "merged", deep=True)
    assert report.ok, report.summary()
    assert report.frames_decoded == 56
    for shard in shards:
        assert check_dataset(shard).ok  # untouched


def test_merge_refuses_missing_or_repeated_shards_and_resumes(h2o_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    config = {"with_images": False}
    shards = [tmp_path / f"s{k}" for k in range(2)]
    for k, shard in enumerate(shards):
        convert("h2o", h2o_raw, shard, config=config, episodes_per_file=1, shard=(k, 2), progress=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] of 2 are missing"):
        merge(tmp_path / "m", [shards[0]])
    with pytest.raises(ValueError, match="given twice"):
        merge(tmp_path / "m", [shards[0], shards[0]])
    # a merge killed after two files resumes to the same result
    import metis_datasets.merge as merge_module

    real, calls = merge_module._merge_unit, []

    def dies(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(merge_module, "_merge_unit", dies)
    with pytest.raises(KeyboardInterrupt):
        merge(tmp_path / "m", shards)
    monkeypatch.setattr(merge_module, "_merge_unit", real)
    report = merge(tmp_path / "m", shards)
    assert (report.files_already_done, report.episodes) == (2, 7)
    single = convert("h2o", h2o_raw, tmp_path / "one", config=config, progress=False)
    assert single.written == 7
    np.testing.assert_array_equal(LeRobotDataset(tmp_path / "m").state, LeRobotDataset(tmp_path / "one").state)  # fmt: skip
    assert check_dataset(tmp_path / "m").ok
    # a resumed shard keeps its shard identity
    with pytest.raises(ValueError, match="holds shard 0/2, cannot continue it as shard 1/2"):
        convert("h2o", h2o_raw, shards[0], config=config, shard=(1, 2), progress=False)


def _egodex_raw(root: Path) -> None:
    truths = {"left": hand_motion(EGODEX_FRAMES, "left", seed=3), "right": hand_motion(EGODEX_FRAMES, "right", seed=4)}  # fmt: skip
    folder = root / "part1" / "box_open_close"
    for k in range(5):
        write_egodex(folder / f"{k}.hdf5", truths)
    path = folder / "1.hdf5"  # truncated download
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with h5py.File(folder / "2.hdf5", "r+") as handle:  # a singular head pose
        camera = handle["transforms/camera"][...]
        camera[4] = 0.0
        del handle["transforms/camera"]
        handle["transforms/camera"] = camera
    with h5py.File(folder / "3.hdf5", "r+") as handle:  # a joint track shorter than the others
        short = handle["transforms/leftHand"][:-2]
        del handle["transforms/leftHand"]
        handle["transforms/leftHand"] = short


def test_bad_episodes_are_skipped_with_file_and_reason_and_strict_fails(tmp_path: Path) -> None:
    _egodex_raw(tmp_path / "raw")
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "egodex", str(tmp_path / "raw"), str(tmp_path / "out"), "--no-images"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 episode(s) written, 0 already converted, 3 skipped" in result.output
    lines = result.output.splitlines()
    reason = {name: next(line for line in lines if f"box_open_close/{name}:" in line) for name in ("1", "2", "3")}  # fmt: skip
    assert "OSError" in reason["1"]
    assert "1.hdf5" in reason["1"]
    assert "LinAlgError" in reason["2"]
    assert "box_open_close/2" in reason["2"]
    assert "ValueError" in reason["3"]
    assert "box_open_close/3" in reason["3"]
    assert len(LeRobotDataset(tmp_path / "out").episodes) == 2
    log = read_json(tmp_path / "out/meta/metis_conversion.json")
    assert [s["episode"] for s in log["skipped"]] == [f"part1/box_open_close/{k}" for k in (1, 2, 3)]  # fmt: skip
    result = runner.invoke(main, ["convert", "egodex", str(tmp_path / "raw"), str(tmp_path / "strict"), "--no-images", "--strict", "--episodes-per-file", "1"])  # fmt: skip
    assert result.exit_code != 0
    assert "episode part1/box_open_close/1 could not be converted: OSError" in result.output
    assert "--strict stops at the first such episode (1 written" in result.output
    with pytest.raises(ConversionError):
        convert("egodex", tmp_path / "raw", tmp_path / "strict2", config={"with_images": False}, strict=True, progress=False)  # fmt: skip
