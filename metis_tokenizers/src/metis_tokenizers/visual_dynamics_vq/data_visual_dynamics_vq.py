"""Frame pairs ``(t, t+k)`` with their motion windows, read from a LeRobot dataset.

For every episode and every start frame ``t`` (every ``stride`` frames, with ``t + k`` inside
the episode) a pair holds the patch features of frames ``t`` and ``t+k`` and the motion window
between them: the ``k`` contract actions ``action[t : t+k]`` (the last one is the pose at frame
``t+k``), resampled in time to the motion tokenizer's window length (linear for positions, slerp
for rotations; no resampling when ``k`` equals it). Frame features come from a
:class:`~metis_tokenizers.features.base.FeatureExtractor` through a
:class:`~metis_tokenizers.features.cache.FeatureCache`.

Reading the dataset (video decoding) uses ``metis_datasets.LeRobotDataset``, imported only here:
``pip install metis-datasets`` (or ``'metis-tokenizers[datasets]'``).

Shape legend: ``P`` pairs, ``F`` distinct frames, ``N`` patches, ``C`` channels, ``T`` frames
of the motion window.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from metis_core._optional import require
from metis_core.contract import ACTION_DIM
from metis_core.resample import resample_hand_vectors
from metis_tokenizers.features import FeatureCache, FeatureExtractor, dataset_cache_key

__all__ = ["FramePairs", "load_frame_pairs", "motion_window"]


@dataclass
class FramePairs:
    """Training or evaluation pairs for the visual-dynamics tokenizer.

    Attributes:
        frame_features: ``(F, N, C)`` patch features of every frame used (float16 or float32).
        pair_frames: ``(P, 2)`` int64 rows of ``frame_features`` for frames ``t`` and ``t+k``.
        actions: ``(P, T, 48)`` motion windows.
        hand_mask: ``(P, 2)`` bool, a hand present over the whole window.
        episode: ``(P,)`` int64 episode of each pair.
        start_frame: ``(P,)`` int64 frame ``t`` of each pair within its episode.
        frame_gap: ``k``.
    """

    frame_features: torch.Tensor
    pair_frames: torch.Tensor
    actions: torch.Tensor
    hand_mask: torch.Tensor
    episode: torch.Tensor
    start_frame: torch.Tensor
    frame_gap: int

    def __len__(self) -> int:
        return int(self.pair_frames.shape[0])

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """``features_t, features_tk, actions, hand_mask`` of the pairs ``index`` (float32)."""
        rows = self.pair_frames[index]
        return (
            self.frame_features[rows[:, 0]].float(),
            self.frame_features[rows[:, 1]].float(),
            self.actions[index],
            self.hand_mask[index],
        )


def motion_window(
    actions: np.ndarray, hand_mask: np.ndarray, fps: float, window_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample ``k`` consecutive actions to ``window_len`` frames spanning the same time.

    Args:
        actions: ``(k, 48)`` contract actions.
        hand_mask: ``(k, 2)`` presence.
        fps: Rate of the actions.
        window_len: Frames of the output window.

    Returns:
        ``(window_len, 48)`` float32 actions and ``(2,)`` presence over the whole window.
    """
    vectors = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.float32))
    mask = torch.from_numpy(np.asarray(hand_mask, dtype=bool))
    present = mask.all(0)
    if vectors.shape[0] == window_len:
        out = vectors.clone()
    else:
        times = torch.arange(vectors.shape[0], dtype=torch.float64) / fps
        target = torch.linspace(0.0, float(times[-1]), window_len, dtype=torch.float64)
        target[-1] = times[-1]
        out = resample_hand_vectors(
            vectors.double(), times, target_times=target, hand_mask=mask
        ).vectors.float()
    for side, columns in ((0, [*range(0, 9), *range(18, 33)]), (1, [*range(9, 18), *range(33, 48)])):  # fmt: skip
        if not bool(present[side]):
            out[:, columns] = 0.0
    return out, present


def load_frame_pairs(
    dataset: str | os.PathLike[str],
    extractor: FeatureExtractor,
    *,
    frame_gap: int,
    window_len: int,
    stride: int = 1,
    episodes: list[int] | None = None,
    cache: FeatureCache | None = None,
    image_key: str = "observation.images.ego",
    storage_dtype: torch.dtype = torch.float16,
    progress: bool = True,
) -> FramePairs:
    """Build frame pairs from a LeRobot dataset with ego video and 48-D contract actions.

    Args:
        dataset: LeRobot v3.0 / v2.1 dataset directory.
        extractor: Computes the patch features.
        frame_gap: ``k``, frames between the two images of a pair.
        window_len: Frames of the motion window (the motion tokenizer's ``window_len``).
        stride: Frames between consecutive start frames ``t``.
        episodes: Episode positions to use (default: all).
        cache: Feature cache (default: a fresh in-memory one storing ``storage_dtype``). A
            cache that stores float16 rounds the features to float16 (relative error < 1e-3)
            whatever ``storage_dtype`` is.
        image_key: Video feature of the ego camera.
        storage_dtype: dtype of :attr:`FramePairs.frame_features` (float16 halves the memory).
        progress: Show a progress bar over episodes.

    Raises:
        FileNotFoundError: If the dataset does not exist.
        ValueError: For a bad ``frame_gap``/``stride``, a dataset without that video or without
            contract actions, or one whose episodes are all shorter than ``frame_gap + 1``.
    """
    if frame_gap < 1 or stride < 1 or window_len < 2:
        raise ValueError(
            f"frame_gap and stride must be >= 1 and window_len >= 2, got frame_gap={frame_gap}, "
            f"stride={stride}, window_len={window_len}"
        )
    root = Path(dataset)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist (expected a LeRobot dataset directory)")
    datasets = require(
        "metis_datasets", install="metis-datasets", feature="reading frame pairs from LeRobot data"
    )
    ds = datasets.LeRobotDataset(root)
    ds.require_contract()
    if image_key not in ds.video_keys:
        raise ValueError(
            f"{root}: has no video feature {image_key!r} (videos: {ds.video_keys}); the "
            "visual-dynamics tokenizer needs ego-camera frames"
        )
    cache = cache if cache is not None else FeatureCache(storage_dtype=storage_dtype)
    key = dataset_cache_key(root)
    actions_all, mask_all = ds.action, ds.hand_mask
    chosen = list(range(len(ds.episodes))) if episodes is None else list(episodes)
    frame_parts: list[torch.Tensor] = []
    pair_rows, windows, presents, pair_episode, pair_start = [], [], [], [], []
    offset = 0
    for position in tqdm(chosen, desc="frame pairs", disable=not progress):
        if not 0 <= position < len(ds.episodes):
            raise ValueError(f"episode {position} is out of range (dataset has {len(ds.episodes)})")
        record = ds.episodes[position]
        length = int(record["length"])
        starts = np.arange(0, length - frame_gap, stride)
        if starts.size == 0:
            continue
        frames = np.unique(np.concatenate([starts, starts + frame_gap]))
        features = cache.features(
            extractor,
            key,
            int(record["episode_index"]),
            frames,
            lambda missing, position=position: ds.frames(position, missing, key=image_key),
        )
        frame_parts.append(features.to(storage_dtype))
        row_of = {int(f): offset + i for i, f in enumerate(frames)}
        offset += len(frames)
        begin = int(record["from"])
        for t in starts:
            rows = slice(begin + int(t), begin + int(t) + frame_gap)
            window, present = motion_window(actions_all[rows], mask_all[rows], ds.fps, window_len)
            windows.append(window)
            presents.append(present)
            pair_rows.append((row_of[int(t)], row_of[int(t) + frame_gap]))
            pair_episode.append(position)
            pair_start.append(int(t))
    if not pair_rows:
        raise ValueError(
            f"{root}: no episode is longer than frame_gap={frame_gap} frames; use a smaller "
            "frame_gap"
        )
    actions = torch.stack(windows)
    if actions.shape[-1] != ACTION_DIM or not bool(torch.isfinite(actions).all()):
        raise ValueError(f"{root}: motion windows are not finite 48-D contract actions")
    return FramePairs(
        frame_features=torch.cat(frame_parts),
        pair_frames=torch.tensor(pair_rows, dtype=torch.long),
        actions=actions,
        hand_mask=torch.stack(presents),
        episode=torch.tensor(pair_episode, dtype=torch.long),
        start_frame=torch.tensor(pair_start, dtype=torch.long),
        frame_gap=frame_gap,
    )
