"""A cache of patch features keyed by (extractor, dataset, episode, frame).

Extracting DINOv2 features is by far the most expensive step of training the visual-dynamics
tokenizer, and every frame is used by many frame pairs and many epochs, so features are computed
once per frame and kept:

* in memory, as an LRU of whole episodes (``max_episodes_in_memory``);
* optionally on disk, under ``directory/<extractor fingerprint[:16]>/<dataset key>/`` with one
  safetensors file per episode (``episode_000012.safetensors`` holding ``frame_index (F,)``
  and ``features (F, N, C)``), written atomically and grown as more frames of the episode are
  requested. Features are stored as ``storage_dtype`` (float16 by default, half the disk of
  float32; relative rounding error below 1e-3) and returned as float32.

The extractor fingerprint covers its weights and preprocessing, and the dataset key covers the
dataset's path and ``meta/info.json``, so a different model or a rewritten dataset never reuses
stale features. Delete the directory to reclaim the space.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.io import CorruptFileError, load_safetensors, save_safetensors, write_json
from metis_tokenizers.features.base import FeatureExtractor

__all__ = ["FeatureCache", "dataset_cache_key"]


def dataset_cache_key(root: str | os.PathLike[str]) -> str:
    """A 16-hex-digit key of a LeRobot dataset directory (its resolved path and ``meta/info.json``).

    Raises:
        FileNotFoundError: If ``root/meta/info.json`` does not exist.
    """
    path = Path(root).resolve()
    info = path / "meta" / "info.json"
    if not info.is_file():
        raise FileNotFoundError(f"{info} is missing: {path} is not a LeRobot dataset")
    digest = hashlib.sha256(str(path).encode())
    digest.update(info.read_bytes())
    return digest.hexdigest()[:16]


class FeatureCache:
    """Patch features of dataset frames, computed once (see the module docstring).

    Args:
        directory: Where to keep features on disk; ``None`` keeps them in memory only.
        max_episodes_in_memory: Episodes held in the in-memory LRU.
        storage_dtype: dtype of the features on disk and in memory.

    Attributes:
        computed_frames: Frames whose features were computed by the extractor.
        loaded_frames: Frames served from memory or disk.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_episodes_in_memory: int = 64,
        storage_dtype: torch.dtype = torch.float16,
    ) -> None:
        if max_episodes_in_memory < 0:
            raise ValueError(f"max_episodes_in_memory must be >= 0, got {max_episodes_in_memory}")
        if not storage_dtype.is_floating_point:
            raise ValueError(f"storage_dtype must be a floating dtype, got {storage_dtype}")
        self.directory = Path(directory) if directory is not None else None
        self.max_episodes_in_memory = max_episodes_in_memory
        self.storage_dtype = storage_dtype
        self._memory: OrderedDict[tuple[str, str, int], tuple[torch.Tensor, torch.Tensor]] = (
            OrderedDict()
        )
        self.computed_frames = 0
        self.loaded_frames = 0

    def _path(self, fingerprint: str, dataset_key: str, episode: int) -> Path | None:
        if self.directory is None:
            return None
        return (
            self.directory / fingerprint[:16] / dataset_key / f"episode_{episode:06d}.safetensors"
        )

    def _lookup(
        self, key: tuple[str, str, int], path: Path | None, shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, *shape, dtype=self.storage_dtype))
        if path is None or not path.is_file():
            return empty
        tensors = load_safetensors(path)
        frames, features = tensors.get("frame_index"), tensors.get("features")
        if (
            frames is None
            or features is None
            or tuple(features.shape[1:]) != shape
            or features.shape[0] != frames.shape[0]
        ):
            raise CorruptFileError(
                f"{path}: expected tensors frame_index (F,) and features (F, {shape[0]}, "
                f"{shape[1]}); delete the file to recompute it"
            )
        return frames.long(), features.to(self.storage_dtype)

    def _remember(
        self, key: tuple[str, str, int], entry: tuple[torch.Tensor, torch.Tensor]
    ) -> None:
        if self.max_episodes_in_memory == 0:
            return
        self._memory[key] = entry
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_episodes_in_memory:
            self._memory.popitem(last=False)

    def features(
        self,
        extractor: FeatureExtractor,
        dataset_key: str,
        episode: int,
        frame_indices: Any,
        load_frames: Callable[[np.ndarray], Any],
    ) -> torch.Tensor:
        """Features of some frames of one episode, computing only those not cached yet.

        Args:
            extractor: The feature extractor (its fingerprint is part of the key).
            dataset_key: Identifies the dataset (see :func:`dataset_cache_key`).
            episode: Episode index within the dataset.
            frame_indices: ``(K,)`` frame numbers within the episode.
            load_frames: Called with the sorted frame numbers that are missing; returns their
                images ``(M, H, W, 3)`` uint8 in that order.

        Returns:
            ``(K, N, C)`` float32 features in the order of ``frame_indices``.
        """
        wanted = torch.as_tensor(np.asarray(frame_indices), dtype=torch.long).reshape(-1)
        if wanted.numel() and int(wanted.min()) < 0:
            raise ValueError(f"frame_indices must be >= 0, got {int(wanted.min())}")
        fingerprint = extractor.fingerprint
        key = (fingerprint, dataset_key, int(episode))
        path = self._path(fingerprint, dataset_key, int(episode))
        shape = (extractor.num_patches, extractor.feature_dim)
        frames, features = self._lookup(key, path, shape)
        missing = np.setdiff1d(wanted.numpy(), frames.numpy())
        if missing.size:
            images = load_frames(missing)
            fresh = extractor.extract(images)
            if tuple(fresh.shape) != (missing.size, *shape):
                raise ValueError(
                    f"load_frames returned {fresh.shape[0]} images for {missing.size} frames"
                )
            frames = torch.cat([frames, torch.from_numpy(missing).long()])
            features = torch.cat([features, fresh.to(self.storage_dtype)])
            order = torch.argsort(frames)
            frames, features = frames[order], features[order]
            self.computed_frames += int(missing.size)
            if path is not None:
                if not path.parent.parent.joinpath("extractor.json").exists() and hasattr(
                    extractor, "settings"
                ):
                    write_json(path.parent.parent / "extractor.json", extractor.settings())
                save_safetensors(path, {"frame_index": frames, "features": features})
        self.loaded_frames += int(wanted.numel() - missing.size)
        self._remember(key, (frames, features))
        rows = torch.searchsorted(frames, wanted)
        return features[rows].float()
