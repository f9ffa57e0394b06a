"""Loading windows of contract actions for training and evaluation.

``--data PATH`` accepts:

* an array file of windows: ``.npy`` (``actions`` only), ``.npz`` or ``.safetensors`` with
  ``actions (N, T, 48)`` and optionally ``hand_mask (N, 2)`` or ``(N, T, 2)``;
* a LeRobot v3 dataset directory: ``data/chunk-*/file-*.parquet`` with columns ``action``
  (48 floats) and ``episode_index``, cut into windows per episode (needs ``pyarrow``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from metis_core.contract import ACTION_DIM
from metis_core.io import load_safetensors, save_safetensors
from metis_tokenizers.motion_generator import MotionWindows

__all__ = ["load_windows", "save_windows", "windows_from_episodes"]


def save_windows(path: str | os.PathLike[str], windows: MotionWindows) -> Path:
    """Write windows as ``.safetensors`` or ``.npz`` (by suffix)."""
    target = Path(path)
    if target.suffix == ".npz":
        np.savez(target, actions=windows.actions.numpy(), hand_mask=windows.hand_mask.numpy())
    elif target.suffix == ".safetensors":
        save_safetensors(
            target,
            {"actions": windows.actions, "hand_mask": windows.hand_mask.to(torch.uint8)},
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


def _read_lerobot(directory: Path, window_len: int, stride: int | None) -> MotionWindows:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            "reading a LeRobot dataset directory needs pyarrow: pip install pyarrow "
            "(or pip install 'metis-tokenizers[lerobot]')"
        ) from err
    files = sorted(directory.glob("data/chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{directory} holds no data/chunk-*/file-*.parquet files (expected a LeRobot v3 dataset)"
        )
    actions, episodes = [], []
    for file in files:
        table = pq.read_table(file, columns=["action", "episode_index"])
        actions.append(np.asarray(table.column("action").to_pylist(), dtype=np.float32))
        episodes.append(np.asarray(table.column("episode_index").to_pylist()))
    frames = np.concatenate(actions)
    if frames.ndim != 2 or frames.shape[1] != ACTION_DIM:
        raise ValueError(
            f"{directory}: column 'action' must hold {ACTION_DIM} floats per frame, got "
            f"shape {frames.shape}"
        )
    windows = windows_from_episodes(frames, np.concatenate(episodes), window_len, stride)
    tensor = torch.from_numpy(windows)
    # A hand is present in a window if any of its values is non-zero.
    left = torch.cat([tensor[..., 0:9], tensor[..., 18:33]], -1).abs().sum((1, 2)) > 0
    right = torch.cat([tensor[..., 9:18], tensor[..., 33:48]], -1).abs().sum((1, 2)) > 0
    present = torch.stack([left, right], -1)
    return MotionWindows(actions=tensor, hand_mask=present)


def load_windows(
    path: str | os.PathLike[str], *, window_len: int | None = None, stride: int | None = None
) -> MotionWindows:
    """Load windows from an array file or a LeRobot v3 dataset directory.

    Args:
        path: ``.npy``, ``.npz``, ``.safetensors`` or a LeRobot dataset directory.
        window_len: Frames per window to cut from a LeRobot dataset (default 16); for array
            files, checked against the stored windows if given.
        stride: Frames between window starts in a LeRobot dataset (default: ``window_len``).

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
        windows = _read_lerobot(source, window_len or 16, stride)
    else:
        mask = None
        if source.suffix == ".npy":
            actions = np.load(source, allow_pickle=False)
        elif source.suffix == ".npz":
            with np.load(source, allow_pickle=False) as data:
                if "actions" not in data:
                    raise ValueError(f"{source}: expected an array named 'actions'")
                actions = data["actions"]
                mask = data.get("hand_mask", None)
        elif source.suffix == ".safetensors":
            data = load_safetensors(source)
            if "actions" not in data:
                raise ValueError(f"{source}: expected a tensor named 'actions'")
            actions = data["actions"].numpy()
            mask = data["hand_mask"].numpy() if "hand_mask" in data else None
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
        windows = MotionWindows(actions=tensor, hand_mask=hand_mask)
    if not bool(torch.isfinite(windows.actions).all()):
        raise ValueError(f"{source}: actions contain NaN or infinity")
    return windows
