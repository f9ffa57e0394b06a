"""Closed-loop evaluation of any policy (``metis-sim eval``): success and progress rates.

Each episode: reset the task at a seed, then repeatedly ask the policy for a chunk from the ego
image, the instruction and the contract state, and execute it through the IK
(:meth:`metis_sim.env.SimEnv.step_chunk`) until success, divergence (a failure) or the time
limit. Reports the success rate with its 95 % Wilson interval and the progress rate (mean
fraction of the task's stages reached: the paper's PSR), per task and variant, plus rollout
videos and a JSON + Markdown report.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metis_core.io import atomic_write, write_json
from metis_sim.policies import as_chunk

__all__ = ["EpisodeResult", "EvalReport", "evaluate", "wilson_interval"]


def wilson_interval(
    successes: int, trials: int, z: float = 1.959963984540054
) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate.

    Raises:
        ValueError: For ``trials < 1`` or successes outside ``[0, trials]``.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"expected 0 <= successes <= trials and trials >= 1, got {successes}/{trials}")  # fmt: skip
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EpisodeResult:
    """One evaluated episode."""

    seed: int
    success: bool
    progress: float
    diverged: str
    steps: int
    policy_seconds: float
    step_seconds: float
    video: str | None = None


@dataclass
class EvalReport:
    """Results of an evaluation.

    Attributes:
        task: Task name.
        variant: Variant.
        embodiment: Hand.
        policy: The ``--policy`` argument.
        episodes: Per-episode results.
        success_rate: Fraction of successful episodes.
        success_interval: 95 % Wilson interval of the success rate.
        progress_rate: Mean fraction of stages reached.
        mujoco_version: Simulator version.
    """

    task: str
    variant: str
    embodiment: str
    policy: str
    episodes: list[EpisodeResult] = field(default_factory=list)
    success_rate: float = 0.0
    success_interval: tuple[float, float] = (0.0, 0.0)
    progress_rate: float = 0.0
    mujoco_version: str = ""
    seconds: float = 0.0

    def summarize(self) -> EvalReport:
        n = len(self.episodes)
        successes = sum(e.success for e in self.episodes)
        self.success_rate = successes / n if n else 0.0
        self.success_interval = wilson_interval(successes, n) if n else (0.0, 1.0)
        self.progress_rate = float(np.mean([e.progress for e in self.episodes])) if n else 0.0
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        """A Markdown table of the report."""
        low, high = self.success_interval
        lines = [
            f"# metis-sim evaluation: {self.task} ({self.variant}, {self.embodiment})",
            "",
            f"Policy `{self.policy}`, {len(self.episodes)} episodes, MuJoCo {self.mujoco_version}.",
            "",
            "| success rate | 95 % interval | progress rate | diverged |",
            "|---|---|---|---|",
            f"| {self.success_rate:.1%} | [{low:.1%}, {high:.1%}] | {self.progress_rate:.1%} | {sum(bool(e.diverged) for e in self.episodes)} |",
            "",
            "| seed | success | progress | steps | policy s | sim s | video |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for e in self.episodes:
            lines.append(f"| {e.seed} | {'yes' if e.success else 'no'} | {e.progress:.2f} | {e.steps} | {e.policy_seconds:.2f} | {e.step_seconds:.2f} | {e.video or ''} |")  # fmt: skip
        return "\n".join(lines) + "\n"


def run_episode(
    env: Any, policy: Any, seed: int, *, video_path: Path | None = None
) -> EpisodeResult:
    """Evaluate ``policy`` on one episode of ``env`` at ``seed``."""
    observation, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset(seed=seed)
    frames = [observation["image"]] if video_path is not None else []
    policy_seconds = step_seconds = 0.0
    done = False
    while not done:
        started = time.perf_counter()
        chunk = as_chunk(policy.predict_action(observation["image"], env.instruction, observation["state"]))  # fmt: skip
        policy_seconds += time.perf_counter() - started
        started = time.perf_counter()
        results = env.step_chunk(chunk, render_every_step=video_path is not None)
        step_seconds += time.perf_counter() - started
        for result in results:
            if video_path is not None:
                frames.append(result.observation["image"])
        last = results[-1]
        observation, info = last.observation, last.info
        done = last.terminated or last.truncated
    video = None
    if video_path is not None and frames:
        from metis_datasets.video import encode_video

        encode_video(video_path, np.stack(frames), fps=env.config.control_hz)
        video = str(video_path)
    return EpisodeResult(seed=seed, success=bool(info["success"]), progress=float(info["progress"]), diverged=info["diverged"], steps=int(info["step"]), policy_seconds=policy_seconds, step_seconds=step_seconds, video=video)  # fmt: skip


_WORKER: dict[str, Any] = {}


def _init_worker(task: str, config: dict, policy_spec: str, chunk_len: int, unnorm_key: str | None = None) -> None:  # fmt: skip
    os.environ.setdefault("LP_NUM_THREADS", "1")
    import torch

    from metis_core.registry import ENVS
    from metis_sim.policies import load_policy

    torch.set_num_threads(1)
    _WORKER["env"] = ENVS.create(task, **config)
    _WORKER["policy"] = load_policy(policy_spec, chunk_len=chunk_len, embodiment=config.get("embodiment", "inspire"), unnorm_key=unnorm_key)  # fmt: skip


def _work(args: tuple[int, str | None]) -> EpisodeResult:
    seed, video = args
    return run_episode(_WORKER["env"], _WORKER["policy"], seed, video_path=Path(video) if video else None)  # fmt: skip


def evaluate(
    task: str,
    policy: Any,
    *,
    episodes: int,
    seeds: list[int] | None = None,
    seed_offset: int = 0,
    out: str | os.PathLike[str] | None = None,
    videos: int = 2,
    workers: int = 1,
    chunk_len: int = 30,
    policy_name: str | None = None,
    unnorm_key: str | None = None,
    **config: Any,
) -> EvalReport:
    """Evaluate a policy on ``episodes`` seeds of ``task``.

    Args:
        task: Registry name of the task.
        policy: A policy object, or a ``--policy`` string (see :func:`metis_sim.policies.load_policy`);
            parallel workers need the string.
        episodes: Episodes to run.
        seeds: Explicit seeds (default ``seed_offset, seed_offset + 1, ...``; a replay policy's
            recorded seeds when it has them).
        seed_offset: First seed.
        out: Directory for ``report.json``, ``report.md`` and ``videos/``.
        videos: Episodes to save as MP4 (the first ones).
        workers: Parallel episodes (processes); needs ``policy`` as a string.
        chunk_len: Chunk length asked of string-built policies.
        policy_name: Name in the report (default: the string or the class name).
        unnorm_key: Statistics key of a saved METIS policy trained on several datasets.
        **config: Task config fields (``variant``, ``embodiment``, ...).

    Returns:
        The :class:`EvalReport` (also written to ``out``).
    """
    import mujoco

    from metis_core.registry import ENVS
    from metis_sim.policies import load_policy

    started = time.perf_counter()
    spec = policy if isinstance(policy, str) else None
    if workers > 1 and spec is None:
        raise ValueError("parallel evaluation (workers > 1) needs the policy as a --policy string")
    policy_object = load_policy(spec, chunk_len=chunk_len, embodiment=config.get("embodiment", "inspire"), unnorm_key=unnorm_key) if spec else policy  # fmt: skip
    if seeds is None:
        recorded = getattr(policy_object, "seeds", None)
        seeds = list(recorded[:episodes]) if recorded else list(range(seed_offset, seed_offset + episodes))  # fmt: skip
    seeds = list(seeds)[:episodes]
    out_dir = Path(out) if out is not None else None
    video_paths: list[str | None] = [None] * len(seeds)
    if out_dir is not None:
        (out_dir / "videos").mkdir(parents=True, exist_ok=True)
        for i in range(min(videos, len(seeds))):
            video_paths[i] = str(out_dir / "videos" / f"{task}_seed{seeds[i]}.mp4")
    env_config = {"terminate_on_success": True, **config}
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(task, env_config, spec, chunk_len, unnorm_key)) as pool:  # fmt: skip
            results = pool.map(_work, list(zip(seeds, video_paths, strict=True)), chunksize=1)
    else:
        env = ENVS.create(task, **env_config)
        try:
            results = [run_episode(env, policy_object, s, video_path=Path(v) if v else None) for s, v in zip(seeds, video_paths, strict=True)]  # fmt: skip
        finally:
            env.close()
    sample_env_config = ENVS.get(task).config_class(**env_config)
    report = EvalReport(
        task=task,
        variant=sample_env_config.variant,
        embodiment=sample_env_config.embodiment,
        policy=policy_name or spec or type(policy_object).__name__,
        episodes=results,
        mujoco_version=mujoco.__version__,
    ).summarize()
    report.seconds = time.perf_counter() - started
    if out_dir is not None:
        write_json(out_dir / "report.json", report.to_dict())
        with atomic_write(out_dir / "report.md", "w") as handle:
            handle.write(report.markdown())
    return report
