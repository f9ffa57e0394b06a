"""``metis-datasets convert``: generic conversion, workers, resume, skipped summary, mixing, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_arctic import write_arctic_splits
from fixtures_h2o import write_h2o
from fixtures_holoassist import write_holoassist
from fixtures_oakink import write_oakink
from source_fixtures import check_hand

from metis_datasets import TABLE6_WEIGHTS, LeRobotDataset, MixtureDataset
from metis_datasets.cli import main
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


def test_converted_sources_mix_at_table6_weights_and_print_stats(tmp_path) -> None:
    write_h2o(tmp_path / "h2o_raw", frames=8, sequences=SEQUENCES[:2], images=False)
    write_arctic_splits(tmp_path / "arctic_raw", frames=8)
    write_holoassist(tmp_path / "holo_raw", frames=8)
    write_oakink(tmp_path / "oak_raw")
    roots = {}
    for name, raw, extra in (("h2o", "h2o_raw", {}), ("arctic", "arctic_raw", {"splits": "p2_val"}), ("holoassist", "holo_raw", {}), ("oakink", "oak_raw", {})):  # fmt: skip
        roots[name] = tmp_path / name
        convert(name, tmp_path / raw, roots[name], config={"with_images": False, **extra}, progress=False)  # fmt: skip
    mixture = MixtureDataset(list(roots.values()), seed=0, num_samples=4000)
    total = sum(TABLE6_WEIGHTS[n] for n in roots)
    drawn = mixture.proportions(4000)
    for name in roots:
        assert drawn[name] == pytest.approx(TABLE6_WEIGHTS[name] / total, abs=0.02)
    sample = next(iter(mixture))
    assert sample["action"].shape == (30, 48)
    result = CliRunner().invoke(main, ["stats", *map(str, roots.values())])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.strip()}
    assert lines["h2o"][1:5] == ["2", "16", "yes", "yes"]
    assert lines["arctic"][1:5] == ["2", "16", "yes", "no"]
    assert lines["holoassist"][1:5] == ["1", "8", "yes", "yes"]
    assert lines["holoassist"][-1] == "yes"
    assert lines["oakink"][1:5] == ["1", "14", "yes", "no"]
