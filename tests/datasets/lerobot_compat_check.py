"""Check that a real LeRobot installation opens datasets written by ``metis_datasets``.

Not a pytest module (LeRobot is deliberately not a dependency): run it by hand with the METIS venv,
pointing it at the Python of a separate environment that has LeRobot installed::

    python tests/datasets/lerobot_compat_check.py --lerobot-python /tmp/lerobot-env/bin/python

What it does:

1. (METIS side) writes two synthetic LeRobot v3.0 datasets with video, and a reference file with
   the frames, vectors, tasks and decoded video frames our own reader returns;
2. (LeRobot side, the same file run by ``--lerobot-python``; imports only LeRobot, torch, numpy)
   opens both with ``lerobot.datasets.lerobot_dataset.LeRobotDataset`` for each video backend,
   reads every frame and compares state, action, hand mask, indices and task exactly and video
   frames to ours, reads action chunks across episode ends through ``delta_timestamps``, checks that
   the METIS record is visible in ``meta.features`` and the stats and subtasks load, then rewrites
   the data with LeRobot's own tools: ``aggregate_datasets`` (both into one) and ``delete_episodes``;
3. (METIS side) opens LeRobot's outputs with :class:`metis_datasets.LeRobotDataset` and checks that
   the contract record, source, embodiment, intrinsics, instructions, every vector and the video
   survived (whether LeRobot kept our per-episode subtask column is reported, not required).

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
        dataset = LeRobotDataset(root)
        frames = np.concatenate([dataset.episode(e).images["ego"] for e in range(len(dataset.episodes))])  # fmt: skip
        np.savez(
            work / f"reference_{name}.npz",
            state=dataset.state,
            action=dataset.action,
            hand_mask=dataset.hand_mask,
            frames=frames,
            episode_index=dataset.columns["episode_index"][:, 0],
            frame_index=dataset.columns["frame_index"][:, 0],
            tasks=np.array([dataset.instruction(int(e)) for e in dataset.frame_episode]),
        )


def _lerobot_side(work: Path) -> None:  # runs under --lerobot-python
    import lerobot
    import torch
    from lerobot.datasets.aggregate import aggregate_datasets
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    report: dict = {"lerobot": lerobot.__version__, "torch": torch.__version__, "checks": {}}
    checks = report["checks"]
    for name in ("a", "b"):
        ref = np.load(work / f"reference_{name}.npz")
        for backend in ("pyav", "torchcodec"):
            ds = LeRobotDataset(f"metis/{name}", root=work / name, video_backend=backend)
            assert len(ds) == len(ref["state"]), (len(ds), len(ref["state"]))
            worst_vs_ours = 0
            for i in range(len(ds)):
                item = ds[i]
                np.testing.assert_array_equal(item["observation.state"].numpy(), ref["state"][i])
                np.testing.assert_array_equal(item["action"].numpy(), ref["action"][i])
                np.testing.assert_array_equal(item["observation.hand_mask"].numpy(), ref["hand_mask"][i])  # fmt: skip
                assert int(item["episode_index"]) == ref["episode_index"][i]
                assert int(item["frame_index"]) == ref["frame_index"][i]
                assert item["task"] == str(ref["tasks"][i]), (item["task"], ref["tasks"][i])
                image = (item["observation.images.ego"].permute(1, 2, 0).numpy() * 255).round()
                worst_vs_ours = max(worst_vs_ours, float(np.abs(image - ref["frames"][i]).max()))
            checks[f"{name}/{backend}/frames_read"] = len(ds)
            checks[f"{name}/{backend}/max_abs_pixel_diff_vs_metis_reader"] = worst_vs_ours
            assert worst_vs_ours <= 3, f"{backend} decodes frames {worst_vs_ours} grey levels away from ours"  # fmt: skip
        record = ds.meta.features["observation.state"]["metis"]
        assert record["contract"] == {"name": "metis-hand", "version": 1}, record
        checks[f"{name}/metis_record_in_lerobot_meta"] = record["contract_id"]
        episodes = ds.meta.episodes
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
    (work / "lerobot_report.json").write_text(json.dumps(report, indent=2))


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
    parser.add_argument("--lerobot-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lerobot_side is not None:
        _lerobot_side(args.lerobot_side)
        return 0
    if not args.lerobot_python:
        parser.error("--lerobot-python is required")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="metis_lerobot_check_"))
    work.mkdir(parents=True, exist_ok=True)
    _metis_write(work)
    env = {"HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(work / "hf_home"), "PATH": "/usr/bin:/bin"}
    subprocess.run([args.lerobot_python, __file__, "--lerobot-side", str(work)], check=True, env=env)  # fmt: skip
    report = json.loads((work / "lerobot_report.json").read_text())
    report["metis_reads_lerobot_outputs"] = _metis_check_outputs(work)
    (work / "lerobot_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"OK: LeRobot {report['lerobot']} opened METIS datasets; METIS opened LeRobot's rewrites ({work})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
