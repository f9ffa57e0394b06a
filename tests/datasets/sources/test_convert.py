"""``metis-datasets convert``: generic conversion, workers, resume, skipped summary, mixing, stats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_actionnet import actionnet_scene, write_actionnet
from fixtures_arctic import write_arctic_splits
from fixtures_egodex import FRAMES as EGODEX_FRAMES
from fixtures_egodex import write_egodex
from fixtures_h2o import write_h2o
from fixtures_holoassist import write_holoassist
from fixtures_metis_glove import write_metis_glove
from fixtures_oakink import write_oakink
from fixtures_ph2d import FRAMES as PH2D_FRAMES
from fixtures_ph2d import TASK as PH2D_TASK
from fixtures_ph2d import ph2d_scene, write_ph2d_episode
from source_fixtures import check_hand, hand_motion

from metis_datasets import TABLE6_WEIGHTS, LeRobotDataset, MixtureDataset, check_dataset
from metis_datasets.cli import dataset_table, main
from metis_datasets.convert import CONVERSION_LOG, convert, converted_episode_ids
from metis_datasets.sources.h2o import H2OSource

SEQUENCES = ("subject1/h1/0", "subject1/h1/1", "subject1/k1/0", "subject2/o1/4")


def test_cli_converts_with_workers_and_lists_skipped(tmp_path) -> None:
    truths = write_h2o(tmp_path / "raw", frames=8, sequences=SEQUENCES)
    (tmp_path / "raw/subject1/k1/0/cam4/rgb/000005.png").unlink()
    result = CliRunner().invoke(main, ["convert", "h2o", str(tmp_path / "raw"), str(tmp_path / "out"), "--workers", "2", "--image-size", "32x48"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3 episode(s) written, 0 already converted, 1 skipped" in result.output
    assert "subject1/k1/0: ego frame" in result.output
    assert "000005.png is missing" in result.output
    dataset = LeRobotDataset(tmp_path / "out")
    assert dataset.source == "h2o"
    assert dataset.fps == 30.0
    assert len(dataset.episodes) == 3
    assert converted_episode_ids(tmp_path / "out") == ["subject1/h1/0", "subject1/h1/1", "subject2/o1/4"]  # fmt: skip
    episode = dataset.episode(2, with_images=False)
    right = truths["subject2/o1/4"]["right"]
    error_mm, error_deg = check_hand(episode.state, episode.hand_mask, right, "right")
    assert error_mm < 1.0
    assert error_deg < 0.5
    assert [s.text for s in episode.subtasks] == ["grab milk", "pour milk"]
    log = json.loads((tmp_path / "out" / CONVERSION_LOG).read_text())
    assert log["skipped"][0]["episode"] == "subject1/k1/0"


def test_interrupted_conversion_resumes(tmp_path, monkeypatch) -> None:
    write_h2o(tmp_path / "raw", frames=6, sequences=SEQUENCES, images=False)
    original = H2OSource.load_episode
    calls = []

    def flaky(self, raw_dir, episode_id):
        calls.append(episode_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third episode
        return original(self, raw_dir, episode_id)

    monkeypatch.setattr(H2OSource, "load_episode", flaky)
    with pytest.raises(KeyboardInterrupt):
        convert("h2o", tmp_path / "raw", tmp_path / "out", config={"with_images": False}, episodes_per_file=1, progress=False)  # fmt: skip
    assert converted_episode_ids(tmp_path / "out") == list(SEQUENCES[:2])
    monkeypatch.setattr(H2OSource, "load_episode", original)
    report = convert("h2o", tmp_path / "raw", tmp_path / "out", config={"with_images": False}, episodes_per_file=1, progress=False)  # fmt: skip
    assert (report.already_done, report.written, report.skipped) == (2, 2, [])
    dataset = LeRobotDataset(tmp_path / "out")
    assert converted_episode_ids(tmp_path / "out") == list(SEQUENCES)
    fresh = convert("h2o", tmp_path / "raw", tmp_path / "fresh", config={"with_images": False}, progress=False)  # fmt: skip
    assert fresh.written == 4
    np.testing.assert_array_equal(dataset.state, LeRobotDataset(tmp_path / "fresh").state)
    # a third run has nothing left to do
    again = convert("h2o", tmp_path / "raw", tmp_path / "out", config={"with_images": False}, progress=False)  # fmt: skip
    assert (again.already_done, again.written) == (4, 0)


def test_errors_name_the_problem(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "h2oo", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "Did you mean 'h2o'" in result.output
    result = runner.invoke(main, ["convert", "holoassist", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "Export_py/Hands/Right_sync.txt" in result.output
    write_h2o(tmp_path / "raw", frames=1, sequences=("subject1/h1/0",), images=False)
    result = runner.invoke(main, ["convert", "h2o", str(tmp_path / "raw"), str(tmp_path / "out"), "--no-images"])  # fmt: skip
    assert result.exit_code != 0
    assert "no episode" in result.output
    assert "1 hand-pose file(s)" in result.output
    result = runner.invoke(main, ["convert", "h2o", str(tmp_path / "raw"), str(tmp_path / "out"), "--set", "camrea=cam4"])  # fmt: skip
    assert result.exit_code != 0
    assert "did you mean 'camera'" in result.output


def _write_all_eight(tmp_path: Path) -> dict[str, tuple[Path, dict]]:
    """One small raw download per source, in that source's own layout; name -> (raw, config)."""
    write_h2o(tmp_path / "h2o_raw", frames=8, sequences=SEQUENCES[:2], images=False)
    write_arctic_splits(tmp_path / "arctic_raw", frames=8)
    write_holoassist(tmp_path / "holoassist_raw", frames=8)
    write_oakink(tmp_path / "oakink_raw")
    truths = {"left": hand_motion(EGODEX_FRAMES, "left", seed=3), "right": hand_motion(EGODEX_FRAMES, "right", seed=4)}  # fmt: skip
    write_egodex(tmp_path / "egodex_raw" / "part1" / "box_open_close" / "0.hdf5", truths)
    folder = tmp_path / "ph2d_raw" / "processed" / PH2D_TASK
    write_ph2d_episode(folder / "processed_episode_0.hdf5", ph2d_scene(0, robot=False), "human_avp")  # fmt: skip
    write_ph2d_episode(folder / "processed_episode_1.hdf5", ph2d_scene(1, robot=False), "human_avp")  # fmt: skip
    write_ph2d_episode(folder / "processed_episode_2.hdf5", ph2d_scene(2, robot=True), "h1_inspire")  # fmt: skip
    write_actionnet(tmp_path / "actionnet_raw", actionnet_scene(0))
    write_metis_glove(tmp_path / "metis_glove_raw", frames=16, video=False)
    return {name: (tmp_path / f"{name}_raw", {"splits": "p2_val"} if name == "arctic" else {}) for name in TABLE6_WEIGHTS}  # fmt: skip


def test_all_eight_sources_mix_at_table6_weights_and_print_stats(tmp_path: Path) -> None:
    roots = {}
    for name, (raw, extra) in _write_all_eight(tmp_path).items():
        roots[name] = tmp_path / name
        report = convert(name, raw, roots[name], config={"with_images": False, **extra}, progress=False)  # fmt: skip
        assert report.skipped == [], (name, report.skipped)
        check = check_dataset(roots[name])  # every dataset the project writes passes the check
        assert check.ok, check.summary()
    assert sorted(roots) == sorted(["arctic", "h2o", "holoassist", "oakink", "egodex", "ph2d", "actionnet", "metis_glove"])  # fmt: skip
    # default weights by source name = Table 6
    count = 20000
    mixture = MixtureDataset(list(roots.values()), seed=0, num_samples=count)
    drawn = mixture.proportions(count)
    total = sum(TABLE6_WEIGHTS.values())
    for name in roots:
        expected = TABLE6_WEIGHTS[name] / total
        # deterministic under the seed; 4 binomial standard deviations
        assert drawn[name] == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / count)), name  # fmt: skip
    assert drawn["egodex"] > drawn["metis_glove"] > drawn["actionnet"] > drawn["holoassist"] > drawn["ph2d"] > drawn["arctic"] > drawn["oakink"] > drawn["h2o"]  # fmt: skip
    sample = next(iter(mixture))
    assert sample["action"].shape == (30, 48)
    # robots went through forward kinematics of the embodiment named in the dataset
    assert LeRobotDataset(roots["actionnet"]).episodes[0]["embodiment"] == "fourier"
    assert [ep["embodiment"] for ep in LeRobotDataset(roots["ph2d"]).episodes] == ["human_mano", "human_mano", "inspire"]  # fmt: skip
    rows = {row["dataset"]: row for row in dataset_table(list(roots.values()))}
    assert rows["ph2d"]["robot_pct"] == pytest.approx(100 / 3)
    result = CliRunner().invoke(main, ["stats", *map(str, roots.values())])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    # dataset: #traj, #frames, pose, subtask, human %, robot %, in the wild
    expected_rows = {
        "h2o": ["2", "16", "yes", "yes", "100.0", "0.0", "no"],
        "arctic": ["2", "16", "yes", "no", "100.0", "0.0", "no"],
        "holoassist": ["1", "8", "yes", "yes", "100.0", "0.0", "yes"],
        "oakink": ["1", "14", "yes", "no", "100.0", "0.0", "no"],
        "egodex": ["1", str(EGODEX_FRAMES), "yes", "no", "100.0", "0.0", "yes"],
        "ph2d": ["3", str(3 * PH2D_FRAMES), "yes", "no", "66.7", "33.3", "yes"],
        "actionnet": ["1", "20", "yes", "no", "0.0", "100.0", "yes"],
        "metis_glove": ["1", "23", "yes", "yes", "100.0", "0.0", "yes"],
    }
    for name, expected_row in expected_rows.items():
        assert lines[name][1:] == expected_row, (name, lines[name])
    frames = sum(int(row[1]) for row in expected_rows.values())
    assert lines["Total"][1:] == ["12", str(frames)]


def test_convert_cli_on_robot_and_glove_sources(tmp_path: Path) -> None:
    folder = tmp_path / "ph2d_raw" / "processed" / PH2D_TASK
    write_ph2d_episode(folder / "processed_episode_0.hdf5", ph2d_scene(0, robot=False), "human_avp")  # fmt: skip
    write_ph2d_episode(folder / "processed_episode_1.hdf5", ph2d_scene(1, robot=False), "human_avp")  # fmt: skip
    write_ph2d_episode(folder / "processed_episode_2.hdf5", ph2d_scene(2, robot=True), "h1_inspire")  # fmt: skip
    write_metis_glove(tmp_path / "metis_glove_raw", frames=16, video=False)
    write_h2o(tmp_path / "h2o_raw", frames=4, sequences=SEQUENCES[:1], images=False)
    raws = {name: (tmp_path / f"{name}_raw", {}) for name in ("ph2d", "metis_glove", "h2o")}
    runner = CliRunner()
    result = runner.invoke(main, ["convert", "ph2d", str(raws["ph2d"][0]), str(tmp_path / "ph2d"), "--image-size", "48x64"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ph2d: 3 episode(s) written, 0 already converted, 0 skipped" in result.output
    result = runner.invoke(main, ["convert", "ph2d", str(raws["ph2d"][0]), str(tmp_path / "ph2d_robot"), "--set", "part=robot", "--no-images"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "1 episode(s) written, 0 already converted, 2 skipped" in result.output
    assert "human_avp episode (converting part='robot')" in result.output
    result = runner.invoke(main, ["convert", "metis_glove", str(raws["metis_glove"][0]), str(tmp_path / "glove"), "--no-images", "--fps", "20"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "metis_glove: 1 episode(s) written" in result.output
    episode = LeRobotDataset(tmp_path / "glove").episode(0, with_images=False)
    assert (episode.fps, episode.length) == (20.0, 16)
    assert converted_episode_ids(tmp_path / "glove") == ["ep_0001"]
    again = runner.invoke(main, ["convert", "metis_glove", str(raws["metis_glove"][0]), str(tmp_path / "glove"), "--no-images", "--fps", "20"])  # fmt: skip
    assert "0 episode(s) written, 1 already converted, 0 skipped" in again.output
    wrong = runner.invoke(
        main, ["convert", "metis_glove", str(raws["h2o"][0]), str(tmp_path / "x")]
    )
    assert wrong.exit_code != 0
    assert "no <episode>/meta.json; found ['subject1']" in wrong.output
