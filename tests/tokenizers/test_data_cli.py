"""Motion generator, window files, LeRobot directories and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metis_core.rotations import geodesic_angle, rot6d_to_matrix
from metis_tokenizers import generate_motion_windows
from metis_tokenizers._common import to_relative
from metis_tokenizers.cli import main
from metis_tokenizers.data import load_windows, save_windows, windows_from_episodes


def test_generator_is_dynamic_smooth_and_split() -> None:
    windows = generate_motion_windows(2000, seed=0)
    assert windows.actions.shape == (2000, 16, 48)
    assert windows.actions.dtype == torch.float32
    relative = to_relative(windows.actions)
    displacement = relative[:, -1, 0:3].norm(dim=-1).max(), relative[:, :, 0:3].norm(dim=-1)
    assert 0.2 < float(displacement[0]) <= 0.26  # wrists move up to about 25 cm
    turn = geodesic_angle(
        rot6d_to_matrix(windows.actions[:, 0, 3:9]), rot6d_to_matrix(windows.actions[:, -1, 3:9])
    )
    assert 45.0 < float(torch.rad2deg(turn).max()) <= 62.0  # and turn up to about 60 degrees
    heldout = generate_motion_windows(10, seed=0, split="heldout")
    assert not torch.allclose(heldout.actions, windows.actions[:10])
    again = generate_motion_windows(10, seed=0, split="heldout")
    assert torch.equal(again.actions, heldout.actions)
    one_hand = generate_motion_windows(200, seed=0, one_hand_fraction=0.5)
    assert 50 < int((~one_hand.hand_mask).any(1).sum()) < 150
    with pytest.raises(ValueError, match="split"):
        generate_motion_windows(3, split="validation")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_window_files_round_trip(tmp_path, suffix) -> None:
    windows = generate_motion_windows(20, seed=4, one_hand_fraction=0.5)
    path = save_windows(tmp_path / f"w{suffix}", windows)
    loaded = load_windows(path)
    assert torch.equal(loaded.actions, windows.actions)
    assert torch.equal(loaded.hand_mask, windows.hand_mask)


def test_bad_window_files(tmp_path) -> None:
    np.save(tmp_path / "bad.npy", np.zeros((3, 16, 40), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(N, T, 48\)"):
        load_windows(tmp_path / "bad.npy")
    nan = np.zeros((3, 16, 48), dtype=np.float32)
    nan[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="NaN"):
        load_windows(tmp_path / "nan.npy")
    with pytest.raises(FileNotFoundError):
        load_windows(tmp_path / "missing.npz")


def test_lerobot_directory_reads_committed_episodes_and_the_stored_mask(tmp_path) -> None:
    pytest.importorskip("pyarrow")
    datasets = pytest.importorskip("metis_datasets")
    import shutil

    from metis_core.io import read_json, write_json
    from metis_datasets.synthetic import make_dataset

    # 5 episodes of 40 frames, 2 per file; the idle hand is out of view in some episodes
    root = make_dataset(tmp_path / "ds", episodes=5, seed=11, frames=40, image_size=None, episodes_per_file=2)  # fmt: skip
    full = datasets.LeRobotDataset(root)
    # 0.5 s at 30 fps = 15 intervals = 16 frames: windows are the stored frames, starts 0 and 15
    loaded = load_windows(root, window_len=16, window_seconds=0.5)
    assert loaded.actions.shape == (10, 16, 48)  # two whole windows per 40-frame episode
    np.testing.assert_allclose(loaded.actions[1].numpy(), full.action[15:31], atol=1e-6)
    expected = np.stack([full.hand_mask[e * 40 + b : e * 40 + b + 16].all(0) for e in range(5) for b in (0, 15)])  # fmt: skip
    np.testing.assert_array_equal(loaded.hand_mask.numpy(), expected)
    assert not expected.all()  # some windows lack a hand: read from the mask, not guessed
    # a killed flush: the last file's episode lies past the commit record, and a stray copy
    info = read_json(root / "meta/info.json")
    info.update(total_episodes=4, total_frames=160)
    write_json(root / "meta/info.json", info)
    shutil.copy(root / "data/chunk-000/file-000.parquet", root / "data/chunk-000/file-007.parquet")
    partial = load_windows(root, window_len=16, window_seconds=0.5)
    assert partial.actions.shape == (8, 16, 48)  # 4 committed episodes, never 5 or 7
    np.testing.assert_array_equal(partial.actions.numpy(), loaded.actions[:8].numpy())
    # a METIS dataset without its stored mask is refused, not guessed
    info["features"].pop("observation.hand_mask")
    write_json(root / "meta/info.json", info)
    with pytest.raises(ValueError, match=r"'observation.hand_mask' is missing"):
        load_windows(root, window_len=16)
    (root / "meta/info.json").unlink()
    with pytest.raises(FileNotFoundError, match="info.json is missing"):
        load_windows(root, window_len=16)
    assert windows_from_episodes(full.action, full.columns["episode_index"][:, 0], 16, stride=8).shape == (20, 16, 48)  # fmt: skip


def test_truncated_window_files_are_clear_errors(tmp_path) -> None:
    from metis_core.io import CorruptFileError

    windows = generate_motion_windows(6, seed=2)
    for suffix in (".npz", ".npy"):
        path = tmp_path / f"w{suffix}"
        if suffix == ".npz":
            save_windows(path, windows)
        else:
            np.save(path, windows.actions.numpy())
        data = path.read_bytes()
        for cut in (len(data) // 3, len(data) - 10):
            path.write_bytes(data[:cut])
            with pytest.raises((CorruptFileError, ValueError), match=f"w\\{suffix}"):
                load_windows(path)


def test_cli_generate_train_eval(tmp_path) -> None:
    runner = CliRunner()
    train, heldout = str(tmp_path / "train.npz"), str(tmp_path / "heldout.npz")
    for path, split, count in ((train, "train", 600), (heldout, "heldout", 64)):
        result = runner.invoke(main, ["generate", path, "--count", str(count), "--split", split])
        assert result.exit_code == 0, result.output
    config = json.dumps({"hidden_dim": 32, "latent_dim": 32, "codebook_size": 64})
    result = runner.invoke(
        main,
        ["train", "motion_rvq", "--data", train, "--out", str(tmp_path / "rvq"), "--steps", "8",
         "--batch-size", "32", "--config", config, "--part-weights", "2,2,1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "rvq" / "checkpoint" / "trainer_state.json").read_text())
    assert state["train_config"]["part_weights"] == [2.0, 2.0, 1.0]
    for bad in ("2,2", "1,-1,1", "a,b,c"):
        result = runner.invoke(main, ["train", "motion_rvq", "--data", train, "--out", str(tmp_path / "bad"), "--part-weights", bad])  # fmt: skip
        assert result.exit_code == 2
        assert "three comma-separated non-negative numbers" in result.output
    assert (tmp_path / "rvq" / "model.safetensors").is_file()
    assert (tmp_path / "rvq" / "checkpoint" / "trainer_state.json").is_file()
    result = runner.invoke(
        main, ["eval", str(tmp_path / "rvq"), "--data", heldout, "--json", str(tmp_path / "r.json")]
    )
    assert result.exit_code == 0, result.output
    for text in ("tokens per window    40.0", "wrist position", "wrist rotation", "fingertips",
                 "encode / decode", "codebook level 1"):  # fmt: skip
        assert text in result.output
    assert (tmp_path / "rvq" / "eval.png").stat().st_size > 1000
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["tokens_per_window"] == 40.0
    assert report["fixed_length"]
    result = runner.invoke(
        main, ["train", "binning", "--data", train, "--out", str(tmp_path / "bins")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["eval", str(tmp_path / "bins"), "--data", heldout])
    assert result.exit_code == 0
    assert "tokens per window    720.0" in result.output


def test_metis_cli_gets_the_tokenizers_group() -> None:
    import subprocess
    import sys

    code = "from metis_core.cli import main; main(['tokenizers', 'list'])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["binning", "dct_bpe", "motion_rvq", "visual_dynamics_vq"]


def _moving_episode(fps: float, seconds: float = 3.0):
    """Frames of a right wrist moving 0.2 m/s along x and turning 30°/s about z (left missing)."""
    from metis_core.contract import RIGHT
    from metis_core.episode import Episode
    from metis_core.rotations import matrix_to_rot6d

    frames = int(seconds * fps) + 1
    t = np.arange(frames) / fps
    action = np.zeros((frames, 48), dtype=np.float32)
    action[:, RIGHT.wrist_position.start] = 0.2 * t
    angle = np.deg2rad(30.0) * t
    rotation = np.zeros((frames, 3, 3))
    rotation[:, 0, 0], rotation[:, 0, 1] = np.cos(angle), -np.sin(angle)
    rotation[:, 1, 0], rotation[:, 1, 1] = np.sin(angle), np.cos(angle)
    rotation[:, 2, 2] = 1.0
    action[:, RIGHT.wrist_rot6d] = matrix_to_rot6d(torch.from_numpy(rotation)).numpy()
    mask = np.tile([[False, True]], (frames, 1))
    return Episode(state=action.copy(), action=action, hand_mask=mask, fps=fps)


@pytest.mark.parametrize("fps", [30.0, 15.0, 60.0])
def test_windows_span_one_second_at_any_rate(fps) -> None:
    from metis_core.contract import RIGHT
    from metis_core.vla.data import motion_windows_for_episode
    from metis_tokenizers.data import timed_windows_from_episodes

    episode = _moving_episode(fps)
    frames = episode.action.shape[0]
    windows, present = timed_windows_from_episodes(
        episode.action, episode.hand_mask, np.zeros(frames, dtype=int), fps=fps
    )
    assert windows.shape[1:] == (16, 48)
    assert present.tolist() == [[False, True]] * len(windows)
    x = windows[:, :, RIGHT.wrist_position.start]
    # 16 frames spanning exactly one second: 0.2 m of travel, evenly spaced.
    np.testing.assert_allclose(x[:, -1] - x[:, 0], 0.2, atol=1e-5)
    np.testing.assert_allclose(np.diff(x, axis=1), 0.2 / 15, atol=1e-5)
    # The same windows as the policy's rule (metis_core.vla.data), frame for frame.
    span = round(fps)
    starts = list(range(0, frames - span, span))
    reference, _ = motion_windows_for_episode(episode, frames=starts)
    np.testing.assert_allclose(windows, reference.numpy(), atol=1e-5)


def test_window_duration_is_saved_and_checked(tmp_path) -> None:
    from metis_tokenizers.data import load_windows, save_windows
    from metis_tokenizers.motion_generator import MotionWindows

    windows = generate_motion_windows(16, seed=0)
    assert windows.window_seconds == 1.0
    for suffix in (".npz", ".safetensors"):
        path = tmp_path / f"w{suffix}"
        save_windows(path, MotionWindows(actions=windows.actions, hand_mask=windows.hand_mask, window_seconds=0.5))  # fmt: skip
        assert load_windows(path).window_seconds == 0.5
        with pytest.raises(ValueError, match=r"span 0.5 s, expected 1 s"):
            load_windows(path, window_seconds=1.0)
