"""``metis-sim``: record scripted demonstrations, evaluate policies, draw rollout strips."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

import metis_sim  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
from metis_sim.scene import VARIANTS

__all__ = ["main", "rollout_strip"]


@click.group()
def main() -> None:
    """Simulated dexterous tasks in the METIS hand contract."""


@main.command("tasks")
def tasks_command() -> None:
    """List the registered tasks (entry-point group ``metis.envs``)."""
    from metis_core.registry import ENVS

    for name in ENVS.names():
        info = ENVS.info(name)
        click.echo(f"{name:18s} {info.target}  ({info.distribution})")


@main.command("record")
@click.argument("task")
@click.option("--episodes", type=int, required=True, help="Episodes the dataset should hold.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Dataset directory (resumed if it exists).")  # fmt: skip
@click.option("--workers", type=int, default=1, show_default=True, help="Simulation processes.")
@click.option("--variant", type=click.Choice(VARIANTS), default="default", show_default=True)
@click.option("--embodiment", default="inspire", show_default=True, help="Robot hand, or human_mano for kinematic human-hand demonstrations.")  # fmt: skip
@click.option("--seed-offset", type=int, default=0, show_default=True, help="First seed of a new dataset.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def record_command(task: str, episodes: int, out: Path, workers: int, variant: str, embodiment: str, seed_offset: int, no_progress: bool) -> None:  # fmt: skip
    """Record EPISODES successful scripted demonstrations of TASK as a LeRobot v3 dataset."""
    from metis_sim.record import record

    report = record(task, episodes=episodes, out=out, workers=workers, seed_offset=seed_offset, progress=not no_progress, variant=variant, embodiment=embodiment)  # fmt: skip
    click.echo(f"{report.task}: {report.episodes} episodes in {report.out} (+{report.recorded} in {report.seconds:.0f} s, {len(report.failed_seeds)} failed expert runs), MuJoCo {report.mujoco_version}")  # fmt: skip


@main.command("eval")
@click.option("--task", required=True, help="Task name (see `metis-sim tasks`).")
@click.option("--policy", "policy_spec", required=True, help="random | replay:DATASET | schedule:DATASET | http://HOST:PORT | a METIS checkpoint directory.")  # fmt: skip
@click.option("--episodes", type=int, default=20, show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="default", show_default=True)
@click.option("--embodiment", default="inspire", show_default=True)
@click.option("--seed-offset", type=int, default=100_000, show_default=True, help="First seed (replay policies use their recorded seeds).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report directory (report.json, report.md, videos/).")  # fmt: skip
@click.option("--videos", type=int, default=2, show_default=True, help="Episodes saved as MP4.")
@click.option("--workers", type=int, default=1, show_default=True, help="Parallel episodes.")
@click.option("--chunk-len", type=int, default=30, show_default=True)
@click.option("--unnorm-key", default=None, help="Statistics key of a METIS policy trained on several datasets.")  # fmt: skip
def eval_command(task: str, policy_spec: str, episodes: int, variant: str, embodiment: str, seed_offset: int, out: Path | None, videos: int, workers: int, chunk_len: int, unnorm_key: str | None) -> None:  # fmt: skip
    """Evaluate a policy closed loop; print success and progress rates."""
    from metis_sim.evaluate import evaluate

    report = evaluate(task, policy_spec, episodes=episodes, seed_offset=seed_offset, out=out, videos=videos, workers=workers, chunk_len=chunk_len, unnorm_key=unnorm_key, variant=variant, embodiment=embodiment)  # fmt: skip
    low, high = report.success_interval
    click.echo(f"{task} [{variant}, {embodiment}] policy {policy_spec}: success {report.success_rate:.1%} (95 % CI {low:.1%}-{high:.1%}), progress {report.progress_rate:.1%} over {len(report.episodes)} episodes")  # fmt: skip
    if out is None:
        click.echo(json.dumps({"success_rate": report.success_rate, "success_interval": list(report.success_interval), "progress_rate": report.progress_rate}))  # fmt: skip


def rollout_strip(task: str, *, seed: int = 0, frames: int = 6, variant: str = "default", embodiment: str = "inspire") -> np.ndarray:  # fmt: skip
    """``(224, frames·224, 3)`` uint8: ego frames of the scripted expert, evenly spaced in time.

    ``embodiment="human_mano"`` draws the kinematic human-hand demonstration instead.
    """
    from metis_core.registry import ENVS
    from metis_sim.record import demo_steps

    env = ENVS.create(task, terminate_on_success=False, variant=variant, embodiment=embodiment)
    try:
        observation, steps = demo_steps(env, seed)
        images = [observation["image"]]
        for result, _ in steps:
            images.append(result.observation["image"])
    finally:
        env.close()
    picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
    return np.concatenate([images[i] for i in picks], axis=1)


@main.command("strip")
@click.argument("task")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG path.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--frames", type=int, default=6, show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="default", show_default=True)
@click.option("--embodiment", default="inspire", show_default=True)
def strip_command(task: str, out: Path, seed: int, frames: int, variant: str, embodiment: str) -> None:  # fmt: skip
    """Save a rollout strip (PNG) of TASK's scripted expert."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rollout_strip(task, seed=seed, frames=frames, variant=variant, embodiment=embodiment)).save(out)  # fmt: skip
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
