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


def test_lerobot_directory(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    frames = generate_motion_windows(4, window_len=40, seed=6).actions.reshape(-1, 48).numpy()
    episodes = np.repeat(np.arange(4), 40)
    target = tmp_path / "ds" / "data" / "chunk-000"
    target.mkdir(parents=True)
    table = pa.table({"action": list(frames), "episode_index": episodes})
    pq.write_table(table, target / "file-000.parquet")
    loaded = load_windows(tmp_path / "ds", window_len=16)
    assert loaded.actions.shape == (8, 16, 48)  # two whole windows per 40-frame episode
    assert np.allclose(loaded.actions[1].numpy(), frames[16:32])
    assert windows_from_episodes(frames, episodes, 16, stride=8).shape == (16, 16, 48)


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
