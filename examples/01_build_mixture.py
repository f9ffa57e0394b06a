"""Step 1: build the multi-source pre-training mixture and the downstream demonstrations.

Writes LeRobot v3 datasets in the hand contract under ``WORK/data``:

* ``synthetic`` — the procedural two-hand egocentric source (``metis_datasets.synthetic``);
* ``fixtures/<source>`` — the eight source adapters (ARCTIC, H2O, HoloAssist, OakInk, EgoDex,
  PH2D, ActionNet, glove data) run on their small test fixtures, written in each source's own
  raw layout and converted with ``metis_datasets.convert`` (no images: they join the motion
  tokenizer's data and the Table-1 statistics, not the policy's);
* ``human_<task>`` — simulated demonstrations of the pre-training tasks (other tabletop tasks
  than the downstream ones) performed by a kinematic human hand: the ``human_mano`` keypoints
  drawn as a skin-coloured hand, objects moved by the script;
* ``inspire_<task>`` — the same pre-training tasks performed by the Inspire hand in physics;
* ``down_<task>`` — the downstream demonstrations (Inspire) that post-training uses;
* ``sharpa_<task>`` — downstream demonstrations with SharpaWave hands (cross-embodiment).

Human and robot data differ in looks (skin-coloured keypoint hand vs the robot hand) but share
the contract: wrist pose in the camera frame and fingertips in the wrist frame.

    python examples/01_build_mixture.py               # toy scale, about 3 minutes on 2 cores
    python examples/01_build_mixture.py --config paper
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path

from pipeline import PRETRAIN_SEEDS, SHARPA_SEEDS, Work, banner, parse_args, timed


def _episodes_in(path: Path) -> int:
    from metis_datasets.lerobot_format import LeRobotDataset

    if not (path / "meta" / "info.json").is_file():
        return 0
    try:
        return len(LeRobotDataset(path, load_stats=False).episodes)
    except Exception:  # an incomplete dataset: written again
        return 0


def build_synthetic(out: Path, spec: dict) -> Path:
    """The synthetic source at ``spec`` sizes (skipped when complete)."""
    from metis_datasets.lerobot_format import write_episodes
    from metis_datasets.synthetic.source_synthetic import (
        D435_COLOR_INTRINSICS_640X480,
        SyntheticConfig,
        SyntheticSource,
    )

    episodes, size = int(spec["episodes"]), int(spec["size"])
    if _episodes_in(out) == episodes:
        return out
    intrinsics = D435_COLOR_INTRINSICS_640X480.copy()
    intrinsics[:2] *= size / 480
    source = SyntheticSource(SyntheticConfig(episodes=episodes, frames=int(spec["frames"]), height=size, width=size, seed=101))  # fmt: skip
    write_episodes(out, source.iter_episodes(), fps=30.0, source="synthetic", embodiment="human_mano", camera_intrinsics=intrinsics, image_shape=(size, size), total=episodes, progress=False)  # fmt: skip
    return out


def build_fixtures(root: Path) -> dict[str, Path]:
    """The eight sources' fixtures in their raw layouts, converted (skipped when present).

    The fixture writers live with the adapters' tests (``tests/datasets/sources``); without a
    repository checkout there are none and this returns ``{}``.
    """
    from metis_datasets import TABLE6_WEIGHTS
    from metis_datasets.convert import convert

    folder = Path(__file__).resolve().parents[1] / "tests" / "datasets" / "sources"
    if not (folder / "test_convert.py").is_file():
        print("   no tests/datasets/sources in this checkout: the source fixtures are skipped")
        return {}
    out = {name: root / name for name in TABLE6_WEIGHTS}
    if all(_episodes_in(path) > 0 for path in out.values()):
        return out
    sys.path.insert(0, str(folder))
    try:
        fixtures = importlib.import_module("test_convert")
        with tempfile.TemporaryDirectory(prefix="metis-fixtures-") as raw_root:
            for name, (raw, extra) in fixtures._write_all_eight(Path(raw_root)).items():
                if _episodes_in(out[name]) == 0:
                    convert(name, raw, out[name], config={"with_images": False, **extra}, progress=False)  # fmt: skip
    finally:
        sys.path.remove(str(folder))
    return out


def record_demos(task: str, out: Path, *, episodes: int, workers: int, embodiment: str, seed_offset: int) -> Path:  # fmt: skip
    """Scripted demonstrations of ``task`` (resumed; skipped when complete)."""
    from metis_sim.record import record

    if _episodes_in(out) >= episodes:
        return out
    report = record(task, episodes=episodes, out=out, workers=workers, seed_offset=seed_offset, progress=False, embodiment=embodiment)  # fmt: skip
    print(f"   {out.name}: {report.episodes} episodes, +{report.recorded} in {report.seconds:.0f} s ({len(report.failed_seeds)} failed expert runs skipped)", flush=True)  # fmt: skip
    return out


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("01", "build the multi-source mixture and the downstream demonstrations")
    mix, down = cfg["mixture"], cfg["downstream"]
    workers = int(cfg["workers"])
    datasets: dict[str, dict[str, str]] = {"pretrain": {}, "downstream": {}, "sharpawave": {}, "fixtures": {}}  # fmt: skip
    timings = {}
    with timed("synthetic source") as t:
        datasets["pretrain"]["synthetic"] = str(build_synthetic(work.data / "synthetic", mix["synthetic"]))  # fmt: skip
    timings["synthetic"] = t["seconds"]
    if mix.get("fixtures"):
        with timed("the eight source fixtures") as t:
            datasets["fixtures"] = {k: str(v) for k, v in build_fixtures(work.data / "fixtures").items()}  # fmt: skip
        timings["fixtures"] = t["seconds"]
    for name, path in (mix.get("datasets") or {}).items():
        datasets["pretrain"][name] = str(path)
    with timed("simulated pre-training tasks: kinematic human hand and Inspire hand") as t:
        for index, task in enumerate(mix["pretrain_tasks"]):
            seeds = PRETRAIN_SEEDS + 1000 * index
            datasets["pretrain"][f"human_{task}"] = str(record_demos(task, work.data / f"human_{task}", episodes=int(mix["human_episodes"]), workers=workers, embodiment="human_mano", seed_offset=seeds))  # fmt: skip
            datasets["pretrain"][f"inspire_{task}"] = str(record_demos(task, work.data / f"inspire_{task}", episodes=int(mix["robot_episodes"]), workers=workers, embodiment="inspire", seed_offset=seeds + 500))  # fmt: skip
    timings["pretrain_sim"] = t["seconds"]
    with timed("downstream demonstrations (Inspire) and SharpaWave demonstrations") as t:
        for task in down["tasks"]:
            datasets["downstream"][task] = str(record_demos(task, work.data / f"down_{task}", episodes=int(down["episodes"]), workers=workers, embodiment="inspire", seed_offset=0))  # fmt: skip
        for task in down["tasks"]:
            if task in ("open_drawer", "close_laptop") and int(down.get("sharpawave_episodes", 0)) > 0:  # fmt: skip
                datasets["sharpawave"][f"sharpa_{task}"] = str(record_demos(task, work.data / f"sharpa_{task}", episodes=int(down["sharpawave_episodes"]), workers=workers, embodiment="sharpawave", seed_offset=SHARPA_SEEDS))  # fmt: skip
    timings["downstream_sim"] = t["seconds"]

    from metis_datasets.cli import dataset_table, show_episode

    strips = work.root / "report_assets" / "data"
    strips.mkdir(parents=True, exist_ok=True)
    tables = {}
    for kind, entries in datasets.items():
        if entries:
            tables[kind] = dataset_table(list(entries.values()))
    pictures = {}
    for kind in ("pretrain", "downstream", "sharpawave"):
        for name, path in datasets[kind].items():
            pictures[name] = str(show_episode(path, 0, strips / f"{name}.png", count=5))
    for kind, rows in tables.items():
        print(f"   {kind}: " + ", ".join(f"{row['dataset']} {row['trajectories']} ep / {row['frames']} frames" for row in rows))  # fmt: skip
    work.save_result("01_build_mixture", {"datasets": datasets, "tables": tables, "strips": pictures, "seconds": timings})  # fmt: skip


if __name__ == "__main__":
    main()
