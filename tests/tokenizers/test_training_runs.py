"""Issue 13: honest resume, continuous logs, atomic saves, thread and schedule defaults."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from helpers_tokenizers import SMALL, small_config

from metis_tokenizers import MotionRVQ, generate_motion_windows
from metis_tokenizers import training as training_module
from metis_tokenizers.cli import main
from metis_tokenizers.motion_generator import MotionWindows
from metis_tokenizers.training import (
    TrainConfig,
    _learning_rate,
    choose_threads,
    train_motion_rvq,
)

TINY = {"hidden_dim": 32, "latent_dim": 32, "codebook_size": 64}


@pytest.fixture(scope="module")
def windows() -> MotionWindows:
    return generate_motion_windows(256, seed=5)


def _run(windows, out, steps=4, resume=True, **train):
    settings = {"batch_size": 32, "log_every": 1, "checkpoint_every": 2, "seed": 3, "threads": 1}
    return train_motion_rvq(
        windows,
        out,
        model_config=small_config(**TINY),
        train_config=TrainConfig(steps=steps, **{**settings, **train}),
        resume=resume,
        progress=False,
    )


def _log_steps(run) -> list[int]:
    lines = (run / "training_log.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 4}, "seed: 3 in the checkpoint, 4 now"),
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"batch_size": 16}, "batch_size: 32 in the checkpoint, 16 now"),
        ({"data": True}, "data:"),
    ],
    ids=["seed", "lr", "batch", "data"],
)
def test_resume_refuses_another_configuration_or_data(windows, tmp_path, change, message) -> None:
    _run(windows, tmp_path / "run")
    other = generate_motion_windows(256, seed=6) if change.pop("data", False) else windows
    with pytest.raises(ValueError, match=message):
        _run(other, tmp_path / "run", **change)
    # The same settings resume (0 more steps) and report the loss the run ended with.
    again = _run(windows, tmp_path / "run")
    assert again.steps == 4
    assert again.final_loss == pytest.approx(_logged_loss(tmp_path / "run"))


def _logged_loss(run) -> float:
    return json.loads((run / "training_log.jsonl").read_text().splitlines()[-1])["loss"]


def test_logs_are_continuous_after_resume_and_restart(windows, tmp_path) -> None:
    run = tmp_path / "run"
    _run(windows, run, steps=4)
    # An interrupted continuation logged steps 5 and 6 but died before its next checkpoint.
    with (run / "training_log.jsonl").open("a") as handle:
        for step in (5, 6):
            handle.write(json.dumps({"step": step, "loss": 99.0}) + "\n")
    _run(windows, run, steps=8)
    assert _log_steps(run) == list(range(1, 9))
    assert 99.0 not in [json.loads(x)["loss"] for x in (run / "training_log.jsonl").read_text().splitlines()]  # fmt: skip
    _run(windows, run, steps=3, resume=False, checkpoint_every=0)  # starts over: a new log
    assert _log_steps(run) == [1, 2, 3]
    assert json.loads((run / "checkpoint" / "trainer_state.json").read_text())["step"] == 3


def test_a_kill_during_the_checkpoint_switch_keeps_the_previous_copy(
    windows, tmp_path, monkeypatch
) -> None:
    run = tmp_path / "run"
    _run(windows, run, steps=2, checkpoint_every=2)
    real_replace = os.replace

    def killed(src, dst):
        if os.path.basename(os.fspath(dst)) == "checkpoint":
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(training_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(windows, run, steps=4, checkpoint_every=4)
    monkeypatch.setattr(training_module.os, "replace", real_replace)
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 2
    resumed = _run(windows, run, steps=4, checkpoint_every=4)
    straight = _run(windows, tmp_path / "straight", steps=4, checkpoint_every=4)
    for key, value in straight.tokenizer.state_tensors().items():
        assert torch.equal(value, resumed.tokenizer.state_tensors()[key]), key


def test_a_checkpoint_stranded_by_the_old_two_rename_switch_is_recovered(windows, tmp_path) -> None:
    run = tmp_path / "run"
    _run(windows, run, steps=2, checkpoint_every=2)
    # What a kill between the two renames of atomic_directory(overwrite=True) left behind.
    stranded = run / ".checkpoint.x1y2.old"
    stranded.mkdir()
    shutil.copytree(run / "checkpoint", stranded / "old", symlinks=False)
    (run / "checkpoint").unlink()
    shutil.rmtree(run / ".checkpoint.versions")
    result = _run(windows, run, steps=4)
    assert result.steps == 4
    assert _log_steps(run) == [1, 2, 3, 4]  # continued from step 2, not from 0


def test_the_final_save_is_one_switch(windows, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    first = _run(windows, run, steps=2)
    codes = first.tokenizer.encode(windows.actions[:8])
    real_replace = os.replace

    def killed(src, dst):
        if os.path.basename(os.fspath(dst)) == ".final":
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(training_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(windows, run, steps=4)
    monkeypatch.undo()
    # config.json and model.safetensors still form the complete, earlier tokenizer.
    assert (run / "config.json").resolve().parent == (run / "model.safetensors").resolve().parent
    assert torch.equal(MotionRVQ.from_pretrained(run).encode(windows.actions[:8]), codes)


def test_thread_choice_and_its_report(monkeypatch, windows, tmp_path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(2)))
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    assert choose_threads().threads == 1  # 2 cores, one busy
    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(16)))
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert choose_threads().threads == 4
    assert choose_threads(3).threads == 3
    assert "load 0.0" in choose_threads().reason
    path = tmp_path / "w.safetensors"
    from metis_tokenizers.data import save_windows

    save_windows(path, MotionWindows(actions=windows.actions[:64], hand_mask=windows.hand_mask[:64]))  # fmt: skip
    runner = CliRunner()
    config = json.dumps({**SMALL, **TINY})
    out = runner.invoke(main, ["train", "motion_rvq", "--data", str(path), "--out", str(tmp_path / "r"), "--steps", "2", "--batch-size", "16", "--config", config])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "4 torch threads" in out.output
    out = runner.invoke(main, ["eval", str(tmp_path / "r"), "--data", str(path), "--threads", "1"])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "1 torch thread (as asked)" in out.output


def test_defaults_are_the_benchmarked_recipe() -> None:
    config = TrainConfig()
    assert (config.batch_size, config.part_weights, config.learning_rate) == (128, (2.0, 2.0, 1.0), 2e-3)  # fmt: skip
    params = {p.name: p.default for p in main.commands["train"].params}
    assert params["batch_size"] == 128
    assert params["part_weights"] == "2,2,1"
    # The Quickstart's 60 steps leave the warm-up early and anneal to 5 % of the peak.
    quick = TrainConfig(steps=60)
    assert quick.warmup <= 6
    assert _learning_rate(quick, 59) < 0.06 * quick.learning_rate
    # A time budget without steps: as many steps as the time allows, scheduled by the clock.
    timed = TrainConfig(max_minutes=15)
    assert timed.by_time
    assert timed.total_steps >= 10**6
    assert timed.warmup == 100
    assert _learning_rate(timed, 5000, elapsed_fraction=0.5) == pytest.approx(0.525 * 2e-3)
    assert _learning_rate(timed, 5000, elapsed_fraction=0.999) < 0.051 * 2e-3


def test_a_time_limited_run_anneals(windows, tmp_path) -> None:
    result = train_motion_rvq(
        windows,
        tmp_path / "timed",
        model_config=small_config(**TINY),
        train_config=TrainConfig(
            max_minutes=0.08, batch_size=16, log_every=1, threads=1, warmup_steps=2
        ),
        progress=False,
    )
    assert result.steps >= 3
    assert result.log[-1]["lr"] < 0.35 * 2e-3  # the old step schedule stayed at the peak


def test_windows_of_another_duration_are_refused(windows, tmp_path) -> None:
    half = MotionWindows(actions=windows.actions, hand_mask=windows.hand_mask, window_seconds=0.5)
    with pytest.raises(ValueError, match=r"0.5 s.*1 s"):
        _run(half, tmp_path / "half")
