"""``metis-datasets``: dataset tables (like the paper's Table 1), frame strips, synthetic data."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from metis_datasets.lerobot_format import EGO_KEY, LeRobotDataset

__all__ = ["dataset_table", "main", "show_episode"]

_IN_THE_WILD = {"egodex", "holoassist", "ph2d", "actionnet", "metis_glove"}


def _is_human(embodiment: str) -> bool:
    """Whether an embodiment name is a human hand (through the registry's ``is_human``).

    Raises:
        ValueError: For an embodiment the registry does not know (the table would be wrong).
    """
    from metis_core.registry import EMBODIMENTS

    if embodiment not in EMBODIMENTS:
        raise ValueError(f"unknown embodiment {embodiment!r}: expected one of {EMBODIMENTS.names()} to tell human from robot frames")  # fmt: skip
    return bool(EMBODIMENTS.get(embodiment).is_human)


def dataset_table(roots: list[str | Path]) -> list[dict]:
    """One Table-1-style row per dataset.

    Human and robot percentages count frames by each episode's embodiment (a source such as PH2D
    mixes both); datasets without an embodiment (foreign LeRobot data) count as robot data.

    Returns:
        Dicts with ``dataset, trajectories, frames, pose, subtask, human_pct, robot_pct,
        in_the_wild``.
    """
    rows = []
    for root in roots:
        dataset = LeRobotDataset(root, load_stats=False)
        human_frames = sum(ep["length"] for ep in dataset.episodes if ep["embodiment"] and _is_human(ep["embodiment"]))  # fmt: skip
        human_pct = 100.0 * human_frames / max(dataset.num_frames, 1)
        rows.append(
            {
                "dataset": dataset.source,
                "path": str(root),
                "trajectories": len(dataset.episodes),
                "frames": dataset.num_frames,
                "pose": dataset.is_contract,
                "subtask": any(ep["subtasks"] for ep in dataset.episodes),
                "human_pct": human_pct,
                "robot_pct": 100.0 - human_pct if dataset.num_frames else 0.0,
                "in_the_wild": dataset.source in _IN_THE_WILD,
            }
        )
    names = [row["dataset"] for row in rows]
    for row in rows:
        if names.count(row["dataset"]) > 1:
            row["dataset"] = f"{row['dataset']} ({Path(row['path']).name})"
    return rows


def _count(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:.1f}M"
    if value >= 1_000:
        return f"{value / 1e3:.1f}K"
    return str(value)


def show_episode(root: str | Path, episode: int, out: str | Path, *, count: int = 6) -> Path:
    """Write a PNG strip of ``count`` frames of an episode with the fingertips projected on them.

    Raises:
        ValueError: If the dataset has no ego video or camera intrinsics, or the episode is out of range.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from metis_datasets.synthetic.source_synthetic import fingertips_in_camera, project

    dataset = LeRobotDataset(root, load_stats=False)
    if not 0 <= episode < len(dataset.episodes):
        raise ValueError(f"episode {episode} out of range; {root} has {len(dataset.episodes)} episodes")  # fmt: skip
    if EGO_KEY not in dataset.episodes[episode]["videos"]:
        raise ValueError(f"{root} has no {EGO_KEY!r} video to show")
    k = dataset.camera_intrinsics
    if k is None:
        raise ValueError(f"{root} records no ego camera intrinsics (info.json metis.camera_intrinsics.ego)")  # fmt: skip
    ep = dataset.episode(episode, with_images=False)
    picks = np.linspace(0, ep.length - 1, count).round().astype(int)
    frames = dataset.frames(episode, picks)
    points = fingertips_in_camera(ep.state[picks])
    fig, axes = plt.subplots(1, count, figsize=(3 * count, 3 * frames.shape[1] / frames.shape[2] + 0.4))  # fmt: skip
    for column, (axis, frame) in enumerate(zip(np.atleast_1d(axes), frames, strict=True)):
        axis.imshow(frame)
        for side, colour in (("left", "cyan"), ("right", "magenta")):
            if ep.hand_mask[picks[column], 0 if side == "left" else 1]:
                uv = project(points[side][column], k)
                axis.scatter(uv[1:, 0], uv[1:, 1], s=14, c=colour, edgecolors="black", linewidths=0.5)  # fmt: skip
                axis.scatter(uv[:1, 0], uv[:1, 1], s=24, c=colour, marker="s")
        axis.set_title(f"frame {picks[column]}", fontsize=8)
        axis.set_xlim(0, frame.shape[1])
        axis.set_ylim(frame.shape[0], 0)
        axis.axis("off")
    fig.suptitle(ep.instruction, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


@click.group()
def main() -> None:
    """Inspect and generate METIS datasets (LeRobot v3 with the hand contract)."""


@main.command()
@click.argument("datasets", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def stats(datasets: tuple[str, ...]) -> None:
    """Print a Table-1-style summary of DATASETS."""
    try:
        rows = dataset_table(list(datasets))
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    header = f"{'Dataset':<24}{'#Traj':>8}{'#Frames':>10}{'Pose':>6}{'Subtask':>9}{'Human%':>8}{'Robot%':>8}{'Wild':>6}"  # fmt: skip
    click.echo(header)
    click.echo("-" * len(header))
    mark = {True: "yes", False: "no"}
    for row in rows:
        click.echo(
            f"{row['dataset']:<24}{_count(row['trajectories']):>8}{_count(row['frames']):>10}"
            f"{mark[row['pose']]:>6}{mark[row['subtask']]:>9}{row['human_pct']:>8.1f}"
            f"{row['robot_pct']:>8.1f}{mark[row['in_the_wild']]:>6}"
        )
    total_traj = sum(r["trajectories"] for r in rows)
    total_frames = sum(r["frames"] for r in rows)
    click.echo("-" * len(header))
    click.echo(f"{'Total':<24}{_count(total_traj):>8}{_count(total_frames):>10}")


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--episode", "-e", default=0, show_default=True, help="Episode position.")
@click.option("--frames", "count", default=6, show_default=True, help="Frames in the strip.")
@click.option("--out", "-o", default=None, help="PNG path (default DATASET_episode_N.png).")
def show(dataset: str, episode: int, count: int, out: str | None) -> None:
    """Write a PNG strip of an episode's frames with the fingertips projected on them."""
    target = out or f"{Path(dataset).name}_episode_{episode}.png"
    try:
        path = show_episode(dataset, episode, target, count=count)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(str(path))


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--episodes", default=8, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--frames", default=64, show_default=True)
@click.option("--no-images", is_flag=True, help="Tabular-only dataset.")
def synthetic(out_dir: str, episodes: int, seed: int, frames: int, no_images: bool) -> None:
    """Generate (or resume generating) a synthetic dataset in OUT_DIR."""
    from metis_datasets.synthetic import make_dataset

    root = make_dataset(out_dir, episodes=episodes, seed=seed, frames=frames, image_size=None if no_images else (240, 320), progress=True)  # fmt: skip
    click.echo(str(root))


def _config_value(text: str) -> object:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _source_fields(source: str) -> set[str] | None:
    """Config field names of a registered source (``None`` if it cannot be loaded here)."""
    import dataclasses

    from metis_core.registry import DATASET_SOURCES

    try:
        config_class = getattr(DATASET_SOURCES.get(source), "config_class", None)
    except Exception:
        return None
    if config_class is None or not dataclasses.is_dataclass(config_class):
        return None
    return {f.name for f in dataclasses.fields(config_class)}


@main.command()
@click.argument("source")
@click.argument("raw_dir", type=click.Path(exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--workers", "-j", default=1, show_default=True, help="Processes loading episodes.")
@click.option("--fps", "target_fps", default=None, type=float, help="Target rate in Hz (source default: 30).")  # fmt: skip
@click.option("--no-images", is_flag=True, help="Keep poses and annotations only (no ego video).")
@click.option("--image-size", default=None, metavar="HxW", help="Stored frame size, e.g. 480x640.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Other source config fields (JSON values), repeatable.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Delete OUT_DIR first instead of resuming.")
@click.option("--episodes-per-file", default=50, show_default=True, help="Episodes per data/video file (one commit each).")  # fmt: skip
@click.option("--limit", default=None, type=int, help="Convert at most this many episodes.")
@click.option("--strict", is_flag=True, help="Fail at the first episode that cannot be converted instead of skipping it.")  # fmt: skip
@click.option("--shard", "shard_text", default=None, metavar="K/N", help="Convert only the K-th of N contiguous blocks of the episodes (0 <= K < N); join the N outputs with `metis-datasets merge`.")  # fmt: skip
def convert(source: str, raw_dir: str, out_dir: str, workers: int, target_fps: float | None, no_images: bool, image_size: str | None, settings: tuple[str, ...], overwrite: bool, episodes_per_file: int, limit: int | None, strict: bool, shard_text: str | None) -> None:  # fmt: skip
    """Convert SOURCE's raw download RAW_DIR into a METIS LeRobot v3 dataset OUT_DIR.

    Re-running on the same OUT_DIR resumes; the summary lists skipped episodes and why.
    """
    from metis_datasets.convert import convert as run_conversion

    config: dict[str, object] = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {setting!r}", param_hint="--set")
        config[key.strip()] = _config_value(value)
    # The options name the adapters' common fields; a source whose config names them otherwise
    # (the synthetic source: height, width, render, fps) gets its own names.
    fields = _source_fields(source)

    def put(option: str, names: tuple[str, ...], value: object) -> None:
        name = next((n for n in names if fields is None or n in fields), None)
        if name is None:
            raise click.BadParameter(f"source {source!r} has no field for it (its fields: {sorted(fields or [])}); use --set", param_hint=option)  # fmt: skip
        config[name] = value

    if target_fps is not None:
        put("--fps", ("target_fps", "fps"), target_fps)
    if no_images:
        put("--no-images", ("with_images", "render"), False)
    if image_size is not None:
        height, sep, width = image_size.lower().partition("x")
        if not (sep and height.isdigit() and width.isdigit()):
            raise click.BadParameter(f"expected HxW such as 480x640, got {image_size!r}", param_hint="--image-size")  # fmt: skip
        put("--image-size", ("image_height", "height"), int(height))
        put("--image-size", ("image_width", "width"), int(width))
    shard = None
    if shard_text is not None:
        k, sep, n = shard_text.partition("/")
        if not (sep and k.isdigit() and n.isdigit() and int(k) < int(n)):
            raise click.BadParameter(f"expected K/N with 0 <= K < N, such as 0/8, got {shard_text!r}", param_hint="--shard")  # fmt: skip
        shard = (int(k), int(n))
    try:
        report = run_conversion(source, raw_dir, out_dir, config=config, workers=workers, overwrite=overwrite, episodes_per_file=episodes_per_file, limit=limit, strict=strict, shard=shard)  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError, LookupError, ImportError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(report.summary())


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--deep", is_flag=True, help="Also decode every video frame and compare the counts with the episodes.")  # fmt: skip
def check(dataset: str, deep: bool) -> None:
    """Check DATASET: structure, indices, contract, values, statistics, checksums (and frames).

    Prints one line per problem; exits with status 1 if there is any.
    """
    from metis_datasets.validation import check_dataset

    report = check_dataset(dataset, deep=deep)
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.argument("shard_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))  # fmt: skip
@click.option("--episodes-per-file", default=50, show_default=True, help="Recorded for later appends.")  # fmt: skip
def merge(out_dir: str, shard_dirs: tuple[str, ...], episodes_per_file: int) -> None:
    """Merge the shards of `convert --shard K/N` (SHARD_DIRS) into one dataset OUT_DIR.

    Episodes are renumbered in shard order, tasks and statistics merged, videos hard-linked (not
    re-encoded). Re-running a killed merge resumes it; the shards are left untouched.
    """
    from metis_datasets.merge import merge as run_merge

    try:
        report = run_merge(out_dir, list(shard_dirs), episodes_per_file=episodes_per_file, progress=True)  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(report.summary())
