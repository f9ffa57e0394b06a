"""Check that a real LeRobot installation opens datasets written by ``metis_datasets``.

Not a pytest module (LeRobot is deliberately not a dependency): run it by hand with the METIS venv,
pointing it at the Python of a separate environment that has LeRobot installed with the versions
LeRobot itself pins (LeRobot 0.4.4 wants torch < 2.11, torchvision < 0.26 and torchcodec < 0.11;
with newer ones it cannot decode any video: torchvision 0.24+ has no ``VideoReader`` for its
``pyav`` backend)::

    python3 -m venv /tmp/lerobot044-venv
    /tmp/lerobot044-venv/bin/pip install lerobot==0.4.4 torch==2.8.0 torchvision==0.23.0 torchcodec==0.7.0
    python tests/datasets/lerobot_compat_check.py --lerobot-python /tmp/lerobot044-venv/bin/python

``--dataset DIR`` (repeatable) also has LeRobot read a dataset made elsewhere — merged shards,
a ``metis-sim record`` output — every frame compared with our reader's.

torchcodec loads the system's FFmpeg 4–7 shared libraries (``libavutil.so.5x`` …). Without a
system FFmpeg, the FFmpeg 7.1 that PyAV bundles in the same environment serves: link its
libraries under their plain names and pass ``--ld-library-path`` (forwarded to the LeRobot side)::

    V=/tmp/lerobot044-venv; L=$V/lib/python3.11/site-packages/av.libs; mkdir -p $V/ffmpeg7
    for n in avutil.so.59 avcodec.so.61 avformat.so.61 avdevice.so.61 avfilter.so.10 \
             swscale.so.8 swresample.so.5; do ln -sf $L/lib${n%%.so.*}-*.so.* $V/ffmpeg7/lib$n; done
    python tests/datasets/lerobot_compat_check.py --lerobot-python $V/bin/python \
        --ld-library-path $V/ffmpeg7:$L

What it does:

1. (METIS side) writes two synthetic LeRobot v3.0 datasets with video, and a reference file with
   the frames, vectors, tasks and decoded video frames our own reader returns;
2. (LeRobot side, the same file run by ``--lerobot-python``; imports only LeRobot, torch, numpy)
   opens both with ``lerobot.datasets.lerobot_dataset.LeRobotDataset`` for each video backend,
   reads every frame and compares state, action, hand mask, indices and task exactly and video
   frames to ours, reads action chunks across episode ends through ``delta_timestamps``, checks that
   the METIS record is visible in ``meta.features``, the episode boundaries agree and the stats and
   subtasks load, then rewrites the data with LeRobot's own tools: ``aggregate_datasets`` (both
   into one) and ``delete_episodes``; and records a dataset of its own, as a downstream robot lab
   would (a 7-D arm, one camera, LeRobot's default AV1 video codec);
3. (METIS side) opens LeRobot's outputs with :class:`metis_datasets.LeRobotDataset` and checks that
   the contract record, source, embodiment, intrinsics, instructions, every vector and the video
   survived (whether LeRobot kept our per-episode subtask column is reported, not required); and
   reads LeRobot's own arm dataset: every value exactly, every video frame, and a clear error
   when asked for hand-contract episodes.

Exit code 0 when everything holds; a JSON report is written next to the datasets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SEED_A, SEED_B, EPISODES_A, EPISODES_B, FRAMES = 1, 2, 5, 3, 24


def _metis_write(work: Path) -> None:
    from metis_datasets import LeRobotDataset
    from metis_datasets.synthetic import make_dataset

    for name, seed, episodes in (("a", SEED_A, EPISODES_A), ("b", SEED_B, EPISODES_B)):
        root = make_dataset(work / name, episodes=episodes, seed=seed, frames=FRAMES, episodes_per_file=2)  # fmt: skip
        _write_reference(LeRobotDataset(root), work / f"reference_{name}.npz")


def _write_reference(dataset, path: Path) -> None:
    """What our reader returns for every frame: the LeRobot side compares against it."""
    frames = np.concatenate([dataset.episode(e).images["ego"] for e in range(len(dataset.episodes))])  # fmt: skip
    np.savez(
        path,
        state=dataset.state,
        action=dataset.action,
        hand_mask=dataset.hand_mask,
        frames=frames,
        episode_index=dataset.columns["episode_index"][:, 0],
        frame_index=dataset.columns["frame_index"][:, 0],
        tasks=np.array([dataset.instruction(int(e)) for e in dataset.frame_episode]),
    )


def _metis_write_extras(work: Path, extras: list[Path]) -> None:
    """References of datasets given with --dataset (e.g. merged shards, simulator recordings)."""
    from metis_datasets import LeRobotDataset

    for index, root in enumerate(extras):
        _write_reference(LeRobotDataset(root), work / f"reference_extra{index}.npz")
    (work / "extras.json").write_text(json.dumps([str(p.resolve()) for p in extras]))


def _compare_with_reference(ds, ref) -> float:  # runs under --lerobot-python
    """Every frame of a LeRobot-opened dataset equals our reader's; returns the worst pixel gap."""
    assert len(ds) == len(ref["state"]), (len(ds), len(ref["state"]))
    worst = 0.0
    for i in range(len(ds)):
        item = ds[i]
        np.testing.assert_array_equal(item["observation.state"].numpy(), ref["state"][i])
        np.testing.assert_array_equal(item["action"].numpy(), ref["action"][i])
        np.testing.assert_array_equal(item["observation.hand_mask"].numpy(), ref["hand_mask"][i])
        assert int(item["episode_index"]) == ref["episode_index"][i]
        assert int(item["frame_index"]) == ref["frame_index"][i]
        assert item["task"] == str(ref["tasks"][i]), (item["task"], ref["tasks"][i])
        image = (item["observation.images.ego"].permute(1, 2, 0).numpy() * 255).round()
        worst = max(worst, float(np.abs(image - ref["frames"][i]).max()))
    return worst


def _lerobot_reads_extras(work: Path, checks: dict) -> None:  # runs under --lerobot-python
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    extras = json.loads((work / "extras.json").read_text()) if (work / "extras.json").exists() else []  # fmt: skip
    for index, root in enumerate(extras):
        ref = np.load(work / f"reference_extra{index}.npz")
        name = f"dataset[{index}] {Path(root).name}"
        for backend in ("pyav", "torchcodec"):
            ds = LeRobotDataset(f"metis/extra{index}", root=root, video_backend=backend)
            worst = _compare_with_reference(ds, ref)
            assert worst <= 3, (
                f"{root}: {backend} decodes frames {worst} grey levels away from ours"
            )
            checks[f"{name}/{backend}/frames_read"] = len(ds)
            checks[f"{name}/{backend}/max_abs_pixel_diff_vs_metis_reader"] = worst
        lengths = np.bincount(ref["episode_index"])
        assert list(ds.meta.episodes["length"]) == lengths.tolist()
        checks[f"{name}/episodes"] = len(lengths)
        checks[f"{name}/contract"] = ds.meta.features["observation.state"]["metis"]["contract_id"]


def _lerobot_side(work: Path) -> None:  # runs under --lerobot-python
    import lerobot
    import torch
    import torchvision
    from lerobot.datasets.aggregate import aggregate_datasets
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    report: dict = {"lerobot": lerobot.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__, "checks": {}}  # fmt: skip
    try:
        import torchcodec

        report["torchcodec"] = torchcodec.__version__
    except Exception as err:
        report["torchcodec"] = f"unusable: {type(err).__name__}: {str(err)[:120]}"
    if not hasattr(torchvision.io, "VideoReader") or str(report["torchcodec"]).startswith("unusable"):  # fmt: skip
        raise SystemExit(
            f"this LeRobot environment cannot decode video (torchvision {torchvision.__version__} "
            f"VideoReader: {hasattr(torchvision.io, 'VideoReader')}, torchcodec: {report['torchcodec']}); "
            "install the versions LeRobot pins, e.g. pip install lerobot==0.4.4 torch==2.8.0 "
            "torchvision==0.23.0 torchcodec==0.7.0"
        )
    checks = report["checks"]
    _lerobot_reads_extras(work, checks)
    for name in ("a", "b"):
        ref = np.load(work / f"reference_{name}.npz")
        for backend in ("pyav", "torchcodec"):
            ds = LeRobotDataset(f"metis/{name}", root=work / name, video_backend=backend)
            worst_vs_ours = _compare_with_reference(ds, ref)
            checks[f"{name}/{backend}/frames_read"] = len(ds)
            checks[f"{name}/{backend}/max_abs_pixel_diff_vs_metis_reader"] = worst_vs_ours
            assert worst_vs_ours <= 3, f"{backend} decodes frames {worst_vs_ours} grey levels away from ours"  # fmt: skip
        record = ds.meta.features["observation.state"]["metis"]
        assert record["contract"] == {"name": "metis-hand", "version": 1}, record
        checks[f"{name}/metis_record_in_lerobot_meta"] = record["contract_id"]
        episodes = ds.meta.episodes
        lengths = np.bincount(ref["episode_index"])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        assert list(episodes["length"]) == lengths.tolist(), episodes["length"]
        assert list(episodes["dataset_from_index"]) == starts.tolist()
        assert list(episodes["dataset_to_index"]) == (starts + lengths).tolist()
        assert [t[0] for t in episodes["tasks"]] == [str(ref["tasks"][s]) for s in starts]
        checks[f"{name}/episode_boundaries"] = [[int(a), int(b)] for a, b in zip(starts, starts + lengths, strict=True)]  # fmt: skip
        assert len(episodes["subtasks"][0]) == 4, episodes["subtasks"][0]
        checks[f"{name}/subtasks_episode0"] = [s["text"] for s in episodes["subtasks"][0]]
        for key in ("observation.state", "action"):
            for stat in ("mean", "std", "min", "max", "q01", "q99"):
                assert np.asarray(ds.meta.stats[key][stat]).shape == (48,), (key, stat)
        # action chunks across an episode end: LeRobot pads with the last frame and flags it
        chunked = LeRobotDataset(f"metis/{name}", root=work / name, delta_timestamps={"action": [t / 30 for t in range(8)]})  # fmt: skip
        last = FRAMES - 3  # three frames before episode 0 ends
        item = chunked[last]
        assert item["action_is_pad"].tolist() == [False] * 3 + [True] * 5, item["action_is_pad"]
        np.testing.assert_array_equal(item["action"][:3].numpy(), ref["action"][last : last + 3])
        checks[f"{name}/delta_timestamps_padding"] = item["action_is_pad"].tolist()
    aggregate_datasets(["metis/a", "metis/b"], "metis/ab", roots=[work / "a", work / "b"], aggr_root=work / "ab")  # fmt: skip
    merged = LeRobotDataset("metis/ab", root=work / "ab")
    checks["aggregate/episodes"] = merged.num_episodes
    source = LeRobotDataset("metis/a", root=work / "a")
    delete_episodes(source, episode_indices=[1], output_dir=work / "a_without_1", repo_id="metis/a_without_1")  # fmt: skip
    checks["delete_episodes/episodes"] = LeRobotDataset("metis/a_without_1", root=work / "a_without_1").num_episodes  # fmt: skip
    checks["foreign_arm/vcodec"] = _lerobot_records_arm_dataset(work / "arm")
    (work / "lerobot_report.json").write_text(json.dumps(report, indent=2))


ARM_EPISODES, ARM_FRAMES, ARM_DIM = 2, 12, 7


def _arm_values() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint states, actions and camera frames of the arm dataset (grey level = global frame)."""
    total = ARM_EPISODES * ARM_FRAMES
    state = (np.arange(total * ARM_DIM, dtype=np.float32).reshape(total, ARM_DIM) / 11).astype(np.float32)  # fmt: skip
    levels = 16 + 9 * np.arange(total)
    frames = np.broadcast_to(levels[:, None, None, None], (total, 64, 96, 3)).astype(np.uint8)
    return state, state + 1, frames


def _lerobot_records_arm_dataset(root: Path) -> str:  # runs under --lerobot-python
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {
            "dtype": "float32",
            "shape": (ARM_DIM,),
            "names": [f"joint_{i}" for i in range(ARM_DIM)],
        },
        "action": {
            "dtype": "float32",
            "shape": (ARM_DIM,),
            "names": [f"joint_{i}" for i in range(ARM_DIM)],
        },
        "observation.images.wrist": {
            "dtype": "video",
            "shape": (64, 96, 3),
            "names": ["height", "width", "channels"],
        },
    }
    dataset = LeRobotDataset.create("lab/arm", fps=30, features=features, root=root, robot_type="franka")  # fmt: skip
    state, action, frames = _arm_values()
    for episode in range(ARM_EPISODES):
        for frame in range(episode * ARM_FRAMES, (episode + 1) * ARM_FRAMES):
            dataset.add_frame({"observation.state": state[frame], "action": action[frame], "observation.images.wrist": frames[frame], "task": f"stack block {episode}"})  # fmt: skip
        dataset.save_episode()
    dataset.finalize()
    return str(dataset.meta.info["features"]["observation.images.wrist"]["info"]["video.codec"])


def _metis_reads_arm_dataset(root: Path) -> dict:
    from metis_datasets import LeRobotDataset, UnsupportedDatasetError

    ds = LeRobotDataset(root)
    state, action, frames = _arm_values()
    assert (ds.version, ds.source, len(ds.episodes), len(ds)) == ("v3.0", "franka", ARM_EPISODES, len(state)), (ds.version, ds.source, len(ds))  # fmt: skip
    np.testing.assert_array_equal(ds.columns["observation.state"], state)
    np.testing.assert_array_equal(ds.columns["action"], action)
    assert [ds.instruction(e) for e in range(ARM_EPISODES)] == [f"stack block {e}" for e in range(ARM_EPISODES)]  # fmt: skip
    worst = 0.0
    for episode in range(ARM_EPISODES):
        decoded = ds.frames(episode, np.arange(ARM_FRAMES), key="observation.images.wrist")
        wanted = frames[episode * ARM_FRAMES : (episode + 1) * ARM_FRAMES]
        worst = max(worst, float(np.abs(decoded.astype(int) - wanted).mean(axis=(1, 2, 3)).max()))
    assert worst < 3.0, worst
    try:
        ds.episode(0)
    except UnsupportedDatasetError as err:
        message = str(err)
    else:
        raise AssertionError("a 7-D arm dataset must not pass as hand-contract episodes")
    assert "[48]" in message, message
    assert "[7]" in message, message
    return {
        "frames": len(ds),
        "worst_mean_abs_pixel_diff": round(worst, 3),
        "contract_error": message,
    }


def _metis_check_outputs(work: Path) -> dict:
    from metis_datasets import LeRobotDataset

    a, b = LeRobotDataset(work / "a"), LeRobotDataset(work / "b")
    out: dict = {}
    for name, expected_eps, parts in (("ab", EPISODES_A + EPISODES_B, [(a, range(EPISODES_A)), (b, range(EPISODES_B))]), ("a_without_1", EPISODES_A - 1, [(a, [0, 2, 3, 4])])):  # fmt: skip
        ds = LeRobotDataset(work / name)  # checks the contract record
        assert ds.metis["contract"] == a.metis["contract"], ds.metis
        assert (ds.source, ds.embodiment) == ("synthetic", "human_mano"), (ds.source, ds.embodiment)
        np.testing.assert_array_equal(ds.camera_intrinsics, a.camera_intrinsics)
        assert len(ds.episodes) == expected_eps
        position = 0
        for original, indices in parts:
            for index in indices:
                mine, theirs = original.episode(index, with_images=False), ds.episode(position, with_images=False)  # fmt: skip
                np.testing.assert_array_equal(theirs.state, mine.state)
                np.testing.assert_array_equal(theirs.action, mine.action)
                np.testing.assert_array_equal(theirs.hand_mask, mine.hand_mask)
                assert theirs.instruction == mine.instruction
                # LeRobot's tools rebuild the episodes table from the columns they know, so our
                # per-episode columns (subtasks, metadata) may be dropped: report, not require.
                kept = out.setdefault(f"{name}/subtasks_kept", True)
                out[f"{name}/subtasks_kept"] = kept and theirs.subtasks == mine.subtasks
                every = np.arange(mine.length)
                diff = np.abs(original.frames(index, every).astype(int) - ds.frames(position, every))  # fmt: skip
                # identical when LeRobot copies the stream; ~1 grey level when it re-encodes
                assert diff.mean() < 3.0, (name, position, diff.mean())
                out[f"{name}/mean_abs_pixel_diff_ep{position}"] = round(float(diff.mean()), 3)
                position += 1
        out[f"{name}/episodes"] = len(ds.episodes)
        out[f"{name}/contract"] = ds.metis["contract_id"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lerobot-python", help="Python of an environment with LeRobot installed")
    parser.add_argument("--workdir", type=Path, default=None, help="Where to write (default: a temp dir)")  # fmt: skip
    parser.add_argument("--ld-library-path", default=None, help="LD_LIBRARY_PATH for the LeRobot side (FFmpeg for torchcodec)")  # fmt: skip
    parser.add_argument("--lerobot-side", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, action="append", default=[], help="Also check this METIS dataset (e.g. merged shards, a simulator recording); repeatable")  # fmt: skip
    args = parser.parse_args()
    if args.lerobot_side is not None:
        _lerobot_side(args.lerobot_side)
        return 0
    if not args.lerobot_python:
        parser.error("--lerobot-python is required")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="metis_lerobot_check_"))
    work.mkdir(parents=True, exist_ok=True)
    _metis_write(work)
    _metis_write_extras(work, args.dataset)
    env = {"HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(work / "hf_home"), "PATH": "/usr/bin:/bin"}
    if args.ld_library_path:
        env["LD_LIBRARY_PATH"] = args.ld_library_path
    subprocess.run([args.lerobot_python, __file__, "--lerobot-side", str(work)], check=True, env=env)  # fmt: skip
    report = json.loads((work / "lerobot_report.json").read_text())
    report["metis_reads_lerobot_outputs"] = _metis_check_outputs(work)
    report["metis_reads_lerobot_arm_dataset"] = _metis_reads_arm_dataset(work / "arm")
    (work / "lerobot_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"OK: LeRobot {report['lerobot']} opened METIS datasets; METIS opened LeRobot's rewrites ({work})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
