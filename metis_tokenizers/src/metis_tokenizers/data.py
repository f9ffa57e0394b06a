"""Loading windows of contract actions for training and evaluation.

``--data PATH`` accepts:

* an array file of windows: ``.npy`` (``actions`` only), ``.npz`` or ``.safetensors`` with
  ``actions (N, T, 48)`` and optionally ``hand_mask (N, 2)`` or ``(N, T, 2)``;
* a LeRobot v3 dataset directory, cut into windows per episode (needs ``pyarrow``). The same
  rules as ``metis_datasets``' reader apply (:mod:`metis_core.lerobot_rules`): ``meta/info.json``
  is parsed strictly, only committed episodes are read (rows of ``meta/episodes`` below
  ``total_episodes``, and only the data files they name, never a killed run's leftovers), and
  hand presence comes from the stored ``observation.hand_mask`` (a METIS dataset without it is
  refused; datasets of others without it count both hands present). A hand counts as present in
  a window when it is present in every frame of it.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from metis_core.contract import ACTION_DIM
from metis_core.io import CorruptFileError, load_safetensors, save_safetensors
from metis_core.lerobot_rules import (
    MASK_KEY,
    DatasetFormatError,
    committed_rows,
    data_file,
    parse_info,
    read_metadata_json,
    requires_stored_hand_mask,
)
from metis_tokenizers.motion_generator import MotionWindows

__all__ = ["load_windows", "save_windows", "timed_windows_from_episodes", "windows_from_episodes"]


def save_windows(path: str | os.PathLike[str], windows: MotionWindows) -> Path:
    """Write windows as ``.safetensors`` or ``.npz`` (by suffix), with their duration if known."""
    target = Path(path)
    seconds = windows.window_seconds
    if target.suffix == ".npz":
        extra = {} if seconds is None else {"window_seconds": np.asarray(float(seconds))}
        np.savez(
            target, actions=windows.actions.numpy(), hand_mask=windows.hand_mask.numpy(), **extra
        )
    elif target.suffix == ".safetensors":
        save_safetensors(
            target,
            {"actions": windows.actions, "hand_mask": windows.hand_mask.to(torch.uint8)},
            metadata=None if seconds is None else {"window_seconds": repr(float(seconds))},
        )
    else:
        raise ValueError(f"save_windows: use a .npz or .safetensors path, got {target.name}")
    return target


def windows_from_episodes(
    actions: np.ndarray, episode_index: np.ndarray, window_len: int, stride: int | None = None
) -> np.ndarray:
    """Cut ``(F, 48)`` frames into ``(N, window_len, 48)`` windows that never cross episodes."""
    stride = stride or window_len
    out = []
    for episode in np.unique(episode_index):
        frames = actions[episode_index == episode]
        for begin in range(0, len(frames) - window_len + 1, stride):
            out.append(frames[begin : begin + window_len])
    if not out:
        raise ValueError(f"no episode is at least {window_len} frames long")
    return np.stack(out).astype(np.float32)


def timed_windows_from_episodes(
    actions: np.ndarray,
    hand_mask: np.ndarray,
    episode_index: np.ndarray,
    *,
    fps: float,
    window_len: int = 16,
    window_seconds: float = 1.0,
    stride: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut windows of ``window_seconds`` from ``(F, 48)`` frames, resampled to ``window_len``.

    The rule of DESIGN §5 and of ``metis_core.vla.data.motion_windows_for_episode``: from a start
    frame, the upcoming ``window_seconds`` (``round(window_seconds × fps)`` frame intervals)
    resampled to ``window_len`` evenly spaced frames, linear for positions and fingertips, slerp
    for wrist rotations (:func:`metis_core.resample.resample_hand_vectors`). Windows never cross
    an episode's end.

    Args:
        actions: ``(F, 48)`` frames of several episodes.
        hand_mask: ``(F, 2)`` presence.
        episode_index: ``(F,)``.
        fps: The data's frame rate.
        stride: Frames between window starts (default: one window's span, no overlap).

    Returns:
        ``windows (N, window_len, 48)`` float32 and ``present (N, 2)`` bool (present in every
        resampled frame).
    """
    from metis_core.resample import resample_hand_vectors

    if not fps > 0 or not window_seconds > 0:
        raise ValueError(f"fps and window_seconds must be > 0, got {fps} and {window_seconds}")
    span = max(round(window_seconds * fps), 1)
    stride = stride or span
    times = np.arange(span + 1, dtype=np.float64) / fps
    query = np.linspace(0.0, times[-1], window_len)
    rows = []
    for episode in np.unique(episode_index):
        where = np.flatnonzero(episode_index == episode)
        for begin in range(0, len(where) - span, stride):
            rows.append(where[begin : begin + span + 1])
    if not rows:
        raise ValueError(
            f"no episode is longer than {window_seconds:g} s ({span + 1} frames at {fps:g} fps)"
        )
    index = np.stack(rows)
    resampled = resample_hand_vectors(
        torch.from_numpy(np.ascontiguousarray(actions[index], dtype=np.float32)),
        times,
        target_times=query,
        hand_mask=torch.from_numpy(np.ascontiguousarray(hand_mask[index], dtype=bool)),
    )
    windows = np.asarray(resampled.vectors, dtype=np.float32)
    present = np.asarray(resampled.hand_mask, dtype=bool).all(axis=1)
    return windows, present


def _read_lerobot(
    directory: Path, window_len: int, stride: int | None, window_seconds: float = 1.0
) -> MotionWindows:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading a LeRobot dataset directory needs pyarrow: pip install pyarrow "
            "(or pip install 'metis-tokenizers[lerobot]')"
        ) from err
    info_path = directory / "meta" / "info.json"
    if not info_path.exists():
        raise FileNotFoundError(
            f"{info_path} is missing: {directory} is not a LeRobot v3 dataset (nothing in it is "
            "committed, so no frame is read)"
        )
    info = parse_info(read_metadata_json(info_path), info_path)
    if info["codebase_version"] != "v3.0":
        raise ValueError(f"{info_path}: codebase_version {info['codebase_version']!r}; load_windows reads LeRobot v3.0 datasets")  # fmt: skip
    has_mask = MASK_KEY in info["features"]
    if requires_stored_hand_mask(info) and not has_mask:
        raise DatasetFormatError(f"{info_path}: feature {MASK_KEY!r} is missing; every METIS dataset stores the hand mask (it is never guessed from values)")  # fmt: skip

    def read(path: Path, columns: list[str] | None = None) -> pa.Table:
        try:
            return pq.read_table(path, columns=columns, page_checksum_verification=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing but committed episodes refer to it") from None  # fmt: skip
        except (pa.ArrowException, OSError, UnicodeDecodeError, KeyError) as err:
            raise DatasetFormatError(f"{path}: unreadable parquet file ({type(err).__name__}: {err})") from err  # fmt: skip

    rows: list[dict] = []
    for path in sorted(directory.glob("meta/episodes/chunk-*/file-*.parquet")):
        table = read(path, ["episode_index", "length", "data/chunk_index", "data/file_index"])
        rows += table.to_pylist()
    episodes, _ = committed_rows(rows, info["total_episodes"])
    if len(episodes) != info["total_episodes"]:
        raise DatasetFormatError(f"{info_path}: commits {info['total_episodes']} episodes, the episodes files hold {len(episodes)}")  # fmt: skip
    files: dict[Path, list[int]] = {}
    for row in episodes:
        files.setdefault(data_file(info, row, directory), []).append(int(row["episode_index"]))
    columns = ["action", "episode_index"] + ([MASK_KEY] if has_mask else [])
    actions, indices, masks = [], [], []
    for file, wanted in files.items():
        table = read(file, columns)
        episode_index = table.column("episode_index").to_numpy()
        keep = np.isin(episode_index, wanted)
        values = np.asarray(table.column("action").combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=np.float32)  # fmt: skip
        if values.size != len(table) * ACTION_DIM:
            raise ValueError(f"{file}: column 'action' must hold {ACTION_DIM} floats per frame, got {values.size / max(len(table), 1):g}")  # fmt: skip
        actions.append(values.reshape(-1, ACTION_DIM)[keep])
        indices.append(episode_index[keep])
        if has_mask:
            mask = np.asarray(table.column(MASK_KEY).combine_chunks().flatten().to_numpy(zero_copy_only=False), dtype=bool)  # fmt: skip
            masks.append(mask.reshape(-1, 2)[keep])
    frames = np.concatenate(actions)
    episode_index = np.concatenate(indices)
    mask = np.concatenate(masks) if has_mask else np.ones((frames.shape[0], 2), dtype=bool)
    windows, present = timed_windows_from_episodes(
        frames,
        mask,
        episode_index,
        fps=float(info["fps"]),
        window_len=window_len,
        window_seconds=window_seconds,
        stride=stride,
    )
    return MotionWindows(
        actions=torch.from_numpy(windows),
        hand_mask=torch.from_numpy(present),
        window_seconds=window_seconds,
    )


def _load_numpy(source: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(actions, hand_mask or None)`` of a ``.npy``/``.npz`` file; damage raises CorruptFileError."""
    try:
        if source.suffix == ".npy":
            return np.load(source, allow_pickle=False), None
        with np.load(source, allow_pickle=False) as data:
            if "actions" not in data:
                raise ValueError(f"{source}: expected an array named 'actions'")
            return data["actions"], data.get("hand_mask", None)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptFileError(f"{source}: truncated or corrupt {source.suffix} file ({type(err).__name__}: {err})") from err  # fmt: skip
    except ValueError as err:
        if str(source) in str(err):
            raise
        raise CorruptFileError(f"{source}: truncated or corrupt {source.suffix} file ({err})") from err  # fmt: skip


def _safetensors_seconds(source: Path) -> float | None:
    """The ``window_seconds`` a ``.safetensors`` file of windows records, if any."""
    from safetensors import safe_open

    try:
        with safe_open(str(source), framework="pt") as handle:
            value = (handle.metadata() or {}).get("window_seconds")
        return float(value) if value is not None else None
    except (OSError, ValueError):
        return None


def load_windows(
    path: str | os.PathLike[str],
    *,
    window_len: int | None = None,
    stride: int | None = None,
    window_seconds: float | None = None,
) -> MotionWindows:
    """Load windows from an array file or a LeRobot v3 dataset directory.

    Args:
        path: ``.npy``, ``.npz``, ``.safetensors`` or a LeRobot dataset directory.
        window_len: Frames per window to cut from a LeRobot dataset (default 16); for array
            files, checked against the stored windows if given.
        stride: Frames between window starts in a LeRobot dataset (default: one window's span).
        window_seconds: Duration of a window. A LeRobot dataset is cut into windows of this
            duration (default 1 s) at its ``fps``, resampled to ``window_len`` frames; for
            array files that record their duration, it is checked if given.

    Returns:
        :class:`MotionWindows`.

    Raises:
        FileNotFoundError: If the path does not exist.
        ValueError: For arrays of the wrong shape or non-finite values.
    """
    source = Path(path)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_dir():
        windows = _read_lerobot(source, window_len or 16, stride, window_seconds or 1.0)
    else:
        mask = None
        stored_seconds = None
        if source.suffix in (".npy", ".npz"):
            actions, mask = _load_numpy(source)
            if source.suffix == ".npz":
                with np.load(source, allow_pickle=False) as archive:
                    if "window_seconds" in archive:
                        stored_seconds = float(archive["window_seconds"])
        elif source.suffix == ".safetensors":
            data = load_safetensors(source)
            if "actions" not in data:
                raise ValueError(f"{source}: expected a tensor named 'actions'")
            actions = data["actions"].numpy()
            mask = data["hand_mask"].numpy() if "hand_mask" in data else None
            stored_seconds = _safetensors_seconds(source)
        else:
            raise ValueError(
                f"{source}: unsupported file type; use .npy, .npz, .safetensors or a LeRobot "
                "dataset directory"
            )
        tensor = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.float32))
        if tensor.dim() != 3 or tensor.shape[2] != ACTION_DIM:
            raise ValueError(
                f"{source}: expected actions of shape (N, T, {ACTION_DIM}), got {tuple(tensor.shape)}"
            )
        if window_len is not None and tensor.shape[1] != window_len:
            raise ValueError(
                f"{source}: windows have {tensor.shape[1]} frames, expected {window_len}"
            )
        if mask is None:
            hand_mask = torch.ones(tensor.shape[0], 2, dtype=torch.bool)
        else:
            hand_mask = torch.from_numpy(np.asarray(mask)).bool()
            if hand_mask.dim() == 3:
                hand_mask = hand_mask.all(1)
        if (
            window_seconds is not None
            and stored_seconds is not None
            and abs(stored_seconds - window_seconds) > 1e-6
        ):
            raise ValueError(
                f"{source}: windows span {stored_seconds:g} s, expected {window_seconds:g} s"
            )
        windows = MotionWindows(actions=tensor, hand_mask=hand_mask, window_seconds=stored_seconds)
    if not bool(torch.isfinite(windows.actions).all()):
        raise ValueError(f"{source}: actions contain NaN or infinity")
    return windows
