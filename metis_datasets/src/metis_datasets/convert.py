"""Convert any registered dataset source into a METIS LeRobot v3 dataset, resumably.

The source is found by registry name (``metis.datasets`` entry points). Its layout is checked
first, then its episodes are converted and written with
:class:`~metis_datasets.lerobot_format.LeRobotWriter`.

* Sources built on ``IndexedDatasetSource`` (``metis_datasets.sources._common``) list their
  episodes by id and load them in ``workers`` processes (results are written in list order);
  other sources are iterated in one process.
* Every written episode records its ``source_episode_id`` in its metadata. A second run on the
  same output directory skips the ids already committed, so a killed conversion continues where
  it stopped (the writer discards anything written after its last commit).
* Episodes that cannot be converted (the adapter raises ``SkipEpisode``, or any other error
  while reading or checking one episode: a truncated HDF5, a singular pose, mismatched array
  lengths) are skipped; the report, the command's output and ``meta/metis_conversion.json`` list
  them with the file and the reason. ``strict=True`` (``--strict``) makes the first one fail the
  conversion instead (what was committed before stays, and a re-run resumes).
* ``shard=(K, N)`` (``--shard K/N``) converts the ``K``-th of ``N`` contiguous blocks of the
  listed episodes, so that N machines convert one source in parallel;
  :func:`metis_datasets.merge.merge` (``metis-datasets merge``) joins the shards into the
  dataset one conversion would have written.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import multiprocessing
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from metis_core.episode import Episode
from metis_core.interfaces import DatasetSource
from metis_core.io import read_json, write_json
from metis_core.lerobot_rules import parse_info, read_metadata_json
from metis_core.registry import DATASET_SOURCES
from metis_datasets.lerobot_format import LeRobotWriter, _read_parquet, metis_record
from metis_datasets.sources._common import IndexedDatasetSource, SkipEpisode
from metis_datasets.validation import InvalidDatasetError

__all__ = ["CONVERSION_LOG", "ConversionError", "ConversionReport", "convert", "converted_episode_ids", "shard_block"]  # fmt: skip

#: Where the summary of the last conversion run is written, relative to the dataset root.
CONVERSION_LOG = "meta/metis_conversion.json"


class ConversionError(ValueError):
    """A conversion that stopped on purpose (``strict`` and a bad episode); the message says which."""


def shard_block(count: int, shard: tuple[int, int]) -> range:
    """Positions of the episodes shard ``K`` of ``N`` converts: the K-th of N contiguous blocks.

    Blocks differ in size by at most one and concatenated in ``K`` order give ``range(count)``,
    so merging the shards in order reproduces one conversion's episode order.
    """
    k, n = shard
    if not (isinstance(k, int) and isinstance(n, int) and 0 <= k < n):
        raise ValueError(f"shard must be K/N with 0 <= K < N, got {k}/{n}")
    return range(k * count // n, (k + 1) * count // n)


@dataclass
class ConversionReport:
    """What a conversion did.

    Args:
        source: Registry name of the source.
        out_dir: Dataset root.
        listed: Episodes the source offered (None for sources that cannot list theirs).
        already_done: Episodes found committed from an earlier run and not converted again.
        written: Episodes written by this run.
        skipped: ``(episode id, reason)`` of episodes that could not be converted.
        seconds: Wall time of the run.
        shard: ``(K, N)`` for a sharded conversion.
    """

    source: str
    out_dir: Path
    listed: int | None = None
    already_done: int = 0
    written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    shard: tuple[int, int] | None = None

    @property
    def total_episodes(self) -> int:
        """Episodes in the dataset after the run."""
        return self.already_done + self.written

    def summary(self) -> str:
        """Human-readable lines: counts, then each skipped episode with its reason."""
        part = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        lines = [
            f"{self.source}{part}: {self.written} episode(s) written, {self.already_done} already "
            f"converted, {len(self.skipped)} skipped ({self.seconds:.1f} s) -> {self.out_dir}"
        ]
        reasons = collections.Counter(reason for _, reason in self.skipped)
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {episode_id}: {reason}" for episode_id, reason in self.skipped]
            if len(reasons) < len(self.skipped):
                lines.append("skipped by reason:")
                lines += [f"  {count} x {reason}" for reason, count in reasons.most_common()]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (written to :data:`CONVERSION_LOG`)."""
        return {
            "source": self.source,
            "listed": self.listed,
            "already_done": self.already_done,
            "written": self.written,
            "skipped": [{"episode": e, "reason": r} for e, r in self.skipped],
            "seconds": round(self.seconds, 3),
            "shard": list(self.shard) if self.shard else None,
        }


def converted_episode_ids(out_dir: str | Path) -> list[str]:
    """Source episode ids committed in a METIS dataset, in episode order (empty if none).

    Only ``meta/info.json`` and the episodes metadata files are read, never the frame data.
    """
    root = Path(out_dir)
    if not (root / "meta" / "info.json").exists():
        return []
    info_path = root / "meta" / "info.json"
    total = parse_info(read_metadata_json(info_path), info_path, error=InvalidDatasetError)["total_episodes"]  # fmt: skip
    rows: list[tuple[int, str]] = []
    for path in sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
        table = _read_parquet(path, columns=["episode_index", "metis/metadata"])
        for index, meta in zip(table.column("episode_index").to_pylist(), table.column("metis/metadata").to_pylist(), strict=True):  # fmt: skip
            try:
                episode_id = json.loads(meta or "{}").get("source_episode_id")
            except (json.JSONDecodeError, AttributeError) as err:
                raise InvalidDatasetError(f"{path}: episode {index}: column 'metis/metadata' is not a JSON object ({err})") from err  # fmt: skip
            rows.append((int(index), str(episode_id) if episode_id is not None else f"#{index}"))
    rows.sort()
    # Files past the commit record (a killed run) are not episodes yet.
    return [episode_id for index, episode_id in rows if index < total]


# -- workers ------------------------------------------------------------------------------------

_WORKER_SOURCE: IndexedDatasetSource | None = None


def _init_worker(source_class: type[IndexedDatasetSource], config: dict[str, Any]) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source_class.from_config(config)


def _load(source: IndexedDatasetSource, raw_dir: Path, episode_id: str) -> tuple[str, Episode | None, str]:  # fmt: skip
    """Load and check one episode; any failure of that one episode becomes a skip reason."""
    try:
        episode = source.load_episode(raw_dir, episode_id)
        episode.validate()
        return episode_id, episode, ""
    except SkipEpisode as err:
        return episode_id, None, str(err)
    except MemoryError:
        raise
    except Exception as err:  # one bad file must not abort a 300k-episode conversion
        return episode_id, None, _failure_reason(raw_dir, episode_id, err)


def _failure_reason(raw_dir: Path, episode_id: str, err: Exception) -> str:
    """``"<error type>: <message> (in <the episode's file>)"``."""
    text = str(err) or repr(err)
    if str(raw_dir) in text:
        return f"{type(err).__name__}: {text}"
    candidate = Path(raw_dir) / episode_id
    try:
        files = [candidate] if candidate.exists() else sorted(candidate.parent.glob(f"{candidate.name}.*"))  # fmt: skip
    except (OSError, ValueError):
        files = []
    where = ", ".join(str(f) for f in files[:3]) or f"episode {episode_id!r} under {raw_dir}"
    return f"{type(err).__name__}: {text} (in {where})"


def _load_in_worker(raw_dir: Path, episode_id: str) -> tuple[str, Episode | None, str]:
    assert _WORKER_SOURCE is not None  # set by _init_worker
    return _load(_WORKER_SOURCE, raw_dir, episode_id)


def _indexed_results(
    source: IndexedDatasetSource, raw_dir: Path, todo: list[str], workers: int
) -> Iterator[tuple[str, Episode | None, str]]:
    """Load episodes in list order, ``workers`` at a time, at most ``2 * workers`` in flight."""
    if workers <= 1:
        for episode_id in todo:
            yield _load(source, raw_dir, episode_id)
        return
    config = source.config.to_dict()
    config.pop("type", None)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(type(source), config)) as pool:  # fmt: skip
        pending: collections.deque = collections.deque()
        queue = iter(todo)
        for episode_id in queue:
            pending.append(pool.submit(_load_in_worker, raw_dir, episode_id))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            following = next(queue, None)
            if following is not None:
                pending.append(pool.submit(_load_in_worker, raw_dir, following))
            yield result


def _iterated_results(source: DatasetSource, raw_dir: Path) -> Iterator[tuple[str, Episode | None, str]]:  # fmt: skip
    for number, episode in enumerate(source.iter_episodes(raw_dir)):
        episode_id = episode.metadata.get("source_episode_id", f"#{number}")
        yield str(episode_id), episode, ""


# -- conversion ---------------------------------------------------------------------------------


def convert(
    source: str | DatasetSource,
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    workers: int = 1,
    overwrite: bool = False,
    episodes_per_file: int = 50,
    limit: int | None = None,
    progress: bool = True,
    strict: bool = False,
    shard: tuple[int, int] | None = None,
) -> ConversionReport:
    """Convert a source's raw directory into a METIS LeRobot v3 dataset (resuming if possible).

    Args:
        source: Registry name (``"arctic"``, ...) or a source instance.
        raw_dir: The source's download, in its published layout.
        out_dir: Dataset root to write (resumed if it holds an earlier run of the same source).
        config: Source config fields (e.g. ``{"target_fps": 30, "with_images": False}``); only
            with a registry name.
        workers: Processes loading episodes in parallel (indexed sources only).
        overwrite: Delete ``out_dir`` first instead of resuming.
        episodes_per_file: Episodes per data/video file; each file is one commit.
        limit: Convert at most this many episodes in total (for a quick look).
        progress: Show a progress bar.
        strict: Fail at the first episode that cannot be converted instead of skipping it.
        shard: ``(K, N)``: convert only the K-th of N contiguous blocks of the listed episodes
            (indexed sources only); merge the N outputs with ``metis-datasets merge``.

    Returns:
        The :class:`ConversionReport` (also written to :data:`CONVERSION_LOG` in the dataset).

    Raises:
        FileNotFoundError, ValueError: If ``raw_dir`` is not in the source's layout (the message
            names the missing or unexpected file or key), or no episode could be converted.
        KeyError: For an unknown source name (listing the close matches).
        ConversionError: With ``strict``, naming the first episode that could not be converted.
    """
    started = time.monotonic()
    if isinstance(source, str):
        instance = DATASET_SOURCES.get(source).from_config(dict(config or {}))
    else:
        if config:
            raise ValueError("convert: pass config only together with a registry name")
        instance = source
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.exists():
        raise FileNotFoundError(f"{raw_dir} does not exist: expected the raw {instance.name} download")  # fmt: skip
    if shard is not None:
        shard_block(1, shard)  # validates K/N
        if not isinstance(instance, IndexedDatasetSource):
            raise ValueError(f"{instance.name}: --shard needs a source that lists its episodes (an IndexedDatasetSource); this one can only be iterated")  # fmt: skip
    instance.check_layout(raw_dir)
    if overwrite and out_dir.exists():
        shutil.rmtree(out_dir)
    done = converted_episode_ids(out_dir)
    done_set = set(done)
    report = ConversionReport(source=instance.name, out_dir=out_dir, already_done=len(done), shard=shard)  # fmt: skip
    budget = None if limit is None else max(limit - len(done), 0)

    if isinstance(instance, IndexedDatasetSource):
        listed = instance.list_episodes(raw_dir)
        if shard is not None:
            block = shard_block(len(listed), shard)
            if not block:
                raise ValueError(f"{instance.name}: shard {shard[0]}/{shard[1]} holds no episodes: the source lists {len(listed)}; use at most {len(listed)} shards")  # fmt: skip
            listed = listed[block.start : block.stop]
        report.listed = len(listed)
        todo = [e for e in listed if e not in done_set]
        if budget is not None:
            todo = todo[:budget]
        results = _indexed_results(instance, raw_dir, todo, workers)
        total = len(todo)
    else:
        results = (r for r in _iterated_results(instance, raw_dir) if r[0] not in done_set)
        total = None

    writer: LeRobotWriter | None = None
    bar = tqdm(results, total=total, desc=f"converting {instance.name}", unit="episode", disable=not progress)  # fmt: skip
    try:
        for episode_id, episode, reason in bar:
            if budget is not None and report.written >= budget:
                break
            if episode is not None:
                episode.metadata["source_episode_id"] = episode_id
                if writer is None:
                    writer = _open_writer(out_dir, episode, instance.name, episodes_per_file, shard)  # fmt: skip
                try:
                    writer.add_episode(episode)
                except ValueError as err:  # this episode disagrees with the dataset (fps, size)
                    episode, reason = None, _failure_reason(raw_dir, episode_id, err)
            if episode is None:
                report.skipped.append((episode_id, reason))
                bar.set_postfix(skipped=len(report.skipped))
                if strict:
                    raise ConversionError(f"{instance.name}: episode {episode_id} could not be converted: {reason}. --strict stops at the first such episode ({report.written} written by this run are committed; re-run without --strict to skip it and resume)")  # fmt: skip
                continue
            report.written += 1
    finally:
        bar.close()
        if writer is not None:
            writer.flush()
    if writer is None:
        if not done:
            reasons = "; ".join(f"{e}: {r}" for e, r in report.skipped[:5]) or "the source yielded no episodes"  # fmt: skip
            raise ValueError(f"{instance.name}: no episode under {raw_dir} could be converted ({reasons})")  # fmt: skip
        writer = _reopen_writer(out_dir, instance.name, episodes_per_file, shard)
    writer.finalize(progress=progress)
    report.seconds = time.monotonic() - started
    write_json(out_dir / CONVERSION_LOG, report.to_dict())
    return report


def _open_writer(out_dir: Path, episode: Episode, source: str, episodes_per_file: int, shard: tuple[int, int] | None) -> LeRobotWriter:  # fmt: skip
    ego = episode.images.get("ego")
    intrinsics = episode.metadata.get("camera_intrinsics")
    return LeRobotWriter(
        out_dir,
        fps=episode.fps,
        source=source,
        embodiment=episode.embodiment,
        camera_intrinsics=None if intrinsics is None else np.asarray(intrinsics, np.float64),
        image_shape=None if ego is None else (int(ego.shape[1]), int(ego.shape[2])),
        episodes_per_file=episodes_per_file,
        shard=shard,
    )


def _reopen_writer(out_dir: Path, source: str, episodes_per_file: int, shard: tuple[int, int] | None) -> LeRobotWriter:  # fmt: skip
    info = read_json(out_dir / "meta" / "info.json")
    metis = metis_record(info)
    shape = metis.get("image_shape")
    return LeRobotWriter(
        out_dir,
        fps=float(info["fps"]),
        source=source,
        embodiment=metis.get("embodiment", ""),
        camera_intrinsics=(metis.get("camera_intrinsics") or {}).get("ego"),
        image_shape=tuple(shape) if shape else None,
        episodes_per_file=episodes_per_file,
        shard=shard,
    )
