"""The one validation layer of METIS LeRobot datasets: what the reader always checks, and more.

:class:`~metis_datasets.lerobot_format.LeRobotDataset` runs these checks every time it opens a
dataset (raising at the first problem), and ``metis-datasets check DIR [--deep]``
(:func:`check_dataset`) runs the same code collecting every problem, plus the checks too costly to
repeat on every open (the content hash of every file, files nothing refers to, and with ``deep``
every video frame decoded and counted).

What is checked:

* ``meta/info.json`` (:func:`metis_core.lerobot_rules.parse_info`): types and ranges of every
  field the reader uses; the contract record's version as an integer;
* the episodes metadata: indices ``0..N-1`` once each, lengths, ``dataset_from_index`` /
  ``dataset_to_index`` contiguous and inside ``total_frames``, video spans inside their file and
  not overlapping another episode's, subtasks inside the episode, the metadata JSON;
* the frame table: ``index``, ``episode_index`` and ``frame_index`` columns equal to what the
  episodes metadata says, row counts per file, task indices known;
* values (METIS datasets): finite state and action, a stored ``observation.hand_mask``, zeros
  for a missing hand, a valid 6D rotation for a present one;
* ``meta/stats.json``: finite numbers, 48 per statistic, non-negative ``std``;
* checksums: parquet page checksums on every read, and the SHA-256 of every data, episodes and
  video file recorded at commit in ``meta/metis_checksums/chunk-C/file-F.json`` (data and
  episodes files verified on every open, a video when the reader first opens it, all of them by
  ``check``); ``info.json`` and ``stats.json`` hashes sit in the METIS record.

Every problem names the file, the episode where there is one, and what is wrong.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from metis_core.contract import ACTION_DIM, LEFT, RIGHT, describe_index
from metis_core.lerobot_rules import DatasetFormatError

__all__ = [
    "ANNOTATION_JOURNAL",
    "ANNOTATION_STAGING",
    "CHECKSUMS_PATH",
    "CheckReport",
    "IncompleteDatasetError",
    "InvalidDatasetError",
    "Problem",
    "check_dataset",
    "file_digest",
    "info_digest",
]

#: Per-commit checksum records, one per flushed file number.
CHECKSUMS_PATH = "meta/metis_checksums/chunk-{chunk_index:03d}/file-{file_index:03d}.json"
#: Staging folder of an annotation pass (``metis_datasets.annotation``) inside a dataset.
ANNOTATION_STAGING = ".metis_annotate"
#: Its commit journal; while it exists the data files may be half replaced.
ANNOTATION_JOURNAL = ".metis_annotate/commit.json"
_STAT_KEYS = ("mean", "std", "min", "max")


class UnsupportedDatasetError(ValueError):
    """A LeRobot dataset (or a file in it) that METIS cannot read or map to the hand contract."""


class InvalidDatasetError(DatasetFormatError, UnsupportedDatasetError):
    """A dataset file whose structure, indices, values or checksum are wrong (named in the message)."""


class IncompleteDatasetError(InvalidDatasetError):
    """A METIS dataset whose conversion has not finished (resume it, or open with allow_incomplete)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset.

    Args:
        path: The file (or the dataset root) concerned.
        message: What is wrong, and what was expected.
        episode: Episode index, where the problem belongs to one.
        kind: ``structure``, ``index``, ``values``, ``stats``, ``checksum``, ``video``,
            ``incomplete`` or ``unreadable``.
    """

    path: str
    message: str
    episode: int | None = None
    kind: str = "structure"

    def __str__(self) -> str:
        where = f"{self.path}: episode {self.episode}: " if self.episode is not None else f"{self.path}: "  # fmt: skip
        return where + self.message


@dataclass
class CheckReport:
    """What ``metis-datasets check`` found.

    Args:
        root: Dataset root.
        problems: Every problem found (empty when the dataset is sound).
        episodes: Committed episodes.
        frames: Committed frames.
        files_hashed: Files whose content hash was verified.
        frames_decoded: Video frames decoded (``deep`` only).
        complete: Whether the dataset's writer finished it.
    """

    root: Path
    problems: list[Problem] = field(default_factory=list)
    episodes: int = 0
    frames: int = 0
    files_hashed: int = 0
    frames_decoded: int = 0
    complete: bool = True

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def summary(self) -> str:
        """One line per problem, then a verdict line."""
        lines = [f"  [{p.kind}] {p}" for p in self.problems]
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        lines.append(f"{self.root}: {verdict} ({self.episodes} episodes, {self.frames} frames, {self.files_hashed} files hashed, {self.frames_decoded} frames decoded)")  # fmt: skip
        return "\n".join(lines)


class StopChecking(Exception):  # noqa: N818 - a signal: the problem is already recorded
    """Raised (collecting) when a damaged file makes every later check meaningless."""


class Sink:
    """Where checks report problems: raise at the first one (the reader) or collect (``check``)."""

    def __init__(self, collect: bool = False) -> None:
        self.collect = collect
        self.problems: list[Problem] = []

    def __call__(self, path: Any, message: str, *, episode: int | None = None, kind: str = "structure", error: type[Exception] = InvalidDatasetError) -> None:  # fmt: skip
        problem = Problem(str(path), message, episode, kind)
        if not self.collect:
            raise error(str(problem))
        self.problems.append(problem)


def check_no_pending_annotation(root: Path, sink: Sink) -> None:
    """Refuse a dataset whose annotation pass was killed while committing (journal present)."""
    journal = Path(root) / ANNOTATION_JOURNAL
    if journal.exists():
        sink(journal, "an annotation pass (metis annotate) was interrupted while committing: the data files may be half replaced. Re-run the same `metis annotate DATASET ...` command to finish the commit before reading the dataset", kind="incomplete", error=IncompleteDatasetError)  # fmt: skip
        raise StopChecking


# -- checksums ----------------------------------------------------------------------------------


def file_digest(path: Path) -> dict:
    """``{"sha256": hex, "bytes": size}`` of a file's content."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
            size += len(block)
    return {"sha256": digest.hexdigest(), "bytes": size}


def bytes_digest(data: bytes) -> dict:
    """:func:`file_digest` of bytes already in memory."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def info_digest(info: Mapping[str, Any]) -> str:
    """SHA-256 of an ``info.json`` document's content, without the digest's own field."""
    document = json.loads(json.dumps(info))
    record = document.get("metis_integrity")
    if isinstance(record, dict):
        record.pop("info_sha256", None)
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()  # fmt: skip


def verify_digest(path: Path, data: bytes | None, expected: Any, sink: Sink, *, recorded_in: Any) -> bool:  # fmt: skip
    """Compare a file's content with its recorded digest; report a mismatch. Returns True if equal."""
    if not isinstance(expected, Mapping) or not isinstance(expected.get("sha256"), str):
        sink(path, f"no valid checksum recorded for it in {recorded_in} (found {expected!r})", kind="checksum")  # fmt: skip
        return False
    found = bytes_digest(data) if data is not None else file_digest(path)
    if found["bytes"] != expected.get("bytes") or found["sha256"] != expected["sha256"]:
        sink(path, f"content does not match the checksum recorded at commit in {recorded_in} (expected {expected.get('bytes')} bytes sha256 {expected['sha256'][:16]}..., found {found['bytes']} bytes sha256 {found['sha256'][:16]}...): the file was damaged or changed after it was written", kind="checksum")  # fmt: skip
        return False
    return True


# -- statistics ---------------------------------------------------------------------------------


def check_stats(
    raw: Any, path: Path, keys: Iterable[str], sink: Sink, *, dims: Mapping[str, int] | None = None
) -> dict[str, dict]:
    """Check ``meta/stats.json`` entries of the contract features; return the sound ones.

    Each of ``keys`` present must hold ``mean``, ``std``, ``min``, ``max`` of finite numbers, one
    per dimension (``std`` non-negative, ``min <= max``): 48 for contract datasets, or what
    ``dims`` says per key (the feature's shape in a dataset of others, e.g. a 7-D arm).
    """
    out: dict[str, dict] = {}
    if not isinstance(raw, dict):
        sink(path, f"expected a JSON object of per-feature statistics, got {type(raw).__name__}", kind="stats")  # fmt: skip
        return out
    for key in keys:
        if key not in raw:
            continue
        entry = raw[key]
        if not isinstance(entry, dict):
            sink(path, f"statistics of {key!r} must be an object, got {type(entry).__name__}", kind="stats")  # fmt: skip
            continue
        lacking = [k for k in _STAT_KEYS if k not in entry]
        if lacking:
            sink(path, f"statistics of {key!r} lack {lacking}; expected {list(_STAT_KEYS)}", kind="stats")  # fmt: skip
            continue
        arrays: dict[str, np.ndarray] = {}
        sound = True
        for name in (*_STAT_KEYS, "q01", "q99", "valid_count"):
            if name not in entry:
                continue
            values = entry[name]
            dim = ACTION_DIM if dims is None else int(dims.get(key, ACTION_DIM))
            if not isinstance(values, list) or len(values) != dim or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):  # fmt: skip
                sink(path, f"{key}.{name} must be a list of {dim} numbers, got {_short(values)}", kind="stats")  # fmt: skip
                sound = False
                continue
            array = np.asarray(values, dtype=np.float64)
            if not np.isfinite(array).all():
                bad = int(np.flatnonzero(~np.isfinite(array))[0])
                sink(path, f"{key}.{name}[{bad}] ({describe_index(bad)}) is {array[bad]}; statistics must be finite", kind="stats")  # fmt: skip
                sound = False
            arrays[name] = array
        if "std" in arrays and (arrays["std"] < 0).any():
            bad = int(np.flatnonzero(arrays["std"] < 0)[0])
            sink(path, f"{key}.std[{bad}] ({describe_index(bad)}) is {arrays['std'][bad]}; a standard deviation cannot be negative", kind="stats")  # fmt: skip
            sound = False
        if "min" in arrays and "max" in arrays and (arrays["min"] > arrays["max"]).any():
            bad = int(np.flatnonzero(arrays["min"] > arrays["max"])[0])
            sink(path, f"{key}.min[{bad}] > max[{bad}] ({arrays['min'][bad]} > {arrays['max'][bad]})", kind="stats")  # fmt: skip
            sound = False
        if sound and "min" in arrays and "max" in arrays:
            low, high = arrays["min"], arrays["max"]
            slack = 1e-5 * np.maximum(1.0, np.abs(high - low))
            for name in ("mean", "q01", "q99"):
                if name in arrays and ((arrays[name] < low - slack) | (arrays[name] > high + slack)).any():  # fmt: skip
                    bad = int(np.flatnonzero((arrays[name] < low - slack) | (arrays[name] > high + slack))[0])  # fmt: skip
                    sink(path, f"{key}.{name}[{bad}] ({describe_index(bad)}) is {arrays[name][bad]}, outside [min, max] = [{low[bad]}, {high[bad]}]", kind="stats")  # fmt: skip
                    sound = False
        if sound:
            out[key] = entry
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


# -- episodes metadata --------------------------------------------------------------------------


def check_episode_records(records: list[dict], total_frames: int | None, fps: float, sink: Sink) -> None:  # fmt: skip
    """Structural checks of the committed episodes (cheap; every open runs them).

    ``records`` are the reader's per-episode dicts (``episode_index``, ``length``, ``from``,
    ``to``, ``subtasks``, ``videos``, ``source_file``), sorted by episode index.
    """
    expected_from = 0
    for position, record in enumerate(records):
        path, index = record["source_file"], record["episode_index"]
        if index != position:
            sink(path, f"episode indices must be 0..{len(records) - 1} once each; found {index} at position {position}", episode=index, kind="index")  # fmt: skip
        length = record["length"]
        if length < 1:
            sink(path, f"length {length}; an episode holds at least one frame", episode=index, kind="index")  # fmt: skip
        if record["from"] != expected_from:
            sink(path, f"dataset_from_index {record['from']}, expected {expected_from} (the previous episode ends there): episodes overlap or leave a gap", episode=index, kind="index")  # fmt: skip
        if total_frames is not None and record["to"] > total_frames:
            sink(path, f"dataset_to_index {record['to']} is past the dataset's {total_frames} frames (info.json total_frames)", episode=index, kind="index")  # fmt: skip
        if record["to"] - record["from"] != length:
            sink(path, f"dataset_to_index - dataset_from_index = {record['to'] - record['from']}, but length is {length}", episode=index, kind="index")  # fmt: skip
        expected_from = record["from"] + max(length, 0)
        previous_end = 0
        for subtask in record["subtasks"]:
            if not (0 <= subtask.start < subtask.end <= length) or subtask.start < previous_end:
                sink(path, f"subtask {subtask.text!r} [{subtask.start}, {subtask.end}) lies outside the episode's {length} frames or overlaps the previous one", episode=index, kind="index")  # fmt: skip
            previous_end = max(previous_end, subtask.end)
        for key, (_video_path, start, end) in record["videos"].items():
            if not (math.isfinite(start) and math.isfinite(end) and start >= 0):
                sink(path, f"video {key!r} span [{start}, {end}) is not a pair of finite non-negative times", episode=index, kind="index")  # fmt: skip
            elif abs((end - start) - length / fps) > 0.5 / fps:
                sink(path, f"video {key!r} span [{start:.4f}, {end:.4f}) s lasts {(end - start) * fps:.2f} frames at {fps:g} fps, but the episode has {length}", episode=index, kind="index")  # fmt: skip
    if total_frames is not None and expected_from != total_frames and records:
        sink(records[-1]["source_file"], f"the episodes hold {expected_from} frames, info.json total_frames says {total_frames}", kind="index")  # fmt: skip
    # videos: episodes sharing a file must not overlap in time
    by_file: dict[tuple[str, Path], list[tuple[float, float, int, Path]]] = {}
    for record in records:
        for key, (video_path, start, end) in record["videos"].items():
            by_file.setdefault((key, video_path), []).append((start, end, record["episode_index"], record["source_file"]))  # fmt: skip
    for (key, video_path), spans in by_file.items():
        spans.sort()
        for (s0, e0, ep0, _), (s1, _e1, ep1, src1) in itertools.pairwise(spans):
            if s1 < e0 - 0.5 / fps:
                sink(src1, f"video {key!r} span starts at {s1:.4f} s in {video_path.name}, inside episode {ep0}'s span [{s0:.4f}, {e0:.4f}): its file_index or timestamps point at another episode's frames", episode=ep1, kind="index")  # fmt: skip


# -- frame table --------------------------------------------------------------------------------


def check_frame_table(columns: Mapping[str, np.ndarray], records: list[dict], row_files: list[tuple[Path, int]], tasks: Mapping[int, str], sink: Sink) -> None:  # fmt: skip
    """Check ``index``, ``episode_index``, ``frame_index``, ``task_index`` against the episodes.

    Args:
        columns: Concatenated per-frame columns in file order.
        records: Committed episodes.
        row_files: ``(data file, rows)`` in the order the columns were concatenated.
        tasks: Task index → text.
    """
    total = sum(r["length"] for r in records)
    starts = np.cumsum([0] + [rows for _, rows in row_files])

    def file_of(row: int) -> Path:
        return row_files[int(np.searchsorted(starts, row, side="right")) - 1][0]

    lengths = np.array([r["length"] for r in records], dtype=np.int64)
    owner = np.repeat(np.arange(len(records)), np.maximum(lengths, 0))
    if owner.size != total:
        return
    expected = {
        "index": np.arange(total, dtype=np.int64),
        "episode_index": np.array([r["episode_index"] for r in records], dtype=np.int64)[owner]
        if records
        else np.zeros(0, np.int64),
        "frame_index": np.arange(total, dtype=np.int64)
        - np.array([r["from"] for r in records], dtype=np.int64)[owner]
        if records
        else np.zeros(0, np.int64),
    }
    for key, want in expected.items():
        if key not in columns or columns[key].shape[0] != total:
            continue
        found = columns[key][:, 0]
        wrong = np.flatnonzero(found != want)
        if wrong.size:
            row = int(wrong[0])
            episode = records[int(owner[row])]["episode_index"]
            sink(file_of(row), f"column {key!r} holds {int(found[row])} at frame {row - records[int(owner[row])]['from']} of the episode, expected {int(want[row])} ({wrong.size} wrong row(s)): rows are shuffled, offset or belong to another episode", episode=episode, kind="index")  # fmt: skip
    if "task_index" in columns and columns["task_index"].shape[0] == total and tasks:
        known = np.array(sorted(tasks), dtype=np.int64)
        found = columns["task_index"][:, 0]
        unknown = np.flatnonzero(~np.isin(found, known))
        if unknown.size:
            row = int(unknown[0])
            sink(file_of(row), f"task_index {int(found[row])} is not in meta/tasks.parquet (known {known.tolist()[:10]})", episode=records[int(owner[row])]["episode_index"], kind="index")  # fmt: skip
            return
        # every frame carries one of its episode's tasks (METIS writes one: the instruction)
        by_text = {text: index for index, text in tasks.items()}
        allowed = [{by_text[t] for t in r["tasks"] if t in by_text} for r in records]
        first = np.array([min(a) if len(a) == 1 else -1 for a in allowed], dtype=np.int64)
        expected_task = first[owner]
        suspicious = np.flatnonzero((expected_task != found) & (expected_task >= 0))
        many = np.flatnonzero(np.array([len(a) > 1 for a in allowed])[owner])
        rows = np.concatenate([suspicious, [r for r in many if int(found[r]) not in allowed[int(owner[r])]]]).astype(np.int64)  # fmt: skip
        if rows.size:
            row = int(rows.min())
            record = records[int(owner[row])]
            sink(file_of(row), f"task_index {int(found[row])} at frame {row - record['from']} is not one of the episode's tasks {sorted(allowed[int(owner[row])])} ({record['tasks'][:2]}); {rows.size} such frame(s)", episode=record["episode_index"], kind="index")  # fmt: skip


def check_values(columns: Mapping[str, np.ndarray], records: list[dict], frame_file: Callable[[int], Path], sink: Sink, *, state_key: str, action_key: str, mask_key: str) -> None:  # fmt: skip
    """Value checks of a METIS dataset: finite vectors, a boolean mask that agrees with them.

    A missing hand's 24 values must be zeros; a present hand's 6D rotation must have two
    non-zero, non-parallel halves (the same rule, and tolerance, as ``Episode.validate``).
    """
    lengths = np.array([r["length"] for r in records], dtype=np.int64)
    owner = np.repeat(np.arange(len(records)), np.maximum(lengths, 0))
    mask = columns.get(mask_key)

    def report(row: int, message: str) -> None:
        record = records[int(owner[row])]
        sink(frame_file(row), f"frame {row - record['from']}: {message}", episode=record["episode_index"], kind="values")  # fmt: skip

    if mask is not None and mask.shape[0] == owner.size and mask.size:
        raw = mask.astype(np.float64, copy=False)
        if not np.isin(raw, (0.0, 1.0)).all():
            row = int(np.argwhere(~np.isin(raw, (0.0, 1.0)))[0, 0])
            report(row, f"{mask_key} holds {mask[row].tolist()}, expected booleans")
    for key in (state_key, action_key):
        values = columns.get(key)
        if values is None or values.shape[0] != owner.size or values.shape[1] != ACTION_DIM:
            continue
        finite = np.isfinite(values)
        if not finite.all():
            row, dim = (int(i) for i in np.argwhere(~finite)[0])
            report(row, f"{key}[{dim}] ({describe_index(dim)}) is {values[row, dim]}; values must be finite ({int((~finite).sum())} non-finite in the dataset)")  # fmt: skip
            continue
        if mask is None or mask.shape != (owner.size, 2):
            continue
        present = mask.astype(bool)
        for layout in (LEFT, RIGHT):
            here = present[:, layout.index]
            block = values[:, list(layout.indices)]
            nonzero_absent = ~here & (block != 0).any(axis=1)
            if nonzero_absent.any():
                row = int(np.flatnonzero(nonzero_absent)[0])
                report(row, f"{key}: the {layout.side} hand is marked missing in {mask_key} but has non-zero values ({int(nonzero_absent.sum())} such frame(s)); the mask disagrees with the values")  # fmt: skip
            rot = values[:, layout.wrist_rot6d].astype(np.float64)
            a1, a2 = rot[:, :3], rot[:, 3:]
            n1 = np.linalg.norm(a1, axis=1)
            a2_orth = a2 - (a1 * a2).sum(1, keepdims=True) * a1 / np.maximum(n1, 1e-150)[:, None] ** 2  # fmt: skip
            bad = here & ((n1 < 1e-6) | (np.linalg.norm(a2_orth, axis=1) < 1e-6))
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                report(row, f"{key}: the {layout.side} hand is marked present but its wrist rotation {rot[row].round(4).tolist()} is not a valid 6D rotation (zero or parallel columns; {int(bad.sum())} such frame(s)); the mask disagrees with the values")  # fmt: skip


# -- the check command --------------------------------------------------------------------------


def check_dataset(root: str | os.PathLike[str], *, deep: bool = False) -> CheckReport:
    """Check a dataset the way the reader does, collecting every problem, plus checksums.

    Args:
        root: Dataset directory.
        deep: Also decode every frame of every video and compare the counts with the episodes.

    Returns:
        The :class:`CheckReport`; ``report.ok`` is True when nothing is wrong.
    """
    from metis_core.io import CorruptFileError
    from metis_datasets.lerobot_format import LeRobotDataset

    root = Path(root)
    report = CheckReport(root=root)
    sink = Sink(collect=True)
    dataset: LeRobotDataset | None = None
    try:
        dataset = LeRobotDataset._checked(root, sink)
    except StopChecking:
        pass
    except (CorruptFileError, UnsupportedDatasetError, FileNotFoundError, ValueError, OSError) as err:  # fmt: skip
        kind = "unreadable" if not isinstance(err, IncompleteDatasetError) else "incomplete"
        sink.problems.append(Problem(str(root), str(err), None, kind))
    report.problems = sink.problems
    if dataset is None:
        return report
    report.episodes, report.frames = len(dataset.episodes), dataset.num_frames
    report.complete = dataset.complete
    dataset._check_extra(sink, deep=deep, report=report)
    report.files_hashed = dataset._files_hashed
    return report
