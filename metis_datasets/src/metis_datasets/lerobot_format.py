"""LeRobot dataset format v3.0 storage with the METIS hand contract, and reading of v3.0/v2.1.

Layout written (``C`` = chunk index, ``F`` = file index, 1000 files per chunk)::

    meta/info.json                      codebase_version "v3.0", features (with the METIS record), fps
    meta/stats.json                     mean/std/min/max/q01/q99/count per numeric feature
    meta/tasks.parquet                  task (string), task_index (int64)
    meta/episodes/chunk-C/file-F.parquet  one row per episode (indices into data and video files,
                                        tasks, length, subtasks, embodiment, metadata as JSON)
    data/chunk-C/file-F.parquet         one row per frame, many episodes per file
    videos/observation.images.ego/chunk-C/file-F.mp4   many episodes per file

Per-frame METIS columns: ``observation.state`` and ``action`` (48 float32, the contract),
``observation.hand_mask`` (2 bool: left, right), plus LeRobot's ``timestamp``, ``frame_index``,
``episode_index``, ``index``, ``task_index``. The METIS record (contract name and version, source,
embodiment, fps, camera intrinsics) sits in ``meta/info.json`` at
``features["observation.state"]["metis"]``: LeRobot (0.5 and later) drops unknown top-level keys of
``info.json`` when it rewrites it, but keeps feature entries verbatim, so the record survives
LeRobot's own tools (``aggregate_datasets``, ``delete_episodes``, ...).

Atomicity and resume: ``meta/info.json`` is written before any data (so a folder holding data
but no ``info.json`` is never a killed run's: it is refused, never cleaned). Episodes are buffered
and flushed as one data file, one video file, one episodes-metadata file and one checksum record
(``meta/metis_checksums/chunk-C/file-F.json``: SHA-256 and size of the three), each written to a
temporary name and renamed; ``meta/info.json`` is rewritten last and is the commit record
(``total_episodes``). Files numbered beyond those the committed episodes reference (left by a
killed run) are deleted when the writer reopens the dataset, and
:attr:`LeRobotWriter.committed_episodes` tells a conversion where to continue. The METIS record's
``complete`` is False until :meth:`LeRobotWriter.finalize` has written ``meta/stats.json``; the
reader refuses an incomplete dataset unless asked (``allow_incomplete=True``).

Parquet files are written with page checksums, read with their verification; every check the
reader runs lives in :mod:`metis_datasets.validation` (shared with ``metis-datasets check``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from metis_core.contract import (
    ACTION_DIM,
    HAND_CONTRACT,
    check_contract,
    describe_index,
    hand_value_mask,
)
from metis_core.episode import Episode, Subtask
from metis_core.io import CorruptFileError, atomic_write, write_json
from metis_core.lerobot_rules import committed_rows, parse_info, read_metadata_json
from metis_core.lerobot_rules import metis_record as _metis_record
from metis_core.normalization import NormStats, compute_stats
from metis_datasets.validation import (
    CHECKSUMS_PATH,
    IncompleteDatasetError,
    InvalidDatasetError,
    Sink,
    StopChecking,
    UnsupportedDatasetError,
    bytes_digest,
    check_episode_records,
    check_frame_table,
    check_no_pending_annotation,
    check_stats,
    check_values,
    file_digest,
    info_digest,
    verify_digest,
)
from metis_datasets.video import VideoReader, encode_video

__all__ = [
    "CODEBASE_VERSION",
    "EGO_KEY",
    "LeRobotDataset",
    "LeRobotWriter",
    "UnsupportedDatasetError",
    "metis_record",
    "norm_stats_from_json",
    "write_episodes",
]

CODEBASE_VERSION = "v3.0"
EGO_KEY = "observation.images.ego"
STATE_KEY = "observation.state"
#: Top-level ``info.json`` key of the integrity record (file checksums, info.json's own hash).
INTEGRITY_KEY = "metis_integrity"
ACTION_KEY = "action"
MASK_KEY = "observation.hand_mask"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_HAND_NAMES = [describe_index(i) for i in range(ACTION_DIM)]


_NUMERIC = ("float32", "float64", "int64", "int32", "bool")


def _chunk_file(number: int) -> tuple[int, int]:
    return number // CHUNKS_SIZE, number % CHUNKS_SIZE


def _features(image_shape: tuple[int, int] | None, video_info: dict | None, record: dict) -> dict:
    features: dict[str, Any] = {
        STATE_KEY: {
            "dtype": "float32",
            "shape": [ACTION_DIM],
            "names": _HAND_NAMES,
            "metis": record,
        },
        ACTION_KEY: {"dtype": "float32", "shape": [ACTION_DIM], "names": _HAND_NAMES},
        MASK_KEY: {"dtype": "bool", "shape": [2], "names": ["left", "right"]},
    }
    if image_shape is not None:
        features[EGO_KEY] = {
            "dtype": "video",
            "shape": [image_shape[0], image_shape[1], 3],
            "names": ["height", "width", "channels"],
            "info": video_info or {},
        }
    for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"), ("index", "int64"), ("task_index", "int64")):  # fmt: skip
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


class LeRobotWriter:
    """Writes episodes into a LeRobot v3.0 dataset, atomically and resumably.

    Args:
        root: Dataset directory (created if missing; reopened and resumed if it holds a dataset).
        fps: Frame rate of every episode.
        source: Registry name of the source.
        embodiment: Registry name of the hand.
        camera_intrinsics: ``(3, 3)`` K of the ego camera in pixels of the stored frames, or None.
        image_shape: ``(H, W)`` of the ego frames, or None for a dataset without images.
        episodes_per_file: Episodes per data/video file.
        robot_type: LeRobot's ``robot_type`` field.
        shard: ``(K, N)`` when this dataset is shard ``K`` of ``N`` of a sharded conversion
            (recorded so that ``metis-datasets merge`` can check it has every shard once).

    Raises:
        UnsupportedDatasetError: If ``root`` holds a dataset of another contract, source or fps.
        FileExistsError: If ``root`` holds data or video files but no ``meta/info.json``
            (nothing is deleted; the message says what is there and how to recover).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        fps: float,
        source: str,
        embodiment: str,
        camera_intrinsics: np.ndarray | list | None = None,
        image_shape: tuple[int, int] | None = None,
        episodes_per_file: int = 50,
        robot_type: str | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if episodes_per_file < 1:
            raise ValueError(f"episodes_per_file must be >= 1, got {episodes_per_file}")
        self.root = Path(root)
        self.fps = float(fps)
        self.source, self.embodiment = source, embodiment
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.episodes_per_file = episodes_per_file
        self.robot_type = robot_type or embodiment
        self.intrinsics = None if camera_intrinsics is None else np.asarray(camera_intrinsics, np.float64).reshape(3, 3).tolist()  # fmt: skip
        self._pending: list[Episode] = []
        self._tasks: dict[str, int] = {}
        self._episodes = 0
        self._frames = 0
        self._files = 0
        self._video_info: dict | None = None
        self.shard = None if shard is None else (int(shard[0]), int(shard[1]))
        if self.shard is not None and not 0 <= self.shard[0] < self.shard[1]:
            raise ValueError(f"shard must be (K, N) with 0 <= K < N, got {shard}")
        self._checksums: dict[str, dict] = {}  # digests of tasks.parquet and stats.json
        self._complete = False
        if (self.root / "meta" / "info.json").exists():
            self._reopen()
        else:
            self._refuse_orphaned_data()

    def _refuse_orphaned_data(self) -> None:
        """Refuse a folder that holds dataset files but no ``meta/info.json``; delete nothing.

        The writer creates ``info.json`` before any data file, so such a folder is never a killed
        run's leftover: its commit record was lost, and the data in it may be all there is.
        """
        found: dict[str, int] = {}
        for folder in ("data", "videos", "meta/episodes", "meta/metis_checksums"):
            base = self.root / folder
            if base.is_dir():
                count = sum(1 for p in base.rglob("*") if p.is_file() and not (p.name.startswith(".") and p.name.endswith(".tmp")))  # fmt: skip
                if count:
                    found[folder] = count
        for name in ("tasks.parquet", "stats.json"):
            if (self.root / "meta" / name).is_file():
                found[f"meta/{name}"] = 1
        if found:
            listing = ", ".join(f"{n} file(s) under {k}" for k, n in found.items())
            raise FileExistsError(
                f"{self.root} holds {listing} but no meta/info.json (the commit record); refusing to "
                "write there, and nothing was deleted. Restore meta/info.json from a backup (or from "
                "another copy of the dataset) to resume it, move the folder away, or delete it "
                "explicitly (metis-datasets convert --overwrite) to start again."
            )

    # -- resume -----------------------------------------------------------------------------

    def _reopen(self) -> None:
        info_path = self.root / "meta" / "info.json"
        info = read_metadata_json(info_path)
        if not isinstance(info, dict) or "features" not in info or "total_episodes" not in info:
            raise UnsupportedDatasetError(f"{self.root}/meta/info.json: expected a LeRobot info record with 'features' and 'total_episodes'; refusing to append")  # fmt: skip
        parse_info(info, info_path, error=InvalidDatasetError)
        metis = metis_record(info)
        if not metis:
            raise UnsupportedDatasetError(f"{self.root} holds a LeRobot dataset not written by METIS (no features[{STATE_KEY!r}]['metis'] record); refusing to append")  # fmt: skip
        check_contract(metis.get("contract"), where=str(self.root))
        for key, mine in (("source", self.source), ("embodiment", self.embodiment)):
            if metis.get(key) != mine:
                raise UnsupportedDatasetError(f"{self.root} holds {key} {metis.get(key)!r}, cannot append {key} {mine!r}")  # fmt: skip
        if abs(float(info["fps"]) - self.fps) > 1e-9:
            raise UnsupportedDatasetError(f"{self.root} is at {info['fps']} fps, cannot append episodes at {self.fps} fps")  # fmt: skip
        shape = metis.get("image_shape")
        if (tuple(shape) if shape else None) != self.image_shape:
            raise UnsupportedDatasetError(f"{self.root} holds ego images of shape {shape}, cannot append episodes with image_shape {self.image_shape}")  # fmt: skip
        added = sorted(set(info["features"]) - set(_features(self.image_shape, None, {})))
        if added:
            # e.g. dynamics codes stored by `metis annotate`: new episodes would lack them
            raise UnsupportedDatasetError(f"{self.root} holds per-frame features added after it was written ({added}); appending episodes would leave them without values. Write the new episodes to a new dataset (and annotate it), or merge with metis-datasets merge")  # fmt: skip
        recorded_shard = metis.get("shard")
        if recorded_shard is not None and self.shard is not None and tuple(recorded_shard) != self.shard:  # fmt: skip
            raise UnsupportedDatasetError(f"{self.root} holds shard {recorded_shard[0]}/{recorded_shard[1]}, cannot continue it as shard {self.shard[0]}/{self.shard[1]}")  # fmt: skip
        if recorded_shard is not None and self.shard is None:
            self.shard = (int(recorded_shard[0]), int(recorded_shard[1]))
        recorded = integrity_record(info).get("checksums") or {}
        self._checksums = {k: v for k, v in recorded.items() if isinstance(v, dict)}
        self._complete = bool(metis.get("complete", (self.root / "meta" / "stats.json").exists()))
        self._episodes = int(info["total_episodes"])
        self._frames = int(info.get("total_frames", 0))
        self._video_info = info["features"].get(EGO_KEY, {}).get("info")
        tasks_path = self.root / "meta" / "tasks.parquet"
        if tasks_path.exists():
            table = _read_parquet(tasks_path)
            self._tasks = dict(zip(table.column("task").to_pylist(), table.column("task_index").to_pylist(), strict=True))  # fmt: skip
        self._files = self._committed_file_count()
        self._remove_uncommitted()

    def _committed_file_count(self) -> int:
        """One past the highest file number the committed episodes reference.

        Reads every episodes file (an unreadable one raises before anything is deleted) and checks
        that exactly ``total_episodes`` committed episodes are recorded.
        """
        highest, committed = -1, 0
        data_rows: dict[Path, int] = {}
        videos: set[Path] = set()
        for path in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            table = _read_parquet(path)
            prefixes = ["data", "meta/episodes"] + [c[: -len("/chunk_index")] for c in table.column_names if c.startswith("videos/") and c.endswith("/chunk_index")]  # fmt: skip
            columns = ["episode_index", "length"] + [f"{p}/{n}" for p in prefixes for n in ("chunk_index", "file_index")]  # fmt: skip
            lacking = [c for c in columns if c not in table.column_names]
            if lacking:
                raise UnsupportedDatasetError(f"{path}: lacks episodes columns {lacking}; refusing to append")  # fmt: skip
            for row in table.select(columns).to_pylist():
                if row["episode_index"] >= self._episodes:
                    continue  # written by a killed flush, never committed
                committed += 1
                for prefix in prefixes:
                    number = row[f"{prefix}/chunk_index"] * CHUNKS_SIZE + row[f"{prefix}/file_index"]  # fmt: skip
                    highest = max(highest, number)
                    location = {"chunk_index": row[f"{prefix}/chunk_index"], "file_index": row[f"{prefix}/file_index"]}  # fmt: skip
                    if prefix == "data":
                        data_file = self.root / DATA_PATH.format(**location)
                        data_rows[data_file] = data_rows.get(data_file, 0) + int(row["length"])
                    elif prefix.startswith("videos/"):
                        videos.add(self.root / VIDEO_PATH.format(video_key=prefix[len("videos/") :], **location))  # fmt: skip
        if committed != self._episodes:
            raise CorruptFileError(f"{self.root}: info.json commits {self._episodes} episodes but the episodes files record {committed}; refusing to append (nothing was changed)")  # fmt: skip
        self._check_committed_files(data_rows, videos)
        return highest + 1

    def _check_committed_files(self, data_rows: Mapping[Path, int], videos: Iterable[Path]) -> None:
        """Refuse to append to a dataset whose committed data or video files are damaged.

        Reads each data file's parquet footer (cheap) and opens each video container, so that a
        truncated or foreign file is reported before anything is written or deleted.
        """
        for path, expected in data_rows.items():
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing but committed episodes refer to it; refusing to append (nothing was changed)")  # fmt: skip
            try:
                found = pq.read_metadata(path).num_rows
            except (pa.ArrowInvalid, OSError) as err:
                raise CorruptFileError(f"{path}: expected a parquet file of {expected} frames, found an unreadable file ({err}); refusing to append (nothing was changed)") from err  # fmt: skip
            if found != expected:
                raise CorruptFileError(f"{path}: expected {expected} frames (from the episodes metadata), found {found}; refusing to append (nothing was changed)")  # fmt: skip
        for path in sorted(videos):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing but committed episodes refer to it; refusing to append (nothing was changed)")  # fmt: skip
            VideoReader(path).close()  # raises CorruptFileError for a truncated or foreign file

    def _remove_uncommitted(self) -> None:
        """Delete files numbered at or beyond the committed file count and stray temporaries."""
        meta = self.root / "meta"
        if meta.is_dir():  # info.json, tasks.parquet or stats.json a killed run did not rename
            for path in meta.glob(".*.tmp"):
                path.unlink()
        for folder in ("data", "meta/episodes", "meta/metis_checksums", "videos"):
            base = self.root / folder
            if not base.exists():
                continue
            for path in base.rglob("*"):
                if not path.is_file():
                    continue
                if path.name.startswith(".") and path.name.endswith(".tmp"):
                    path.unlink()
                    continue
                if path.stem.startswith("file-") and path.parent.name.startswith("chunk-"):
                    number = int(path.parent.name[6:]) * CHUNKS_SIZE + int(path.stem[5:])
                    if number >= self._files:
                        path.unlink()

    @property
    def committed_episodes(self) -> int:
        """Episodes safely on disk; a resumed conversion skips this many source episodes."""
        return self._episodes

    # -- writing ----------------------------------------------------------------------------

    def add_episode(self, episode: Episode) -> None:
        """Buffer one episode; a full buffer is flushed to disk.

        Raises:
            ContractError: If the episode breaks the contract.
            ValueError: If its fps, source, or image shape differ from the dataset's, or it has
                ego frames and the dataset was created without ``image_shape``.
        """
        episode.validate()
        if episode.source and episode.source != self.source:
            raise ValueError(f"episode from source {episode.source!r}, dataset holds source {self.source!r}")  # fmt: skip
        if abs(episode.fps - self.fps) > 1e-9:
            raise ValueError(f"episode at {episode.fps} fps, dataset at {self.fps} fps; resample it first")  # fmt: skip
        if self.image_shape is not None:
            frames = episode.images.get("ego")
            if frames is None or tuple(frames.shape[1:3]) != self.image_shape:
                raise ValueError(f"episode images['ego']: expected (T, {self.image_shape[0]}, {self.image_shape[1]}, 3), got {None if frames is None else frames.shape}")  # fmt: skip
        elif episode.images.get("ego") is not None:
            # never drop frames silently: a tabular-only dataset must be asked for
            raise ValueError(f"episode has ego frames of shape {tuple(episode.images['ego'].shape)} but the dataset at {self.root} was created without image_shape; pass image_shape=(H, W) to store them as video, or remove episode.images['ego'] for a tabular-only dataset")  # fmt: skip
        self._pending.append(episode)
        if len(self._pending) >= self.episodes_per_file:
            self.flush()

    def flush(self) -> None:
        """Write buffered episodes as one data file, video file and episodes file, then commit."""
        if not self._pending:
            return
        if not (self.root / "meta" / "info.json").exists():
            self._write_info()  # the commit record exists before any data file does
        chunk, file = _chunk_file(self._files)
        episodes, self._pending = self._pending, []
        lengths = [ep.length for ep in episodes]
        total = sum(lengths)
        for ep in episodes:
            self._tasks.setdefault(ep.instruction, len(self._tasks))
        frame_index = np.concatenate([np.arange(n, dtype=np.int64) for n in lengths])
        episode_index = np.repeat(np.arange(self._episodes, self._episodes + len(episodes)), lengths)  # fmt: skip
        data = pa.table(
            {
                STATE_KEY: _fixed_list(
                    np.concatenate([ep.state for ep in episodes]).astype(np.float32), ACTION_DIM
                ),
                ACTION_KEY: _fixed_list(
                    np.concatenate([ep.action for ep in episodes]).astype(np.float32), ACTION_DIM
                ),
                MASK_KEY: _fixed_list(
                    np.concatenate([ep.hand_mask for ep in episodes]).astype(bool), 2
                ),
                "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
                "frame_index": pa.array(frame_index),
                "episode_index": pa.array(episode_index.astype(np.int64)),
                "index": pa.array(np.arange(self._frames, self._frames + total, dtype=np.int64)),
                "task_index": pa.array(
                    np.repeat([self._tasks[ep.instruction] for ep in episodes], lengths).astype(
                        np.int64
                    )
                ),
            }
        )
        digests: dict[str, dict] = {}
        data_rel = DATA_PATH.format(chunk_index=chunk, file_index=file)
        digests[data_rel] = _write_parquet(self.root / data_rel, data)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        starts = offsets / self.fps
        if self.image_shape is not None:
            frames = np.concatenate([ep.images["ego"] for ep in episodes])
            path = self.root / VIDEO_PATH.format(video_key=EGO_KEY, chunk_index=chunk, file_index=file)  # fmt: skip
            self._video_info = encode_video(path, frames, self.fps)
            digests[str(path.relative_to(self.root))] = file_digest(path)
        rows: dict[str, list] = {
            "episode_index": list(range(self._episodes, self._episodes + len(episodes))),
            "tasks": [[ep.instruction] for ep in episodes],
            "length": lengths,
            "data/chunk_index": [chunk] * len(episodes),
            "data/file_index": [file] * len(episodes),
            "dataset_from_index": [self._frames + int(o) for o in offsets],
            "dataset_to_index": [
                self._frames + int(o) + n for o, n in zip(offsets, lengths, strict=True)
            ],
            "meta/episodes/chunk_index": [chunk] * len(episodes),
            "meta/episodes/file_index": [file] * len(episodes),
            "subtasks": [
                [{"start": s.start, "end": s.end, "text": s.text} for s in ep.subtasks]
                for ep in episodes
            ],
            "metis/embodiment": [ep.embodiment or self.embodiment for ep in episodes],
            "metis/metadata": [json.dumps(_jsonable(ep.metadata)) for ep in episodes],
        }
        if self.image_shape is not None:
            rows[f"videos/{EGO_KEY}/chunk_index"] = [chunk] * len(episodes)
            rows[f"videos/{EGO_KEY}/file_index"] = [file] * len(episodes)
            rows[f"videos/{EGO_KEY}/from_timestamp"] = [float(s) for s in starts]
            rows[f"videos/{EGO_KEY}/to_timestamp"] = [float(s + n / self.fps) for s, n in zip(starts, lengths, strict=True)]  # fmt: skip
        schema_subtasks = pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string())]))  # fmt: skip
        arrays = {k: (pa.array(v, type=schema_subtasks) if k == "subtasks" else pa.array(v)) for k, v in rows.items()}  # fmt: skip
        episodes_rel = EPISODES_PATH.format(chunk_index=chunk, file_index=file)
        digests[episodes_rel] = _write_parquet(self.root / episodes_rel, pa.table(arrays))
        write_json(self.root / CHECKSUMS_PATH.format(chunk_index=chunk, file_index=file), digests)
        self._checksums["meta/tasks.parquet"] = _write_parquet(self.root / "meta" / "tasks.parquet", _tasks_table(self._tasks))  # fmt: skip
        self._complete = False
        self._episodes += len(episodes)
        self._frames += total
        self._files += 1
        self._write_info()

    def _write_info(self) -> None:
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": self._episodes,
            "total_frames": self._frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps if self.fps != int(self.fps) else int(self.fps),
            "splits": {"train": f"0:{self._episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.image_shape is not None else None,
            "features": _features(self.image_shape, self._video_info, self.record()),
        }
        # Note: the per-dataset integrity record sits at the top level, not in the features:
        # LeRobot's aggregate_datasets requires identical features across the datasets it joins.
        info[INTEGRITY_KEY] = {"checksums": dict(self._checksums)}
        info[INTEGRITY_KEY]["info_sha256"] = info_digest(info)
        write_json(self.root / "meta" / "info.json", info)

    def record(self) -> dict:
        """The METIS record written at ``features["observation.state"]["metis"]``."""
        return {
            "contract": HAND_CONTRACT.to_dict(),
            "contract_id": HAND_CONTRACT.id,
            "source": self.source,
            "embodiment": self.embodiment,
            "fps": self.fps,
            "camera_intrinsics": {"ego": self.intrinsics} if self.intrinsics is not None else {},
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "complete": self._complete,
            **({"shard": list(self.shard)} if self.shard is not None else {}),
        }

    def finalize(self, *, progress: bool = False) -> Path:
        """Flush, then compute and write ``meta/stats.json`` (masked by hand presence).

        Returns:
            The dataset root.
        """
        self.flush()
        if self._episodes == 0:
            self._write_info()
        dataset = LeRobotDataset(self.root, load_stats=False, allow_incomplete=True)
        write_json(self.root / "meta" / "stats.json", dataset.compute_stats(progress=progress))
        self._checksums["meta/stats.json"] = file_digest(self.root / "meta" / "stats.json")
        self._complete = True
        self._write_info()  # the dataset is whole from here on
        return self.root


def write_episodes(
    root: str | os.PathLike[str],
    episodes: Iterable[Episode],
    *,
    fps: float,
    source: str,
    embodiment: str,
    camera_intrinsics: np.ndarray | list | None = None,
    image_shape: tuple[int, int] | None = None,
    episodes_per_file: int = 50,
    total: int | None = None,
    progress: bool = True,
) -> Path:
    """Write (or resume writing) a whole dataset from an episode iterator.

    The first :attr:`LeRobotWriter.committed_episodes` episodes of ``episodes`` are skipped, so
    re-running a killed conversion with the same iterator continues where it stopped.

    Returns:
        The dataset root.
    """
    writer = LeRobotWriter(root, fps=fps, source=source, embodiment=embodiment, camera_intrinsics=camera_intrinsics, image_shape=image_shape, episodes_per_file=episodes_per_file)  # fmt: skip
    skip = writer.committed_episodes
    for number, episode in enumerate(tqdm(episodes, total=total, desc=f"writing {Path(root).name}", disable=not progress)):  # fmt: skip
        if number < skip:
            continue
        writer.add_episode(episode)
    return writer.finalize(progress=progress)


def integrity_record(info: Mapping[str, Any]) -> dict:
    """The writer's integrity record of a parsed ``meta/info.json``: ``{"checksums": {file:
    {sha256, bytes}}, "info_sha256": ...}`` at the top-level key ``metis_integrity`` (``{}`` when
    absent, e.g. after LeRobot's tools rewrote ``info.json``)."""
    record = info.get(INTEGRITY_KEY) if isinstance(info, Mapping) else None
    return dict(record) if isinstance(record, Mapping) else {}


def metis_record(info: Mapping[str, Any]) -> dict:
    """The METIS record of a parsed ``meta/info.json`` (``{}`` for datasets of others).

    Looks at ``features["observation.state"]["metis"]`` first (where the writer puts it), then at
    a top-level ``"metis"`` key (datasets written before the record moved into the features).
    """
    return _metis_record(info)


def norm_stats_from_json(entry: Mapping[str, Any]) -> NormStats:
    """A ``meta/stats.json`` feature entry as :class:`NormStats` (per-dimension ``valid_count``)."""
    return NormStats.from_dict({**entry, "count": entry.get("valid_count", entry.get("count"))})


def _tasks_table(tasks: Mapping[str, int]) -> pa.Table:
    """``meta/tasks.parquet``: column ``task_index`` indexed by the task text.

    LeRobot reads this file with pandas and looks tasks up through the DataFrame index, so the
    ``task`` column is declared as the pandas index in the schema metadata (what
    ``DataFrame.to_parquet`` would write) while staying a plain column for pyarrow readers.
    """
    unicode_index = {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}  # fmt: skip
    task_index_col = {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None}  # fmt: skip
    task_col = {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}  # fmt: skip
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [unicode_index],
        "columns": [task_index_col, task_col],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()), "task": pa.array(list(tasks), pa.string())})  # fmt: skip
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _fixed_list(values: np.ndarray, width: int) -> pa.Array:
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


_PARQUET_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError, EOFError, IndexError, OverflowError)  # fmt: skip


def _write_parquet(path: Path, table: pa.Table) -> dict:
    """Write a parquet file atomically with page checksums; return its digest."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, write_page_checksum=True)
    data = sink.getvalue().to_pybytes()
    with atomic_write(path) as handle:
        handle.write(data)
    return bytes_digest(data)


def _parse_parquet(path: Path, data: bytes, columns: list[str] | None = None) -> pa.Table:
    """Parse parquet bytes, verifying page checksums; raise :class:`CorruptFileError` naming ``path``."""
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns, page_checksum_verification=True)  # fmt: skip
    except KeyError as err:
        raise UnsupportedDatasetError(f"{path}: lacks column {err}") from err
    except _PARQUET_ERRORS as err:
        raise CorruptFileError(f"{path}: expected a parquet file, found an unreadable one ({type(err).__name__}: {err}); it is truncated or corrupt") from err  # fmt: skip


def _read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the dataset is incomplete")
    return _parse_parquet(path, path.read_bytes(), columns)


def _column_2d(table: pa.Table, name: str, width: int, path: Path, dtype: Any) -> np.ndarray:
    if name not in table.column_names:
        raise UnsupportedDatasetError(f"{path}: lacks column {name!r}")
    column = table.column(name).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type)):  # fmt: skip
        raise UnsupportedDatasetError(f"{path}: column {name!r} should hold lists of {width} values, found type {column.type}")  # fmt: skip
    if column.null_count:
        raise CorruptFileError(f"{path}: column {name!r} has {column.null_count} null row(s)")
    values = column.flatten().to_numpy(zero_copy_only=False)
    if values.size != len(table) * width:
        raise UnsupportedDatasetError(f"{path}: column {name!r} should hold {width} values per row, found {values.size / max(len(table), 1):g}")  # fmt: skip
    return values.reshape(len(table), width).astype(dtype, copy=False)


def _int(value: Any, path: Path, what: str, episode: Any = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        where = f"{path}: episode {episode}: " if episode is not None else f"{path}: "
        raise InvalidDatasetError(f"{where}{what} must be an integer, got {value!r}")
    return int(value)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


def _float(value: Any, path: Path, what: str, episode: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise InvalidDatasetError(f"{path}: episode {episode}: {what} must be a number, got {value!r}")  # fmt: skip
    return float(value)


class LeRobotDataset:
    """Reads a LeRobot v3.0 or v2.1 dataset into memory (tabular part) with lazy video decoding.

    METIS datasets carry the contract record; foreign datasets open too (their numeric features are
    available through :attr:`columns`), but asking for contract episodes from one whose state or
    action is not 48-D raises :class:`UnsupportedDatasetError`.

    Every open runs the checks of :mod:`metis_datasets.validation` (structure, indices, values,
    statistics, parquet page checksums and the content hashes of the data and episodes files);
    a video file's hash, frame rate and length are checked when it is first opened.

    Args:
        root: Dataset directory.
        load_stats: Read ``meta/stats.json`` if present.
        allow_incomplete: Open a METIS dataset whose conversion has not finished (its committed
            episodes only; :attr:`complete` is then False) instead of raising
            :class:`IncompleteDatasetError`.
        verify_checksums: Verify the recorded content hashes (data and episodes files on open,
            each video file when first opened). Parquet page checksums are always verified.

    Attributes:
        info: The parsed ``meta/info.json``.
        episodes: Per-episode records (dicts with ``episode_index``, ``length``, ``from``, ``to``,
            ``tasks``, ``subtasks``, ``metadata``, video location).
        state, action: ``(N, 48)`` float32 (contract datasets only).
        stats: Feature name → :class:`NormStats`.
        complete: False for a METIS dataset whose writer has not finalized it.

    Raises:
        FileNotFoundError: If ``meta/info.json`` or a referenced file is missing.
        CorruptFileError: For unreadable files, and (as :class:`InvalidDatasetError`) for wrong
            structure, indices, values, statistics or checksums; the message names the file and
            the episode.
        IncompleteDatasetError: For an unfinished METIS dataset (unless ``allow_incomplete``).
        ContractMismatchError: For a METIS dataset of another contract version.
        UnsupportedDatasetError: For other versions or unmappable features.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        load_stats: bool = True,
        allow_incomplete: bool = False,
        verify_checksums: bool = True,
    ) -> None:
        self._open(root, Sink(), load_stats=load_stats, allow_incomplete=allow_incomplete, verify_checksums=verify_checksums)  # fmt: skip

    @classmethod
    def _checked(cls, root: str | os.PathLike[str], sink: Sink) -> LeRobotDataset:
        """Open collecting problems in ``sink`` instead of raising (``metis-datasets check``)."""
        dataset = cls.__new__(cls)
        dataset._open(root, sink, load_stats=True, allow_incomplete=True, verify_checksums=True)
        return dataset

    def _open(self, root: str | os.PathLike[str], sink: Sink, *, load_stats: bool, allow_incomplete: bool, verify_checksums: bool) -> None:  # fmt: skip
        self.root = Path(root)
        self._sink = sink
        self._verify = verify_checksums
        self._files_hashed = 0
        self._videos: dict[tuple[str, str], VideoReader] = {}
        self._pid = os.getpid()
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            if self.root.is_dir() and any((self.root / d).exists() for d in ("data", "videos", "meta/episodes")):  # fmt: skip
                raise FileNotFoundError(f"{info_path} is missing but {self.root} holds dataset files: its commit record was lost; restore meta/info.json from a backup (the writer refuses to touch such a folder)")  # fmt: skip
            raise FileNotFoundError(f"{info_path} is missing: {self.root} is not a LeRobot dataset")  # fmt: skip
        check_no_pending_annotation(self.root, sink)
        self.info: dict = parse_info(
            read_metadata_json(info_path), info_path, error=InvalidDatasetError
        )
        self.version = str(self.info["codebase_version"])
        if self.version not in ("v3.0", "v2.1"):
            raise UnsupportedDatasetError(f"{self.root}: LeRobot codebase_version {self.version!r} is not supported; expected 'v3.0' or 'v2.1'")  # fmt: skip
        self.fps = float(self.info["fps"])
        self.features: dict = self.info["features"]
        self.metis: dict = metis_record(self.info)
        if self.metis:
            check_contract(self.metis.get("contract"), where=str(self.root))
        for key, feature in self.features.items():
            if feature["dtype"] not in (*_NUMERIC, "video", "image", "string"):
                sink(info_path, f"feature {key!r} has dtype {feature['dtype']!r}; expected one of {[*_NUMERIC, 'video', 'image', 'string']}")  # fmt: skip
        # file digests recorded at commit (METIS datasets written with checksums)
        self._digests: dict[str, tuple[dict, Path]] = {}
        # Digests are verified while info.json is the one METIS wrote (its own hash matches);
        # a dataset rewritten by LeRobot's tools (aggregate, delete_episodes) changes info.json
        # and the files, so only the structural, value and parquet page checks apply to it.
        self.integrity: dict = integrity_record(self.info)
        self._expect_digests = self.version == "v3.0" and isinstance(self.integrity.get("checksums"), dict) and self.integrity.get("info_sha256") in (None, info_digest(self.info))  # fmt: skip
        self.checksums_verified = bool(self._expect_digests and verify_checksums)
        if self._expect_digests:
            for path in sorted((self.root / "meta" / "metis_checksums").glob("chunk-*/file-*.json")):  # fmt: skip
                record = read_metadata_json(path)
                if not isinstance(record, dict):
                    sink(path, "expected a JSON object of file -> {sha256, bytes}", kind="checksum")
                    continue
                for rel, digest in record.items():
                    self._digests[rel] = (digest, path)
            for rel, digest in self.integrity["checksums"].items():
                self._digests[rel] = (digest, info_path)
        self._leftover_rows = 0
        if self.version == "v3.0":
            self.episodes = self._episodes_v30()
        else:
            self.episodes = self._episodes_v21()
        self.num_frames = int(sum(ep["length"] for ep in self.episodes))
        before = len(sink.problems)
        check_episode_records(self.episodes, self.info.get("total_frames"), self.fps, sink)
        self.complete = not self.metis or bool(self.metis.get("complete", (self.root / "meta" / "stats.json").exists()))  # fmt: skip
        self.complete = self.complete and self._leftover_rows == 0
        if not self.complete:
            message = (
                f"incomplete METIS dataset: its conversion committed {len(self.episodes)} episode(s) "
                f"({self.num_frames} frames) and has not finished (no final commit of meta/stats.json"
                f"{f'; {self._leftover_rows} episode row(s) of an interrupted flush lie past the commit record' if self._leftover_rows else ''}). "
                "Re-run the same conversion (metis-datasets convert, or the writer) to resume it, or open "
                "it with LeRobotDataset(root, allow_incomplete=True) to read the committed episodes"
            )
            if not allow_incomplete:
                raise IncompleteDatasetError(f"{self.root}: {message}")
            if sink.collect:
                sink(self.root, message, kind="incomplete")
        self.tasks = self._tasks()
        if len(sink.problems) > before:  # broken indices: reading frames would only add noise
            self.columns = {}
        else:
            self.columns = self._load_data()
        self.video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
        self.stats: dict[str, NormStats] = {}
        stats_path = self.root / "meta" / "stats.json"
        if load_stats and not stats_path.exists() and self._expect_digests and "meta/stats.json" in self._digests:  # fmt: skip
            sink(stats_path, "is missing but the commit record lists it (with its checksum); the statistics were deleted", kind="stats", error=FileNotFoundError)  # fmt: skip
        if load_stats and stats_path.exists():
            data = self._verified_bytes(stats_path)
            if data is not None:
                try:
                    raw = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise CorruptFileError(f"{stats_path} is not valid JSON ({err})") from err
                dims = None
                if not self.metis:  # a dataset of others: its own feature sizes
                    dims = {k: int((self.features.get(k, {}).get("shape") or [ACTION_DIM])[0]) for k in (STATE_KEY, ACTION_KEY)}  # fmt: skip
                sound = check_stats(raw, stats_path, (STATE_KEY, ACTION_KEY), sink, dims=dims)
                self.stats = {k: norm_stats_from_json(v) for k, v in sound.items()}
        starts = np.array([ep["from"] for ep in self.episodes], dtype=np.int64)
        self.episode_starts = starts
        self.episode_lengths = np.array([ep["length"] for ep in self.episodes], dtype=np.int64)
        self.frame_episode = np.repeat(np.arange(len(self.episodes)), np.maximum(self.episode_lengths, 0))  # fmt: skip
        self._video_checked: set[str] = set()

    def _verified_bytes(self, path: Path) -> bytes | None:
        """Read a file and check it against its recorded digest (if the dataset records one).

        Returns None (collecting problems only) when the content does not match.
        """
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing but committed episodes refer to it; the dataset is incomplete or damaged")  # fmt: skip
        data = path.read_bytes()
        rel = path.relative_to(self.root).as_posix()
        if self._verify and self._expect_digests and rel in self._digests:
            digest, recorded_in = self._digests[rel]
            self._files_hashed += 1
            if not verify_digest(path, data, digest, self._sink, recorded_in=recorded_in):
                return None
        elif self._verify and self._expect_digests and rel.startswith(("data/", "meta/episodes/")):
            self._sink(path, "no checksum is recorded for this committed file in meta/metis_checksums; it was not written by this dataset's writer", kind="checksum")  # fmt: skip
        return data

    # -- metadata ---------------------------------------------------------------------------

    @property
    def source(self) -> str:
        """Source name (``metis.source``; for foreign data, ``robot_type`` or the folder name)."""
        return self.metis.get("source") or self.info.get("robot_type") or self.root.name

    @property
    def embodiment(self) -> str:
        """Hand embodiment name, or ``""`` if unknown."""
        return self.metis.get("embodiment", "")

    @property
    def camera_intrinsics(self) -> np.ndarray | None:
        """``(3, 3)`` K of the ego camera, if recorded."""
        k = (self.metis.get("camera_intrinsics") or {}).get("ego")
        return None if k is None else np.asarray(k, dtype=np.float64)

    @property
    def is_contract(self) -> bool:
        """Whether state and action are 48-D contract vectors."""
        return STATE_KEY in self.columns and ACTION_KEY in self.columns and self.columns[STATE_KEY].shape[1] == ACTION_DIM  # fmt: skip

    def _episodes_v30(self) -> list[dict]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        total = int(self.info["total_episodes"])
        if not files and total:
            raise FileNotFoundError(f"{self.root}/meta/episodes has no episodes files but info.json commits {total} episodes")  # fmt: skip
        need = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]  # fmt: skip
        records: list[dict] = []
        damaged = False
        for path in files:
            rel = path.relative_to(self.root).as_posix()
            data = path.read_bytes()
            recorded = self._verify and self._expect_digests and rel in self._digests
            if recorded:
                self._files_hashed += 1
                digest, recorded_in = self._digests[rel]
                if not verify_digest(path, data, digest, self._sink, recorded_in=recorded_in):
                    damaged = True  # (collecting) a damaged file's rows are not trusted
                    continue
            table = _parse_parquet(path, data)
            lacking = [c for c in need if c not in table.column_names]
            if lacking:
                raise UnsupportedDatasetError(f"{path}: lacks episodes columns {lacking}")
            try:
                rows = table.to_pylist()
            except _PARQUET_ERRORS as err:
                raise CorruptFileError(f"{path}: cannot decode its rows ({type(err).__name__}: {err}); the file is corrupt") from err  # fmt: skip
            for row in rows:
                _int(row["episode_index"], path, "episode_index")
            committed, leftover = committed_rows(rows, total)
            self._leftover_rows += leftover
            if committed and self._verify and self._expect_digests and not recorded:
                self._sink(path, "no checksum is recorded for this committed episodes file in meta/metis_checksums", kind="checksum")  # fmt: skip
            records += [self._episode_record(row, path) for row in committed]
        if damaged:
            raise StopChecking
        records.sort(key=lambda r: r["episode_index"])
        if len(records) != total:
            self._sink(self.root / "meta" / "info.json", f"info.json records {total} episodes, the episodes files hold {len(records)}", kind="index", error=CorruptFileError)  # fmt: skip
        return records

    def _episode_record(self, row: dict, path: Path) -> dict:
        index = int(row["episode_index"])
        length = _int(row["length"], path, "length", index)
        chunk = _int(row["data/chunk_index"], path, "data/chunk_index", index)
        file = _int(row["data/file_index"], path, "data/file_index", index)
        try:
            data_file = self.root / self.info["data_path"].format(
                chunk_index=chunk, file_index=file
            )
        except (KeyError, IndexError, ValueError) as err:
            raise InvalidDatasetError(f"{self.root}/meta/info.json: data_path {self.info['data_path']!r} is not a template of chunk_index and file_index ({err})") from err  # fmt: skip
        tasks = row.get("tasks") or []
        if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise InvalidDatasetError(f"{path}: episode {index}: tasks must be a list of strings, got {tasks!r}")  # fmt: skip
        subtasks = []
        for s in row.get("subtasks") or []:
            if not isinstance(s, dict) or not isinstance(s.get("text"), str):
                raise InvalidDatasetError(f"{path}: episode {index}: subtask {s!r} must be {{start, end, text}}")  # fmt: skip
            start, end = _int(s.get("start"), path, "subtask start", index), _int(s.get("end"), path, "subtask end", index)  # fmt: skip
            try:
                subtasks.append(Subtask(start, end, s["text"]))
            except ValueError as err:
                raise InvalidDatasetError(f"{path}: episode {index}: subtask {s!r} is malformed ({err})") from err  # fmt: skip
        try:
            metadata = json.loads(row.get("metis/metadata") or "{}")
        except (json.JSONDecodeError, TypeError) as err:
            raise InvalidDatasetError(f"{path}: episode {index}: column 'metis/metadata' is not valid JSON ({err})") from err  # fmt: skip
        if not isinstance(metadata, dict):
            raise InvalidDatasetError(f"{path}: episode {index}: column 'metis/metadata' must hold a JSON object, got {type(metadata).__name__}")  # fmt: skip
        embodiment = row.get("metis/embodiment") or self.embodiment
        if not isinstance(embodiment, str):
            raise InvalidDatasetError(f"{path}: episode {index}: metis/embodiment must be a string, got {embodiment!r}")  # fmt: skip
        record = {
            "episode_index": index,
            "length": length,
            "data_file": data_file,
            "from": _int(row["dataset_from_index"], path, "dataset_from_index", index),
            "to": _int(row["dataset_to_index"], path, "dataset_to_index", index),
            "tasks": list(tasks),
            "subtasks": subtasks,
            "metadata": metadata,
            "embodiment": embodiment,
            "videos": {},
            "source_file": path,
        }
        for key, feature in self.features.items():
            if feature.get("dtype") == "video" and f"videos/{key}/chunk_index" in row:
                v_chunk = _int(row[f"videos/{key}/chunk_index"], path, f"videos/{key}/chunk_index", index)  # fmt: skip
                v_file = _int(row[f"videos/{key}/file_index"], path, f"videos/{key}/file_index", index)  # fmt: skip
                start = _float(row.get(f"videos/{key}/from_timestamp"), path, f"videos/{key}/from_timestamp", index)  # fmt: skip
                end = row.get(f"videos/{key}/to_timestamp")
                end = start + length / self.fps if end is None else _float(end, path, f"videos/{key}/to_timestamp", index)  # fmt: skip
                try:
                    path_v = self.root / self.info["video_path"].format(video_key=key, chunk_index=v_chunk, file_index=v_file)  # fmt: skip
                except (KeyError, IndexError, ValueError, AttributeError) as err:
                    raise InvalidDatasetError(f"{self.root}/meta/info.json: video_path {self.info.get('video_path')!r} is not a template of video_key, chunk_index and file_index ({err})") from err  # fmt: skip
                record["videos"][key] = (path_v, start, end)
        return record

    def _episodes_v21(self) -> list[dict]:
        path = self.root / "meta" / "episodes.jsonl"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing (LeRobot v2.1 layout)")
        records, offset = [], 0
        chunks_size = int(self.info.get("chunks_size", CHUNKS_SIZE))
        lines = []
        with path.open(encoding="utf-8", errors="strict") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise CorruptFileError(f"{path}: line {number} is not valid JSON ({err.msg})") from err  # fmt: skip
        for row in lines:
            if not isinstance(row, dict) or "episode_index" not in row or "length" not in row:
                raise InvalidDatasetError(f"{path}: expected objects with episode_index and length, got {_short_repr(row)}")  # fmt: skip
        for row in sorted(lines, key=lambda r: _int(r["episode_index"], path, "episode_index")):
            index, length = int(row["episode_index"]), _int(row["length"], path, "length", row["episode_index"])  # fmt: skip
            chunk = index // chunks_size
            record = {
                "episode_index": index,
                "length": length,
                "data_file": self.root
                / self.info["data_path"].format(episode_chunk=chunk, episode_index=index),
                "from": offset,
                "to": offset + length,
                "tasks": list(row.get("tasks") or []),
                "subtasks": [],
                "metadata": {},
                "embodiment": self.embodiment,
                "videos": {},
                "source_file": path,
            }
            for key, feature in self.features.items():
                if feature.get("dtype") == "video":
                    record["videos"][key] = (self.root / self.info["video_path"].format(episode_chunk=chunk, video_key=key, episode_index=index), 0.0, length / self.fps)  # fmt: skip
            records.append(record)
            offset += length
        if len(records) != int(self.info["total_episodes"]):
            self._sink(path, f"holds {len(records)} episodes, info.json total_episodes says {self.info['total_episodes']}", kind="index", error=CorruptFileError)  # fmt: skip
        return records

    def _tasks(self) -> dict[int, str]:
        if self.version == "v3.0":
            path = self.root / "meta" / "tasks.parquet"
            data = self._verified_bytes(path)
            if data is None:
                return {}
            table = _parse_parquet(path, data)
            names = table.column_names
            text_col = "task" if "task" in names else next((c for c in names if c.startswith("__index_level")), None)  # fmt: skip
            if text_col is None or "task_index" not in names:
                raise UnsupportedDatasetError(f"{path}: expected columns 'task' (or the index) and 'task_index', got {names}")  # fmt: skip
            try:
                indices, texts = table.column("task_index").to_pylist(), table.column(text_col).to_pylist()  # fmt: skip
            except _PARQUET_ERRORS as err:
                raise CorruptFileError(f"{path}: cannot decode its rows ({type(err).__name__}: {err})") from err  # fmt: skip
        else:
            path = self.root / "meta" / "tasks.jsonl"
            try:
                with path.open(encoding="utf-8") as handle:
                    rows = [json.loads(line) for line in handle if line.strip()]
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CorruptFileError(f"{path}: not valid JSON lines ({err})") from err
            if not all(isinstance(r, dict) and "task_index" in r and "task" in r for r in rows):
                raise InvalidDatasetError(f"{path}: expected objects with task_index and task")
            indices, texts = [r["task_index"] for r in rows], [r["task"] for r in rows]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices) or len(set(indices)) != len(indices):  # fmt: skip
            raise InvalidDatasetError(f"{path}: task_index must hold distinct integers, got {indices[:10]}")  # fmt: skip
        if not all(isinstance(t, str) for t in texts):
            raise InvalidDatasetError(f"{path}: task texts must be strings")
        return dict(zip(indices, texts, strict=True))

    def _load_data(self) -> dict[str, np.ndarray]:
        sink = self._sink
        info_path = self.root / "meta" / "info.json"
        numeric = {k: f for k, f in self.features.items() if f.get("dtype") in _NUMERIC}
        if self.metis and MASK_KEY not in numeric:
            sink(info_path, f"feature {MASK_KEY!r} is missing; every METIS dataset stores the hand mask (it is never invented from values)", kind="values")  # fmt: skip
        by_file: dict[Path, int] = {}
        for ep in self.episodes:
            by_file[ep["data_file"]] = by_file.get(ep["data_file"], 0) + ep["length"]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in numeric}
        self._row_files: list[tuple[Path, int]] = []
        for path, expected in by_file.items():
            data = self._verified_bytes(path)
            if data is None:
                return {}
            table = _parse_parquet(path, data)
            if table.num_rows != expected:
                sink(path, f"holds {table.num_rows} frames, the committed episodes stored in it have {expected}", kind="index", error=CorruptFileError)  # fmt: skip
                return {}
            self._row_files.append((path, expected))
            for key, feature in numeric.items():
                width = int(np.prod(feature.get("shape") or [1]))
                if key not in table.column_names:
                    raise UnsupportedDatasetError(f"{path}: lacks feature column {key!r} declared in info.json")  # fmt: skip
                kind = table.schema.field(key).type
                dtype = None if key == MASK_KEY else np.dtype(feature["dtype"])
                if key == MASK_KEY and getattr(kind, "value_type", kind) != pa.bool_():
                    sink(path, f"column {key!r} has type {kind}, expected lists of 2 bools", kind="values")  # fmt: skip
                if width == 1 and not (pa.types.is_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_large_list(kind)):  # fmt: skip
                    column = table.column(key).combine_chunks()
                    if column.null_count:
                        raise CorruptFileError(f"{path}: column {key!r} has {column.null_count} null row(s)")  # fmt: skip
                    try:
                        values = column.to_numpy(zero_copy_only=False).reshape(-1, 1)
                    except _PARQUET_ERRORS as err:
                        raise CorruptFileError(f"{path}: cannot decode column {key!r} ({err})") from err  # fmt: skip
                    parts[key].append(values.astype(dtype, copy=False) if dtype is not None else values)  # fmt: skip
                else:
                    parts[key].append(_column_2d(table, key, width, path, dtype))
        columns = {k: np.concatenate(v) if v else np.zeros((0, 1)) for k, v in parts.items()}
        total = sum(ep["length"] for ep in self.episodes)
        for key, values in columns.items():
            if values.shape[0] != total:
                raise CorruptFileError(f"{self.root}: feature {key!r} has {values.shape[0]} frames, the episodes metadata {total}")  # fmt: skip
        check_frame_table(columns, self.episodes, self._row_files, self.tasks, sink)
        if self.metis:
            check_values(columns, self.episodes, self._file_of_row, sink, state_key=STATE_KEY, action_key=ACTION_KEY, mask_key=MASK_KEY)  # fmt: skip
        if MASK_KEY in columns:
            columns[MASK_KEY] = columns[MASK_KEY].astype(bool)
        elif STATE_KEY in columns and not self.metis:
            columns[MASK_KEY] = np.ones((total, 2), dtype=bool)  # data of others: no mask stored
        return columns

    def _file_of_row(self, row: int) -> Path:
        start = 0
        for path, rows in self._row_files:
            if row < start + rows:
                return path
            start += rows
        return self.root

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.num_frames

    def require_contract(self) -> None:
        """Raise :class:`UnsupportedDatasetError` unless state and action are contract vectors."""
        if self.is_contract:
            return
        shapes = {k: self.features.get(k, {}).get("shape") for k in (STATE_KEY, ACTION_KEY)}
        raise UnsupportedDatasetError(
            f"{self.root}: cannot map to the {HAND_CONTRACT.id} contract: expected features "
            f"{STATE_KEY!r} and {ACTION_KEY!r} of shape [48], found {shapes}. Convert it with the "
            "embodiment's forward kinematics (metis_embodiments) into a METIS dataset first."
        )

    @property
    def state(self) -> np.ndarray:
        """``(N, 48)`` float32 state of every frame."""
        self.require_contract()
        return self.columns[STATE_KEY]

    @property
    def action(self) -> np.ndarray:
        """``(N, 48)`` float32 action of every frame."""
        self.require_contract()
        return self.columns[ACTION_KEY]

    @property
    def hand_mask(self) -> np.ndarray:
        """``(N, 2)`` bool presence of every frame."""
        return self.columns[MASK_KEY].astype(bool, copy=False)

    def instruction(self, episode: int) -> str:
        """Language instruction of one episode."""
        record = self.episodes[episode]
        if record["tasks"]:
            return record["tasks"][0]
        task_index = int(self.columns["task_index"][record["from"], 0]) if "task_index" in self.columns else -1  # fmt: skip
        return self.tasks.get(task_index, "")

    def frames(
        self,
        episode: int,
        frame_indices: np.ndarray | list[int],
        key: str = EGO_KEY,
        *,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Decode video frames of one episode.

        Args:
            episode: Episode position.
            frame_indices: ``(K,)`` frame numbers within the episode.
            key: Video feature.
            size: ``(height, width)`` to scale to while decoding, or None for the stored size.

        Returns:
            ``(K, H, W, 3)`` uint8.

        Raises:
            KeyError: If the episode has no such video.
            CorruptFileError: If the video is unreadable or lacks the frames.
        """
        record = self.episodes[episode]
        if key not in record["videos"]:
            raise KeyError(f"{self.root}: episode {episode} has no video {key!r}; available {list(record['videos'])}")  # fmt: skip
        return self.video_reader(episode, key).frames_at(
            record["videos"][key][1] + np.asarray(frame_indices, dtype=np.float64) / self.fps,
            tolerance_s=0.5 / self.fps,
            size=size,
        )

    def video_reader(self, episode: int, key: str = EGO_KEY) -> VideoReader:
        """The (cached, per-process) :class:`VideoReader` of the file holding an episode's video."""
        path = self.episodes[episode]["videos"][key][0]
        if os.getpid() != self._pid:  # forked dataloader worker: never share decoder state
            self._videos, self._pid = {}, os.getpid()
        reader = self._videos.get((key, str(path)))
        if reader is None:
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing but episode {self.episodes[episode]['episode_index']} refers to it")  # fmt: skip
            if self._verify and str(path) not in self._video_checked:
                self._check_video_digest(path, self._sink)
            reader = VideoReader(path)
            try:
                self._check_video(reader, key, self._sink)
            except BaseException:
                reader.close()
                raise
            self._video_checked.add(str(path))
            self._videos[(key, str(path))] = reader
        return reader

    def _check_video_digest(self, path: Path, sink: Sink) -> None:
        rel = path.relative_to(self.root).as_posix()
        if self._expect_digests and rel in self._digests:
            digest, recorded_in = self._digests[rel]
            self._files_hashed += 1
            verify_digest(path, None, digest, sink, recorded_in=recorded_in)
        elif self._expect_digests:
            sink(path, "no checksum is recorded for this committed video in meta/metis_checksums", kind="checksum")  # fmt: skip

    def _check_video(self, reader: VideoReader, key: str, sink: Sink) -> None:
        """The stream's frame rate equals info.json's, and it is long enough for its episodes."""
        rate = reader.rate
        if rate is not None and abs(rate - self.fps) > 1e-3 * self.fps:
            sink(reader.path, f"the video runs at {rate:g} fps but meta/info.json says {self.fps:g} fps; timestamps would pick the wrong frames", kind="video")  # fmt: skip
        frames = reader.frame_count
        users = [ep for ep in self.episodes if key in ep["videos"] and ep["videos"][key][0] == reader.path]  # fmt: skip
        if frames and users:
            needed = max(round(ep["videos"][key][1] * self.fps) + ep["length"] for ep in users)
            if frames < needed:
                last = max(users, key=lambda ep: ep["videos"][key][2])
                sink(reader.path, f"holds {frames} frames but episode {last['episode_index']} needs frames up to {needed} (from its from_timestamp and length); the video is truncated or its episode indices point elsewhere", episode=last["episode_index"], kind="video")  # fmt: skip

    def _check_extra(self, sink: Sink, *, deep: bool, report: Any) -> None:
        """The checks of ``metis-datasets check`` beyond an open's: info digest, every video, strays."""
        info_path = self.root / "meta" / "info.json"
        recorded = self.integrity.get("info_sha256")
        if recorded is not None and recorded != info_digest(self.info):
            sink(info_path, "content does not match the info_sha256 recorded in it when it was written: it was edited or damaged afterwards", kind="checksum")  # fmt: skip
        referenced: set[str] = set()
        for ep in self.episodes:
            referenced.add(ep["data_file"].relative_to(self.root).as_posix())
            referenced.add(ep["source_file"].relative_to(self.root).as_posix())
            for path, _, _ in ep["videos"].values():
                referenced.add(path.relative_to(self.root).as_posix())
        for folder in ("data", "videos", "meta/episodes"):
            base = self.root / folder
            for path in sorted(base.rglob("*")) if base.is_dir() else []:
                rel = path.relative_to(self.root).as_posix()
                if path.is_file() and rel not in referenced:
                    sink(path, "no committed episode refers to this file (a leftover of an interrupted run, or a stray copy); the writer deletes leftovers when it resumes", kind="incomplete")  # fmt: skip
        if not self.columns and self.episodes:
            return  # the structure is broken; the videos cannot be matched to episodes
        for key in self.video_keys:
            files: dict[Path, list[dict]] = {}
            for ep in self.episodes:
                if key in ep["videos"]:
                    files.setdefault(ep["videos"][key][0], []).append(ep)
            for path, users in files.items():
                if not path.exists():
                    sink(path, f"is missing but {len(users)} committed episode(s) refer to it", episode=users[0]["episode_index"], kind="video")  # fmt: skip
                    continue
                self._check_video_digest(path, sink)
                try:
                    reader = VideoReader(path)
                except CorruptFileError as err:
                    sink(path, str(err), kind="video")
                    continue
                try:
                    self._check_video(reader, key, sink)
                    if deep:
                        times = reader.all_frame_times()
                        report.frames_decoded += len(times)
                        for ep in users:
                            _, start, end = ep["videos"][key]
                            inside = int(((times >= start - 0.5 / self.fps) & (times < end - 0.5 / self.fps)).sum())  # fmt: skip
                            if inside != ep["length"]:
                                sink(path, f"decodes {inside} frames in [{start:.4f}, {end:.4f}) s, the episode has {ep['length']}", episode=ep["episode_index"], kind="video")  # fmt: skip
                except CorruptFileError as err:
                    sink(path, str(err), kind="video")
                finally:
                    reader.close()

    def video_decode_stats(self) -> dict[str, int]:
        """Frames decoded, seeks and cache hits of this process's video readers, summed.

        Benchmarks use it to show that every sample really decodes its frame.
        """
        totals = {"decoded": 0, "seeks": 0, "cache_hits": 0}
        for reader in self._videos.values():
            for key in totals:
                totals[key] += reader.stats[key]
        return totals

    def episode(self, index: int, *, with_images: bool = True) -> Episode:
        """Rebuild one episode in the contract.

        Raises:
            UnsupportedDatasetError: For datasets whose features are not contract vectors.
        """
        self.require_contract()
        record = self.episodes[index]
        rows = slice(record["from"], record["to"])
        images = {}
        if with_images and EGO_KEY in record["videos"]:
            images["ego"] = self.frames(index, np.arange(record["length"]))
        return Episode(
            state=self.columns[STATE_KEY][rows].astype(np.float32),
            action=self.columns[ACTION_KEY][rows].astype(np.float32),
            hand_mask=self.hand_mask[rows].copy(),
            fps=self.fps,
            instruction=self.instruction(index),
            subtasks=list(record["subtasks"]),
            images=images,
            source=self.source,
            embodiment=record["embodiment"],
            metadata=dict(record["metadata"]),
        )

    def compute_stats(self, *, progress: bool = False) -> dict[str, dict]:
        """Statistics of state and action masked by hand presence, in ``meta/stats.json`` form.

        Each feature gets ``mean, std, min, max, q01, q99`` ``(48,)`` over the frames where the
        value's hand is present, ``valid_count`` ``(48,)`` (how many such frames) and LeRobot's
        ``count`` ``(1,)`` (all frames; LeRobot requires this shape when it aggregates stats).
        """
        out: dict[str, dict] = {}
        if not self.is_contract or self.num_frames == 0:
            return out
        valid = hand_value_mask(self.hand_mask).numpy()
        for key in tqdm((STATE_KEY, ACTION_KEY), desc="stats", disable=not progress):
            stats = compute_stats(self.columns[key], valid).to_dict()
            stats["valid_count"] = stats.pop("count")
            stats["count"] = [self.num_frames]
            out[key] = stats
        return out

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_videos"] = {}
        return state
