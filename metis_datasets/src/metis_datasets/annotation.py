"""Add a per-frame feature column to an existing LeRobot v3.0 dataset, atomically and resumably.

:func:`add_frame_feature` is tokenizer-agnostic: the caller's ``compute`` gives the values of the
episodes stored in one data file, and this module rewrites the dataset around them. (The METIS
dynamics-code pass, ``metis annotate``, is :func:`metis_core.vla.annotate.annotate_dataset`.)

Layout while a run is under way (inside the dataset, so the files stay on one file system)::

    .metis_annotate/plan.json                        feature name, dtype, shape, names, metadata,
                                                     and the info_sha256 of the dataset annotated
    .metis_annotate/data/chunk-C/file-F.parquet      a rewritten data file (original columns, same
                                                     rows in the same order, plus the new column)
    .metis_annotate/commit.json                      the commit journal (only while committing)

Stage: data file by data file, the rewritten file is written to the staging folder atomically
(temporary name, fsync, rename, page checksums as the writer writes them). A killed run leaves
the dataset untouched; re-running with the same plan (feature name, dtype, shape, names, metadata
and the dataset's ``info_sha256``) reuses the staged files and computes only the others; a
different plan discards them.

Commit: when every file is staged, the journal is written (the new ``meta/info.json``, the new
checksum records and the digest of every staged file), then the data files are renamed over the
originals, the checksum records ``meta/metis_checksums/chunk-C/file-F.json`` rewritten, and
``meta/info.json`` rewritten last, with the feature declared (``dtype``, ``shape``, ``names`` and
the metadata under ``"metis_annotation"``) and its ``info_sha256`` recomputed; then the staging
folder is removed. While the journal exists the reader
(:class:`metis_datasets.lerobot_format.LeRobotDataset`) and ``metis-datasets check`` refuse the
dataset; re-running finishes the commit (from the journal, whatever the new run's arguments) and
then carries on with the new request.

A dataset that already holds the feature with the same metadata is left as it is; with other
metadata :func:`add_frame_feature` raises :class:`AnnotationConflictError` naming the keys that
differ, unless ``overwrite=True`` (the column is then replaced). ``provenance`` (e.g. the
software version) is stored next to the metadata but is not compared.

Only whole (finalized) METIS-readable v3.0 datasets are annotated: the dataset is opened with the
reader first, so every check it runs (checksums included) passes before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from metis_core.io import CorruptFileError, read_json, write_json
from metis_datasets.lerobot_format import (
    INTEGRITY_KEY,
    LeRobotDataset,
    _fixed_list,
    _parse_parquet,
    _write_parquet,
    integrity_record,
)
from metis_datasets.validation import (
    ANNOTATION_JOURNAL,
    ANNOTATION_STAGING,
    UnsupportedDatasetError,
    file_digest,
    info_digest,
)

__all__ = [
    "ANNOTATION_KEY",
    "AnnotationConflictError",
    "add_frame_feature",
    "annotation_metadata",
]

#: Key of a feature's ``info.json`` entry that holds the annotation's metadata.
ANNOTATION_KEY = "metis_annotation"
_PLAN = "plan.json"
#: Columns a feature may not replace (the writer's own).
_RESERVED = ("observation.state", "action", "observation.hand_mask", "timestamp", "frame_index", "episode_index", "index", "task_index")  # fmt: skip
_DTYPES = ("float32", "float64", "int64", "int32", "bool")

Compute = Callable[[list[int]], Mapping[int, np.ndarray]]


class AnnotationConflictError(ValueError):
    """The dataset already holds the feature, computed with other settings (see the message)."""


def annotation_metadata(info_or_feature: Mapping[str, Any], name: str | None = None) -> dict | None:
    """The metadata stored with a feature by :func:`add_frame_feature`, or None.

    Args:
        info_or_feature: A parsed ``meta/info.json`` (then give ``name``) or one feature entry.
        name: Feature name.

    Returns:
        ``{"metadata": ..., "provenance": ...}`` as stored, or None if the feature is absent or
        was not added by :func:`add_frame_feature`.
    """
    entry = info_or_feature
    if name is not None:
        entry = (info_or_feature.get("features") or {}).get(name)
    if not isinstance(entry, Mapping) or not isinstance(entry.get(ANNOTATION_KEY), Mapping):
        return None
    return dict(entry[ANNOTATION_KEY])


def add_frame_feature(
    root: str | os.PathLike[str],
    name: str,
    compute: Compute,
    *,
    dtype: str,
    shape: Sequence[int],
    metadata: Mapping[str, Any],
    names: Sequence[str] | None = None,
    provenance: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Add (or replace) the per-frame feature ``name`` of a LeRobot v3.0 dataset.

    Args:
        root: Dataset directory (a whole METIS-written v3.0 dataset).
        name: Feature name, e.g. ``"dynamics.codes"``.
        compute: ``compute(episode_indices) -> {episode_index: values}`` for the episodes stored
            in one data file (their positions in ``LeRobotDataset(root).episodes``, which are
            their ``episode_index``); ``values`` is ``(length, *shape)``. Called once per data
            file still to stage, in file order.
        dtype: One of ``float32``, ``float64``, ``int64``, ``int32``, ``bool``.
        shape: Per-frame shape, e.g. ``(44,)``.
        metadata: JSON-ready description of how the values were computed; stored in the
            feature's entry under ``"metis_annotation"`` and compared on later runs.
        names: Names of the values (``info.json``'s ``names``), or None.
        provenance: JSON-ready facts stored with the metadata but not compared (software
            version, ...).
        overwrite: Replace the feature if it exists with other metadata.
        progress: Show a progress bar over the data files.

    Returns:
        The dataset root.

    Raises:
        FileNotFoundError: If ``root`` is not a dataset.
        IncompleteDatasetError: If the dataset's conversion has not finished.
        UnsupportedDatasetError: For a v2.1 dataset, a reserved or non-numeric feature.
        AnnotationConflictError: If the feature exists with other metadata (``overwrite`` not set).
        ValueError: If ``compute`` returns values of the wrong episodes, shape or type.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a directory; expected a LeRobot v3.0 dataset")  # fmt: skip
    shape = [int(s) for s in shape]
    if dtype not in _DTYPES:
        raise UnsupportedDatasetError(f"feature {name!r}: dtype must be one of {list(_DTYPES)}, got {dtype!r}")  # fmt: skip
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"feature {name!r}: shape must be positive sizes, got {shape}")
    if name in _RESERVED or name.startswith(("observation.images.", "videos/")):
        raise UnsupportedDatasetError(f"feature {name!r} is one of the dataset's own columns; choose another name")  # fmt: skip
    width = int(np.prod(shape))
    if names is not None and len(names) != width:
        raise ValueError(f"feature {name!r}: {len(names)} names for {width} values")
    metadata = json.loads(json.dumps(dict(metadata)))  # JSON-ready, as it will be read back
    provenance = json.loads(json.dumps(dict(provenance or {})))
    staging = root / ANNOTATION_STAGING
    if (root / ANNOTATION_JOURNAL).exists():
        _finish_commit(root)  # a killed commit: finish it first, then look at the request
    dataset = LeRobotDataset(root)  # every check of the reader; refuses an incomplete dataset
    if dataset.version != "v3.0":
        raise UnsupportedDatasetError(f"{root}: LeRobot {dataset.version} datasets cannot be annotated; convert it to v3.0 first")  # fmt: skip
    info = dataset.info
    existing = info["features"].get(name)
    entry = {"dtype": dtype, "shape": shape, "names": list(names) if names is not None else None}
    if existing is not None:
        stored = annotation_metadata(existing)
        if stored is None:
            raise AnnotationConflictError(f"{root}: feature {name!r} exists and was not added by an annotation pass; refusing to replace it")  # fmt: skip
        declared = {k: existing.get(k) for k in entry}
        if stored.get("metadata") == metadata and declared == entry:
            if staging.exists():
                shutil.rmtree(staging)  # a stale run's leftovers; the feature is there already
            return root
        if not overwrite:
            differ = _differences(stored.get("metadata") or {}, metadata)
            differ += [f"{k}: stored {declared[k]!r}, asked {entry[k]!r}" for k in entry if declared[k] != entry[k]]  # fmt: skip
            raise AnnotationConflictError(
                f"{root}: feature {name!r} is already stored, computed with other settings: "
                + "; ".join(differ)
                + ". Pass overwrite=True (metis annotate --overwrite) to recompute it."
            )
    recorded = integrity_record(info).get("info_sha256")
    plan = {
        "feature": name,
        **entry,
        "metadata": metadata,
        "info_sha256": recorded if isinstance(recorded, str) else info_digest(info),
    }
    _prepare_staging(staging, plan)
    files: dict[Path, list[int]] = {}
    for position, record in enumerate(dataset.episodes):
        files.setdefault(record["data_file"], []).append(position)
    staged_digests: dict[str, dict] = {}
    bar = tqdm(files.items(), desc=f"annotating {root.name}", unit="file", disable=not progress)
    for path, positions in bar:
        rel = path.relative_to(root).as_posix()
        target = staging / rel
        expected_rows = sum(dataset.episodes[p]["length"] for p in positions)
        if target.exists() and _staged_rows(target) == expected_rows:
            staged_digests[rel] = file_digest(target)
            continue
        values = compute(list(positions))
        column = _column(values, positions, dataset, dtype, shape, name)
        data = dataset._verified_bytes(path)
        if data is None:  # pragma: no cover - the reader raises in this mode
            raise CorruptFileError(f"{path}: content does not match its recorded checksum")
        table = _parse_parquet(path, data)
        table = _with_column(table, name, column, dataset, positions, path, width, shape == [1])
        staged_digests[rel] = _write_parquet(target, table)
    bar.close()
    journal = _journal(root, dataset, info, name, entry, metadata, provenance, plan, staged_digests)
    write_json(root / ANNOTATION_JOURNAL, journal)
    _finish_commit(root)
    return root


# -- staging ------------------------------------------------------------------------------------


def _prepare_staging(staging: Path, plan: dict) -> None:
    """Keep a staging folder of the same plan (resume); replace any other."""
    plan_path = staging / _PLAN
    if staging.exists():
        try:
            previous = read_json(plan_path) if plan_path.exists() else None
        except CorruptFileError:
            previous = None
        if previous == plan:
            return
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    write_json(plan_path, plan)


def _staged_rows(path: Path) -> int | None:
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError):
        return None


def _column(values: Mapping[int, np.ndarray], positions: list[int], dataset: LeRobotDataset, dtype: str, shape: list[int], name: str) -> dict[int, np.ndarray]:  # fmt: skip
    """Check what ``compute`` returned: every episode of the file, ``(length, *shape)``, finite."""
    if not isinstance(values, Mapping):
        raise ValueError(f"compute must return a mapping episode -> values, got {type(values).__name__}")  # fmt: skip
    missing = [p for p in positions if p not in values]
    extra = [p for p in values if p not in positions]
    if missing or extra:
        raise ValueError(f"compute was asked for episodes {positions} and returned {sorted(values)} (missing {missing}, unexpected {extra})")  # fmt: skip
    out: dict[int, np.ndarray] = {}
    for position in positions:
        array = np.asarray(values[position])
        length = dataset.episodes[position]["length"]
        if array.shape != (length, *shape):
            raise ValueError(f"feature {name!r}: episode {position}: compute returned shape {array.shape}, expected {(length, *shape)}")  # fmt: skip
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise ValueError(f"feature {name!r}: episode {position}: compute returned NaN or infinity")  # fmt: skip
        converted = array.astype(dtype)
        if dtype != "bool" and np.issubdtype(array.dtype, np.number) and not np.array_equal(converted, array):  # fmt: skip
            raise ValueError(f"feature {name!r}: episode {position}: values of dtype {array.dtype} do not fit {dtype} exactly")  # fmt: skip
        out[position] = converted
    return out


def _with_column(table: pa.Table, name: str, column: Mapping[int, np.ndarray], dataset: LeRobotDataset, positions: list[int], path: Path, width: int, scalar: bool) -> pa.Table:  # fmt: skip
    """The data file's table with the feature column added (or replaced), rows in their order."""
    by_index = {dataset.episodes[p]["episode_index"]: column[p] for p in positions}
    episode = table.column("episode_index").to_numpy()
    frame = table.column("frame_index").to_numpy()
    rows = np.empty((table.num_rows, width), dtype=next(iter(column.values())).dtype)
    for index, values in by_index.items():
        where = np.flatnonzero(episode == index)
        if where.size != values.shape[0] or not np.array_equal(np.sort(frame[where]), np.arange(values.shape[0])):  # fmt: skip
            raise CorruptFileError(f"{path}: episode {index} has {where.size} rows, frame_index not 0..{values.shape[0] - 1}")  # fmt: skip
        rows[where] = values.reshape(values.shape[0], width)[frame[where]]
    if np.isin(episode, list(by_index), invert=True).any():
        raise CorruptFileError(f"{path}: holds rows of episodes the episodes metadata does not place in it")  # fmt: skip
    # shape [1] is a plain column (as the writer stores timestamp, index, ...), others fixed lists
    array = pa.array(rows[:, 0]) if scalar else _fixed_list(rows, width)
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, array)
    return table.append_column(name, array)


# -- commit -------------------------------------------------------------------------------------


def _journal(root: Path, dataset: LeRobotDataset, info: dict, name: str, entry: dict, metadata: dict, provenance: dict, plan: dict, staged: dict[str, dict]) -> dict:  # fmt: skip
    """The commit journal: every file to rename and every metadata file to write, in full."""
    records: dict[str, dict] = {}
    checksums_dir = root / "meta" / "metis_checksums"
    for path in sorted(checksums_dir.glob("chunk-*/file-*.json")):
        record = read_json(path)
        if not isinstance(record, dict):
            raise CorruptFileError(f"{path}: expected a JSON object of file -> {{sha256, bytes}}")
        if any(rel in record for rel in staged):
            rel_record = path.relative_to(root).as_posix()
            records[rel_record] = {k: staged.get(k, v) for k, v in record.items()}  # fmt: skip
    new_info = json.loads(json.dumps(info))
    new_info["features"][name] = {**entry, ANNOTATION_KEY: {"metadata": metadata, "provenance": provenance}}  # fmt: skip
    integrity = new_info.get(INTEGRITY_KEY)
    if isinstance(integrity, dict):
        checksums = integrity.get("checksums")
        if isinstance(checksums, dict):
            for rel, digest in staged.items():
                if rel in checksums:
                    checksums[rel] = digest
        integrity["info_sha256"] = info_digest(new_info)
    return {"plan": plan, "files": staged, "checksum_records": records, "info": new_info}


def _finish_commit(root: Path) -> None:
    """Carry out (or finish) the journaled commit; idempotent, so a killed commit is re-run."""
    journal_path = root / ANNOTATION_JOURNAL
    journal = read_json(journal_path)
    if not isinstance(journal, dict) or not {"files", "checksum_records", "info"} <= set(journal):
        raise CorruptFileError(f"{journal_path}: not a commit journal of metis annotate; the dataset's data files may be half replaced: restore the dataset from a copy")  # fmt: skip
    staging = root / ANNOTATION_STAGING
    for rel, digest in journal["files"].items():
        staged, final = staging / rel, root / rel
        if staged.exists():
            if file_digest(staged) != digest:
                raise CorruptFileError(f"{staged}: content does not match the commit journal {journal_path}; the staged file was damaged")  # fmt: skip
            os.replace(staged, final)
        elif not final.exists() or file_digest(final) != digest:
            raise CorruptFileError(f"{final}: neither the staged file nor a renamed one matching the commit journal {journal_path} exists; restore the dataset from a copy")  # fmt: skip
    for rel, record in journal["checksum_records"].items():
        write_json(root / rel, record)
    write_json(root / "meta" / "info.json", journal["info"])
    _fsync_directory(root / "meta")
    journal_path.unlink()  # the commit is whole from here on
    shutil.rmtree(staging)


def _fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _differences(stored: Any, asked: Any, prefix: str = "") -> list[str]:
    """``key: stored X, asked Y`` for each leaf that differs (nested keys joined with '.')."""
    if isinstance(stored, Mapping) and isinstance(asked, Mapping):
        out: list[str] = []
        for key in sorted(set(stored) | set(asked)):
            out += _differences(stored.get(key), asked.get(key), f"{prefix}{key}.")
        return out
    if stored != asked:
        return [f"{prefix.rstrip('.')}: stored {_short(stored)}, asked {_short(asked)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
