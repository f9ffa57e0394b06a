"""Record scripted demonstrations as LeRobot v3 datasets in the contract (``metis-sim record``).

Episode ``k`` of a dataset is the first successful expert run at or after seed ``seed_offset +
k``-th tried seed; failed runs are skipped and counted. Each episode stores the ego video, the
48-D state (observed before each action) and action (the expert's targets in the contract),
hand masks, the instruction, subtask segments from the expert's phases and, in its metadata,
the seed, the task, the variant and the MuJoCo version. Recording resumes: the seed after the
last committed episode's is the next one tried. Parallel workers simulate; the parent writes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from metis_core.episode import Episode, Subtask

__all__ = ["RecordReport", "demo_steps", "record", "record_demo"]

_ENV_CACHE: dict[tuple, Any] = {}


@dataclass
class RecordReport:
    """What a recording run did.

    Attributes:
        out: Dataset directory.
        task: Task name.
        episodes: Episodes in the dataset after the run.
        recorded: Episodes added by this run.
        failed_seeds: Seeds whose expert run failed (not recorded).
        seconds: Wall time of the run.
        frames: Frames added by this run.
        mujoco_version: Simulator version.
    """

    out: str
    task: str
    episodes: int
    recorded: int
    failed_seeds: list[int] = field(default_factory=list)
    seconds: float = 0.0
    frames: int = 0
    mujoco_version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _env(task: str, config: dict) -> Any:
    key = (task, tuple(sorted(config.items())))
    if key not in _ENV_CACHE:
        from metis_core.registry import ENVS

        _ENV_CACHE[key] = ENVS.create(task, **config)
    return _ENV_CACHE[key]


def _segments(labels: list[str]) -> list[Subtask]:
    out, start = [], 0
    for t in range(1, len(labels) + 1):
        if t == len(labels) or labels[t] != labels[start]:
            out.append(Subtask(start, t, labels[start]))
            start = t
    return out


def demo_steps(env: Any, seed: int) -> tuple[dict, Iterator[tuple[Any, str]]]:
    """Reset ``env`` at ``seed`` and start its scripted demonstration.

    Robot hands play the task's expert (:func:`metis_sim.experts.run_expert`); kinematic human
    hands (``embodiment="human_mano"``) play its human version (:class:`metis_sim.human.HumanDemo`).

    Returns:
        ``(first observation, iterator of (StepResult, subtask label))``.
    """
    observation, _ = env.reset(seed=seed)
    if getattr(env, "is_human", False):
        from metis_sim.human import run_human_demo

        return run_human_demo(env, seed)
    from metis_sim.experts import expert_for, run_expert

    return observation, run_expert(env, expert_for(env, np.random.default_rng(seed + 1_000_000)))


def record_demo(task: str, seed: int, *, config: dict | None = None) -> tuple[Episode | None, dict]:
    """Run the expert of ``task`` once at ``seed`` (the human demonstration for ``human_mano``).

    Returns:
        ``(episode or None if the expert failed, info of the last step)``.
    """
    import mujoco

    config = {"terminate_on_success": False, **(config or {})}
    env = _env(task, config)
    observation, steps = demo_steps(env, seed)
    states, actions, images, labels = [], [], [], []
    info: dict = {}
    for result, label in steps:
        states.append(observation["state"])
        images.append(observation["image"])
        actions.append(result.info["action"])
        labels.append(label)
        observation, info = result.observation, result.info
    if not info.get("success") or info.get("diverged"):
        return None, info
    episode = Episode(
        state=np.stack(states).astype(np.float32),
        action=np.stack(actions).astype(np.float32),
        hand_mask=np.repeat(env.hand_mask[None], len(states), axis=0),
        fps=env.config.control_hz,
        instruction=env.instruction,
        subtasks=_segments(labels),
        images={"ego": np.stack(images)} if env.config.render else {},
        source="metis_sim",
        embodiment=env.config.embodiment,
        metadata={
            "seed": int(seed),
            "task": task,
            "variant": env.config.variant,
            "mujoco": mujoco.__version__,
            "camera_intrinsics": env.camera_intrinsics.tolist(),
        },
    )
    return episode, info


def _worker(args: tuple[str, int, dict]) -> tuple[int, Episode | None, dict]:
    task, seed, config = args
    episode, info = record_demo(task, seed, config=config)
    return seed, episode, {"success": info.get("success"), "diverged": info.get("diverged")}


def _init_worker() -> None:
    os.environ.setdefault("LP_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def _next_seed(out: Path, seed_offset: int) -> int:
    from metis_datasets.lerobot_format import LeRobotDataset

    if not (out / "meta" / "info.json").exists():
        return seed_offset
    dataset = LeRobotDataset(out, load_stats=False)
    if len(dataset.episodes) == 0:
        return seed_offset
    last = dataset.episode(len(dataset.episodes) - 1, with_images=False)
    return int(last.metadata.get("seed", seed_offset - 1)) + 1


def record(
    task: str,
    *,
    episodes: int,
    out: str | os.PathLike[str],
    workers: int = 1,
    seed_offset: int = 0,
    max_failures: int | None = None,
    progress: bool = True,
    episodes_per_file: int = 10,
    **config: Any,
) -> RecordReport:
    """Record ``episodes`` successful demonstrations of ``task`` into ``out`` (resuming).

    Args:
        task: Registry name of the task.
        episodes: Episodes the dataset should hold when done.
        out: Dataset directory.
        workers: Simulation processes.
        seed_offset: First seed of a new dataset.
        max_failures: Stop after this many failed expert runs (default: ``episodes``).
        progress: Show a progress bar.
        episodes_per_file: Episodes per data/video file (also how many a kill can lose).
        **config: Task config fields (``variant``, ``embodiment``, ...); ``embodiment="human_mano"``
            records kinematic human-hand demonstrations (:mod:`metis_sim.human`).

    Returns:
        The :class:`RecordReport`.

    Raises:
        RuntimeError: If the expert fails more than ``max_failures`` times.
    """
    import mujoco

    from metis_datasets.lerobot_format import LeRobotWriter

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    started = time.perf_counter()
    env = _env(task, {"terminate_on_success": False, **config})
    writer = LeRobotWriter(
        out,
        fps=env.config.control_hz,
        source="metis_sim",
        embodiment=env.config.embodiment,
        camera_intrinsics=env.camera_intrinsics,
        image_shape=(env.config.image_size, env.config.image_size) if env.config.render else None,
        episodes_per_file=episodes_per_file,
        robot_type=f"metis_sim_{env.config.embodiment}",
    )
    have = writer.committed_episodes
    report = RecordReport(out=str(out), task=task, episodes=have, recorded=0, mujoco_version=mujoco.__version__)  # fmt: skip
    limit = episodes if max_failures is None else max_failures
    seed = _next_seed(out, seed_offset)

    bar = tqdm(total=episodes, initial=have, desc=f"recording {task}", disable=not progress)
    pool = None
    try:
        if workers > 1:
            pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker)
        while report.episodes < episodes:
            # one bounded batch of seeds at a time: as many as episodes are still missing
            batch = [(task, s, config) for s in range(seed, seed + episodes - report.episodes)]
            seed += len(batch)
            results = pool.imap(_worker, batch, chunksize=1) if pool is not None else map(_worker, batch)  # fmt: skip
            for demo_seed, episode, info in results:
                if episode is None:
                    report.failed_seeds.append(demo_seed)
                    bar.set_postfix(failed=len(report.failed_seeds))
                    if len(report.failed_seeds) > limit:
                        raise RuntimeError(f"the {task} expert failed {len(report.failed_seeds)} times (seeds {report.failed_seeds[:10]}...); last: {info}")  # fmt: skip
                    continue
                writer.add_episode(episode)
                report.episodes += 1
                report.recorded += 1
                report.frames += episode.length
                bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
    writer.finalize(progress=False)
    report.seconds = time.perf_counter() - started
    return report
