"""Merge the shards of a sharded conversion into one dataset, atomically and resumably.

``metis-datasets convert SOURCE RAW OUT_k --shard K/N`` writes shard ``K`` of ``N``;
:func:`merge` (``metis-datasets merge OUT SHARD_DIRS...``) joins them into the dataset one
conversion would have written: episodes renumbered in shard order, tasks merged in order of first
appearance, frame indices and task indices of the data files rewritten (the small parquet part),
video files hard-linked (copied only across file systems) without re-encoding, statistics
recomputed over all frames.

Every shard is opened with the full reader checks first and must be complete. The output is
committed one shard file at a time with the writer's protocol (``meta/info.json`` last), so a
killed merge resumes where it stopped when re-run with the same shards (recorded in
``meta/metis_merge.json``); the shards are never modified.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from metis_core.io import read_json, write_json
from metis_datasets.lerobot_format import (
    DATA_PATH,
    EGO_KEY,
    EPISODES_PATH,
    VIDEO_PATH,
    LeRobotDataset,
    LeRobotWriter,
    _chunk_file,
    _parse_parquet,
    _tasks_table,
    _write_parquet,
)
from metis_datasets.validation import CHECKSUMS_PATH, InvalidDatasetError, file_digest

__all__ = ["MERGE_LOG", "MergeReport", "merge"]

#: The shards a merge joins, in order (checked when a killed merge is resumed).
MERGE_LOG = "meta/metis_merge.json"


@dataclass
class MergeReport:
    """What a merge did.

    Args:
        out_dir: The merged dataset.
        shards: Shard roots in merge order.
        episodes: Episodes in the merged dataset.
        frames: Frames in the merged dataset.
        files_already_done: Shard files found committed from an earlier (killed) merge.
        linked: Video files hard-linked; ``copied`` those that had to be copied.
        seconds: Wall time.
    """

    out_dir: Path
    shards: list[Path] = field(default_factory=list)
    episodes: int = 0
    frames: int = 0
    files_already_done: int = 0
    linked: int = 0
    copied: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line."""
        return (
            f"merged {len(self.shards)} shard(s) -> {self.out_dir}: {self.episodes} episodes, "
            f"{self.frames} frames ({self.files_already_done} file(s) already merged, "
            f"{self.linked} video(s) linked, {self.copied} copied, {self.seconds:.1f} s)"
        )


def _order_shards(datasets: list[LeRobotDataset]) -> list[LeRobotDataset]:
    records = [d.metis.get("shard") for d in datasets]
    if all(r is None for r in records):
        return datasets  # plain datasets: merged in the order given
    if any(r is None for r in records):
        plain = [str(d.root) for d, r in zip(datasets, records, strict=True) if r is None]
        raise ValueError(f"merge: {plain} are not shards of a sharded conversion while the others are; merge shards of one conversion only")  # fmt: skip
    counts = {int(r[1]) for r in records}
    if len(counts) != 1:
        raise ValueError(f"merge: the shards come from conversions into different numbers of shards {sorted(counts)}")  # fmt: skip
    count = counts.pop()
    by_index: dict[int, LeRobotDataset] = {}
    for dataset, record in zip(datasets, records, strict=True):
        index = int(record[0])
        if index in by_index:
            raise ValueError(f"merge: shard {index}/{count} given twice ({by_index[index].root} and {dataset.root})")  # fmt: skip
        by_index[index] = dataset
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise ValueError(f"merge: shard(s) {missing} of {count} are missing; pass all {count} shard directories")  # fmt: skip
    return [by_index[k] for k in range(count)]


def _same(datasets: list[LeRobotDataset]) -> None:
    first = datasets[0]
    for dataset in datasets[1:]:
        for what, mine, theirs in (
            ("source", first.source, dataset.source),
            ("embodiment", first.embodiment, dataset.embodiment),
            ("fps", first.fps, dataset.fps),
            ("image_shape", first.metis.get("image_shape"), dataset.metis.get("image_shape")),
            (
                "camera intrinsics",
                first.metis.get("camera_intrinsics"),
                dataset.metis.get("camera_intrinsics"),
            ),
            ("contract", first.metis.get("contract"), dataset.metis.get("contract")),
        ):
            if mine != theirs:
                raise ValueError(f"merge: {dataset.root} has {what} {theirs!r}, {first.root} has {mine!r}; only shards of one conversion can be merged")  # fmt: skip


def _link(source: Path, target: Path) -> bool:
    """Place ``source``'s content at ``target`` atomically; True if hard-linked, False if copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
            linked = True
        except OSError:
            shutil.copyfile(source, tmp)
            linked = False
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return linked


def merge(
    out_dir: str | os.PathLike[str],
    shard_dirs: Sequence[str | os.PathLike[str]],
    *,
    episodes_per_file: int = 50,
    progress: bool = False,
) -> MergeReport:
    """Merge complete shards (or plain METIS datasets of one source) into ``out_dir``.

    Args:
        out_dir: The merged dataset (created; resumed if a killed merge of the same shards left
            it).
        shard_dirs: Shard roots, in any order (shards are ordered by their ``K``).
        episodes_per_file: Recorded for a later append to the merged dataset.
        progress: Show a progress bar.

    Returns:
        The :class:`MergeReport`.

    Raises:
        ValueError: For shards of different conversions, a missing or repeated shard, repeated
            source episodes, or an ``out_dir`` that holds something else.
        IncompleteDatasetError, CorruptFileError: If a shard is unfinished or damaged.
    """
    started = time.monotonic()
    out = Path(out_dir)
    if not shard_dirs:
        raise ValueError("merge: give at least one shard directory")
    if any(Path(d).resolve() == out.resolve() for d in shard_dirs):
        raise ValueError(f"merge: the output {out} is also one of the shards")
    datasets = _order_shards([LeRobotDataset(d) for d in shard_dirs])
    _same(datasets)
    seen: dict[str, Path] = {}
    for dataset in datasets:
        for ep in dataset.episodes:
            key = ep["metadata"].get("source_episode_id")
            if key is None:
                continue
            if key in seen:
                raise ValueError(f"merge: source episode {key!r} is in both {seen[key]} and {dataset.root}; the shards overlap")  # fmt: skip
            seen[key] = dataset.root
    plan = [{"root": str(d.root.resolve()), "episodes": len(d.episodes), "frames": d.num_frames, "info_sha256": d.integrity.get("info_sha256")} for d in datasets]  # fmt: skip
    log_path = out / MERGE_LOG
    if log_path.exists():
        if read_json(log_path) != {"shards": plan}:
            raise ValueError(f"merge: {out} holds a merge of other shards ({log_path}); merge into a new directory")  # fmt: skip
    elif (out / "meta" / "info.json").exists():
        raise ValueError(f"merge: {out} already holds a dataset that is not a merge of these shards; merge into a new directory")  # fmt: skip
    first = datasets[0]
    shape = first.metis.get("image_shape")
    intrinsics = (first.metis.get("camera_intrinsics") or {}).get("ego")
    writer = LeRobotWriter(out, fps=first.fps, source=first.source, embodiment=first.embodiment, camera_intrinsics=intrinsics, image_shape=tuple(shape) if shape else None, episodes_per_file=episodes_per_file)  # fmt: skip
    write_json(log_path, {"shards": plan})
    report = MergeReport(out_dir=out, shards=[d.root for d in datasets])
    units = [(d, path) for d in datasets for path in sorted((d.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))]  # fmt: skip
    done_files, done_episodes = writer._files, writer.committed_episodes
    prefix = 0
    for dataset, path in units[:done_files]:
        prefix += sum(1 for ep in dataset.episodes if ep["source_file"] == path)
    if prefix != done_episodes:
        raise InvalidDatasetError(f"merge: {out} commits {done_episodes} episodes, but its first {done_files} file(s) of these shards hold {prefix}; it is not a prefix of this merge")  # fmt: skip
    report.files_already_done = done_files
    # tasks in order of first appearance, as one conversion assigns them
    for dataset, path in units[:done_files]:
        for ep in (e for e in dataset.episodes if e["source_file"] == path):
            writer._tasks.setdefault(dataset.instruction(ep["episode_index"]), len(writer._tasks))
    for dataset, path in tqdm(units[done_files:], desc="merging", unit="file", disable=not progress):  # fmt: skip
        linked, copied = _merge_unit(writer, dataset, path)
        report.linked += linked
        report.copied += copied
    writer.finalize(progress=progress)
    merged = LeRobotDataset(out, load_stats=False)
    report.episodes, report.frames = len(merged.episodes), merged.num_frames
    report.seconds = time.monotonic() - started
    return report


def _merge_unit(writer: LeRobotWriter, dataset: LeRobotDataset, episodes_path: Path) -> tuple[int, int]:  # fmt: skip
    """Commit one shard file (its episodes, data and videos) as the writer's next file."""
    records = [ep for ep in dataset.episodes if ep["source_file"] == episodes_path]
    if not records:
        return 0, 0
    data_files = {ep["data_file"] for ep in records}
    if len(data_files) != 1:
        raise InvalidDatasetError(f"{episodes_path}: its episodes span data files {sorted(map(str, data_files))}; merge expects one data file per episodes file (as METIS writes them)")  # fmt: skip
    root = writer.root
    chunk, file = _chunk_file(writer._files)
    episode_offset = writer._episodes - records[0]["episode_index"]
    frame_offset = writer._frames - records[0]["from"]
    shard_task_text = dataset.tasks
    for ep in records:
        writer._tasks.setdefault(dataset.instruction(ep["episode_index"]), len(writer._tasks))
    if not (root / "meta" / "info.json").exists():
        writer._write_info()
    digests: dict[str, dict] = {}
    # data: renumber episode_index, index, task_index; everything else is kept as stored
    data_path = next(iter(data_files))
    table = _parse_parquet(data_path, data_path.read_bytes())
    wanted = sum(ep["length"] for ep in records)
    if table.num_rows != wanted:
        raise InvalidDatasetError(f"{data_path}: holds {table.num_rows} frames, its episodes {wanted}")  # fmt: skip
    remap = {index: writer._tasks[text] for index, text in shard_task_text.items() if text in writer._tasks}  # fmt: skip
    task_index = np.asarray(table.column("task_index").to_numpy())
    new_tasks = np.array([remap.get(int(t), -1) for t in task_index], dtype=np.int64)
    if (new_tasks < 0).any():
        raise InvalidDatasetError(f"{data_path}: task_index {int(task_index[new_tasks < 0][0])} has no task in {dataset.root}/meta/tasks.parquet")  # fmt: skip
    for name, values in (
        ("episode_index", np.asarray(table.column("episode_index").to_numpy()) + episode_offset),
        ("index", np.asarray(table.column("index").to_numpy()) + frame_offset),
        ("task_index", new_tasks),
    ):
        position = table.schema.get_field_index(name)
        table = table.set_column(position, name, pa.array(values.astype(np.int64)))
    data_rel = DATA_PATH.format(chunk_index=chunk, file_index=file)
    digests[data_rel] = _write_parquet(root / data_rel, table)
    # videos: the same bytes under the new number
    linked = copied = 0
    for key, (video_path, _, _) in records[0]["videos"].items():
        if any(ep["videos"][key][0] != video_path for ep in records):
            raise InvalidDatasetError(f"{episodes_path}: its episodes span several {key!r} video files; merge expects one per episodes file")  # fmt: skip
        rel_source = video_path.relative_to(dataset.root).as_posix()
        digest = file_digest(video_path)
        recorded = dataset._digests.get(rel_source, (None, None))[0]
        if recorded is not None and recorded != digest:
            raise InvalidDatasetError(f"{video_path}: content does not match the checksum recorded at commit; the shard is damaged (run metis-datasets check {dataset.root})")  # fmt: skip
        rel = VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)
        if _link(video_path, root / rel):
            linked += 1
        else:
            copied += 1
        digests[rel] = digest
        if key == EGO_KEY:
            writer._video_info = dataset.features.get(EGO_KEY, {}).get("info")
    # episodes metadata: new indices and locations, the rest as stored
    episodes = _parse_parquet(episodes_path, episodes_path.read_bytes())
    indices = np.asarray(episodes.column("episode_index").to_numpy())
    keep = indices < dataset.info["total_episodes"]
    episodes = episodes.filter(pa.array(keep))
    n = episodes.num_rows
    changes = {
        "episode_index": np.asarray(episodes.column("episode_index").to_numpy()) + episode_offset,
        "dataset_from_index": np.asarray(episodes.column("dataset_from_index").to_numpy())
        + frame_offset,
        "dataset_to_index": np.asarray(episodes.column("dataset_to_index").to_numpy())
        + frame_offset,
        "data/chunk_index": np.full(n, chunk),
        "data/file_index": np.full(n, file),
        "meta/episodes/chunk_index": np.full(n, chunk),
        "meta/episodes/file_index": np.full(n, file),
    }
    for key in records[0]["videos"]:
        changes[f"videos/{key}/chunk_index"] = np.full(n, chunk)
        changes[f"videos/{key}/file_index"] = np.full(n, file)
    for name, values in changes.items():
        position = episodes.schema.get_field_index(name)
        if position >= 0:
            episodes = episodes.set_column(position, name, pa.array(values.astype(np.int64)))
    episodes_rel = EPISODES_PATH.format(chunk_index=chunk, file_index=file)
    digests[episodes_rel] = _write_parquet(root / episodes_rel, episodes)
    write_json(root / CHECKSUMS_PATH.format(chunk_index=chunk, file_index=file), digests)
    writer._checksums["meta/tasks.parquet"] = _write_parquet(root / "meta" / "tasks.parquet", _tasks_table(writer._tasks))  # fmt: skip
    writer._complete = False
    writer._episodes += n
    writer._frames += wanted
    writer._files += 1
    writer._write_info()
    return linked, copied
