"""The feature-extractor interface: images in, frozen patch features out.

Shape legend: ``B`` images, ``H``/``W`` image height/width, ``N`` patches per image,
``C`` feature channels.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

__all__ = ["FeatureExtractor", "as_image_batch", "check_image_batch"]


def check_image_batch(images: Any) -> torch.Tensor:
    """Validate a batch of images without converting it.

    Args:
        images: ``(B, H, W, 3)`` uint8 (numpy or torch, as decoded from video), or
            ``(B, 3, H, W)`` floating values in ``[0, 1]``.

    Returns:
        The batch as a torch tensor (uint8 channels-last or float channels-first).

    Raises:
        ValueError: For another type, rank, channel count, dtype, an empty batch, non-finite
            values or floats outside ``[0, 1]``.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise ValueError(
            f"images: expected a (B, H, W, 3) uint8 array or a (B, 3, H, W) float tensor, got "
            f"{type(images).__name__}"
        )
    if images.dim() != 4:
        raise ValueError(
            f"images: expected 4 dimensions, (B, H, W, 3) uint8 or (B, 3, H, W) float, got shape "
            f"{tuple(images.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("images: the batch is empty")
    if images.dtype == torch.uint8:
        if images.shape[-1] != 3:
            raise ValueError(
                f"images: uint8 images must be channels-last (B, H, W, 3), got shape "
                f"{tuple(images.shape)}"
            )
        return images
    if not images.is_floating_point():
        raise ValueError(f"images: expected uint8 or floating values, got dtype {images.dtype}")
    if images.shape[1] != 3:
        raise ValueError(
            f"images: float images must be channels-first (B, 3, H, W) in [0, 1], got shape "
            f"{tuple(images.shape)}"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images: contain NaN or infinity")
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(
            f"images: float images must lie in [0, 1], got values in [{low:.3f}, {high:.3f}] "
            "(pass uint8 frames or divide by 255)"
        )
    return images


def as_image_batch(images: Any) -> torch.Tensor:
    """Validate a batch of images (see :func:`check_image_batch`) and return it as
    ``(B, 3, H, W)`` float32 in ``[0, 1]``."""
    images = check_image_batch(images)
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float() / 255.0
    return images.float().clamp(0.0, 1.0)


class FeatureExtractor(abc.ABC):
    """A frozen image encoder that returns one feature vector per image patch.

    Implementations are looked up by :attr:`name` in
    :data:`metis_tokenizers.features.FEATURE_EXTRACTORS` and saved as a directory with a
    ``feature_extractor.json`` whose ``type`` key names them.

    Attributes:
        name: Short name of the implementation (e.g. ``"dinov2"``).
    """

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def feature_dim(self) -> int:
        """``C``: channels of each patch feature."""

    @property
    @abc.abstractmethod
    def num_patches(self) -> int:
        """``N``: patches per image."""

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A hex digest of the weights and preprocessing; caches key their entries by it."""

    @abc.abstractmethod
    def extract(self, images: Any) -> torch.Tensor:
        """Patch features of a batch of images.

        Args:
            images: ``(B, H, W, 3)`` uint8 or ``(B, 3, H, W)`` float in ``[0, 1]``.

        Returns:
            ``(B, N, C)`` float32, computed without gradients.
        """

    @abc.abstractmethod
    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the extractor (weights and settings) to ``directory`` atomically."""

    def __call__(self, images: Any) -> torch.Tensor:
        """Same as :meth:`extract`."""
        return self.extract(images)
