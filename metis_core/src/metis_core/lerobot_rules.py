"""Rules every reader of a LeRobot v3.0 dataset written by METIS follows.

``metis_datasets`` (the full reader and ``metis-datasets check``) and ``metis_tokenizers``
(``load_windows`` on a dataset directory, which must install without ``metis_datasets``) share
them, so both see the same episodes:

* ``meta/info.json`` is parsed strictly by :func:`parse_info` (types, ranges, paths, the contract
  record's version as an integer, never ``1.9``, ``true`` or ``inf``);
* only committed episodes exist: rows of the episodes files whose ``episode_index`` is below
  ``total_episodes`` (the commit record); anything numbered past them is a killed run's leftover
  (:func:`committed_rows`);
* a METIS dataset (one with the record at ``features["observation.state"]["metis"]``) stores the
  hand mask as ``observation.hand_mask``; it is read, never guessed from values
  (:func:`requires_stored_hand_mask`).

Only the standard library is used here (no pyarrow, no numpy): callers read the files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metis_core.io import CorruptFileError, read_json

__all__ = [
    "ACTION_KEY",
    "MASK_KEY",
    "STATE_KEY",
    "SUPPORTED_VERSIONS",
    "DatasetFormatError",
    "committed_rows",
    "contract_version",
    "data_file",
    "metis_record",
    "parse_info",
    "read_metadata_json",
    "requires_stored_hand_mask",
]

STATE_KEY = "observation.state"
ACTION_KEY = "action"
MASK_KEY = "observation.hand_mask"
SUPPORTED_VERSIONS = ("v3.0", "v2.1")


class DatasetFormatError(CorruptFileError):
    """A dataset file that exists but breaks the LeRobot/METIS layout; the message names it."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metadata_json(path: str | Path) -> Any:
    """:func:`metis_core.io.read_json`, with bytes that are not UTF-8 a :class:`CorruptFileError` too."""
    try:
        return read_json(path)
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"{path} is not valid UTF-8 JSON (byte {err.start}: {err.reason}); it is corrupt") from err  # fmt: skip


def metis_record(info: Mapping[str, Any]) -> dict:
    """The METIS record of a parsed ``info.json`` (``{}`` for datasets written by others).

    Looks at ``features["observation.state"]["metis"]`` first, then at a top-level ``"metis"``
    key (datasets written before the record moved into the features).
    """
    features = info.get("features")
    if isinstance(features, Mapping):
        state = features.get(STATE_KEY)
        record = state.get("metis") if isinstance(state, Mapping) else None
        if isinstance(record, Mapping):
            return dict(record)
    record = info.get("metis")
    return dict(record) if isinstance(record, Mapping) else {}


def contract_version(record: Mapping[str, Any], where: str, *, error: type[Exception] = DatasetFormatError) -> None:  # fmt: skip
    """Check that a METIS record's contract is ``{"name": str, "version": int}``.

    ``int(1.9)`` is 1 and ``int(True)`` is 1: a version that is not an integer must not pass for
    version 1 (nor crash with ``OverflowError`` for ``inf``).

    Raises:
        error: Naming the file and the value found.
    """
    contract = record.get("contract")
    if not isinstance(contract, Mapping):
        raise error(f"{where}: the METIS record's 'contract' must be a mapping like {{'name': 'metis-hand', 'version': 1}}, got {contract!r}")  # fmt: skip
    version = contract.get("version")
    if not _is_int(version):
        raise error(f"{where}: contract version must be an integer, got {version!r} ({type(version).__name__})")  # fmt: skip
    if not isinstance(contract.get("name"), str):
        raise error(f"{where}: contract name must be a string, got {contract.get('name')!r}")


def parse_info(raw: Any, path: str | Path, *, error: type[Exception] = DatasetFormatError) -> dict:
    """Check a parsed ``meta/info.json`` and return it.

    Args:
        raw: The parsed JSON document.
        path: The file, for messages.
        error: Exception class to raise (a subclass of :class:`DatasetFormatError` usually).

    Returns:
        ``raw`` (a dict), unchanged.

    Raises:
        error: For a document that is not an object, a missing key, an ``fps`` that is not a
            positive finite number, counts that are not non-negative integers, ``features`` that
            is not an object of objects, missing or malformed ``data_path``/``video_path``, an
            unsupported ``codebase_version``, or a METIS record with a malformed contract.
    """
    where = str(path)
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a JSON object (LeRobot info record), got {type(raw).__name__}")  # fmt: skip
    missing = [k for k in ("codebase_version", "fps", "features", "total_episodes") if k not in raw]
    if missing:
        raise error(f"{where} lacks keys {missing}: expected a LeRobot info record with 'features' and 'total_episodes'")  # fmt: skip
    version = raw["codebase_version"]
    if not isinstance(version, str):
        raise error(f"{where}: codebase_version must be a string such as 'v3.0', got {version!r}")
    fps = raw["fps"]
    if not _is_number(fps) or not fps > 0:
        raise error(f"{where}: fps must be a positive finite number, got {fps!r}")
    for key in ("total_episodes", "total_frames", "total_tasks", "chunks_size"):
        if key in raw or key == "total_episodes":
            value = raw.get(key)
            if not _is_int(value) or value < 0 or (key == "chunks_size" and value < 1):
                raise error(f"{where}: {key} must be a non-negative integer, got {value!r}")
    features = raw["features"]
    if not isinstance(features, dict) or not all(isinstance(v, dict) for v in features.values()):
        raise error(f"{where}: features must be an object mapping each feature name to an object, got {type(features).__name__}")  # fmt: skip
    for name, feature in features.items():
        if not isinstance(feature.get("dtype"), str):
            raise error(f"{where}: feature {name!r} lacks a string 'dtype'")
        shape = feature.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape)):  # fmt: skip
            raise error(f"{where}: feature {name!r} has shape {shape!r}; expected a list of non-negative integers")  # fmt: skip
    if version in SUPPORTED_VERSIONS:
        if not isinstance(raw.get("data_path"), str) or not raw["data_path"]:
            raise error(f"{where}: data_path must be a path template string, got {raw.get('data_path')!r}")  # fmt: skip
        if any(f.get("dtype") == "video" for f in features.values()) and not isinstance(raw.get("video_path"), str):  # fmt: skip
            raise error(f"{where}: the dataset has video features but video_path is {raw.get('video_path')!r}; expected a path template string")  # fmt: skip
    record = metis_record(raw)
    if record:
        contract_version(record, where, error=error)
        if "fps" in record and (not _is_number(record["fps"]) or abs(float(record["fps"]) - float(fps)) > 1e-6):  # fmt: skip
            raise error(f"{where}: fps {fps!r} disagrees with the METIS record's fps {record['fps']!r}")  # fmt: skip
    return raw


def requires_stored_hand_mask(info: Mapping[str, Any]) -> bool:
    """Whether the dataset must store ``observation.hand_mask`` (every METIS dataset does).

    Datasets written by others may lack it; readers then treat both hands as present.
    """
    return bool(metis_record(info))


def committed_rows(rows: Iterable[Mapping[str, Any]], total_episodes: int) -> tuple[list[dict], int]:  # fmt: skip
    """Split episodes-metadata rows into committed ones and a count of uncommitted ones.

    Args:
        rows: Rows of the ``meta/episodes`` files (each with ``episode_index``).
        total_episodes: ``info.json``'s commit record.

    Returns:
        ``(committed rows sorted by episode_index, number of rows past the commit record)``.
    """
    committed, leftover = [], 0
    for row in rows:
        index = row.get("episode_index")
        if _is_int(index) and index >= total_episodes:
            leftover += 1
        else:
            committed.append(dict(row))
    committed.sort(key=lambda r: r["episode_index"] if _is_int(r.get("episode_index")) else -1)
    return committed, leftover


def data_file(info: Mapping[str, Any], row: Mapping[str, Any], root: str | Path) -> Path:
    """The data file of an episodes-metadata row (v3.0: ``data/chunk_index``, ``data/file_index``).

    Raises:
        DatasetFormatError: If the indices are not non-negative integers or the template is bad.
    """
    chunk, file = row.get("data/chunk_index"), row.get("data/file_index")
    if not (_is_int(chunk) and _is_int(file) and chunk >= 0 and file >= 0):
        raise DatasetFormatError(f"{root}: episode {row.get('episode_index')!r} has data/chunk_index {chunk!r}, data/file_index {file!r}; expected non-negative integers")  # fmt: skip
    try:
        return Path(root) / str(info["data_path"]).format(chunk_index=chunk, file_index=file)
    except (KeyError, IndexError, ValueError) as err:
        raise DatasetFormatError(f"{root}/meta/info.json: data_path {info.get('data_path')!r} is not a template of chunk_index and file_index ({err})") from err  # fmt: skip
