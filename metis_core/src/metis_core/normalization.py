"""Normalisation statistics for contract vectors, computed over present hands only."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

__all__ = ["NormMode", "NormStats", "Normalizer", "compute_stats"]

_STAT_NAMES = ("mean", "std", "min", "max", "q01", "q99")


class NormMode(str, enum.Enum):
    """How values are normalised; an explicit config field wherever normalisation happens."""

    IDENTITY = "identity"
    MEAN_STD = "mean_std"  # (x - mean) / std
    MIN_MAX = "min_max"  # [min, max] -> [-1, 1]
    Q01_Q99 = "q01_q99"  # [q01, q99] -> [-1, 1], robust to outliers (as in OpenVLA)

    @classmethod
    def parse(cls, value: NormMode | str) -> NormMode:
        """Read a mode from its name, with an error listing the valid names."""
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in cls)
            raise ValueError(
                f"unknown normalisation mode {value!r}; expected one of {valid}"
            ) from None


@dataclass(frozen=True)
class NormStats:
    """Per-dimension statistics of one feature (e.g. ``action``).

    Args:
        mean, std, min, max, q01, q99: ``(D,)`` float64 arrays.
        count: ``(D,)`` number of valid values behind each dimension.
    """

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    count: np.ndarray

    def __post_init__(self) -> None:
        dims = {np.asarray(getattr(self, f.name)).shape for f in fields(self)}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(
                f"NormStats: every statistic must be a 1-D array of one length, got shapes {dims}"
            )

    @property
    def dim(self) -> int:
        """Number of dimensions described."""
        return int(self.mean.shape[0])

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form, as in a LeRobot ``meta/stats.json`` entry."""
        return {f.name: np.asarray(getattr(self, f.name)).tolist() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: Naming missing statistics.
        """
        missing = [name for name in _STAT_NAMES if name not in data]
        if missing:
            raise ValueError(
                f"normalisation statistics lack {missing}; expected keys {list(_STAT_NAMES)}"
            )
        values = {
            name: np.asarray(data[name], dtype=np.float64).reshape(-1) for name in _STAT_NAMES
        }
        count = data.get("count")
        values["count"] = (
            np.asarray(count, dtype=np.float64).reshape(-1)
            if count is not None
            else np.zeros_like(values["mean"])
        )
        if values["count"].shape != values["mean"].shape:  # LeRobot stores a scalar count
            values["count"] = np.full_like(values["mean"], float(values["count"].reshape(-1)[0]))
        return cls(**values)

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        """Flat tensors for a safetensors file, keys ``{prefix}.{stat}``."""
        return {f"{prefix}.{f.name}": torch.from_numpy(np.asarray(getattr(self, f.name), dtype=np.float64)) for f in fields(self)}  # fmt: skip

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], prefix: str) -> NormStats:
        """Inverse of :meth:`to_tensors`."""
        try:
            return cls(
                **{f.name: tensors[f"{prefix}.{f.name}"].double().numpy() for f in fields(cls)}
            )
        except KeyError as err:
            raise ValueError(
                f"normalisation statistics {prefix!r} are incomplete: missing {err}"
            ) from None


def compute_stats(
    values: torch.Tensor | np.ndarray, valid: torch.Tensor | np.ndarray | None = None
) -> NormStats:
    """Statistics per dimension over the valid entries.

    Args:
        values: ``(N, D)``.
        valid: ``(N, D)`` bool; e.g. :func:`metis_core.contract.hand_value_mask` of the hand
            masks, so that missing hands (zeros) do not drag the statistics.

    Returns:
        :class:`NormStats`; a dimension with no valid value gets mean 0, std 1, min/max/q 0.
    """
    x = torch.as_tensor(np.asarray(values) if isinstance(values, np.ndarray) else values).double()
    if x.dim() != 2:
        raise ValueError(f"compute_stats: expected values of shape (N, D), got {tuple(x.shape)}")
    if valid is None:
        ok = torch.ones_like(x, dtype=torch.bool)
    else:
        ok = torch.as_tensor(np.asarray(valid) if isinstance(valid, np.ndarray) else valid).bool()
        if ok.shape != x.shape:
            raise ValueError(
                f"compute_stats: valid mask shape {tuple(ok.shape)} differs from values {tuple(x.shape)}"
            )
    if not bool(torch.isfinite(x[ok]).all()):
        raise ValueError("compute_stats: values contain NaN or infinity among the valid entries")
    count = ok.sum(0).double()
    safe_count = count.clamp_min(1)
    filled = torch.where(ok, x, torch.zeros_like(x))
    mean = filled.sum(0) / safe_count
    var = (torch.where(ok, x - mean, torch.zeros_like(x)) ** 2).sum(0) / safe_count
    std = var.sqrt()
    nan_filled = torch.where(ok, x, torch.full_like(x, float("nan")))
    has = count > 0
    lo = torch.where(ok, x, torch.full_like(x, float("inf"))).min(0).values
    hi = torch.where(ok, x, torch.full_like(x, float("-inf"))).max(0).values
    q = torch.nanquantile(nan_filled, torch.tensor([0.01, 0.99], dtype=torch.float64), dim=0) if x.shape[0] else torch.zeros(2, x.shape[1], dtype=torch.float64)  # fmt: skip
    zero = torch.zeros_like(mean)
    return NormStats(
        mean=torch.where(has, mean, zero).numpy(),
        std=torch.where(has, std, torch.ones_like(std)).numpy(),
        min=torch.where(has, lo, zero).numpy(),
        max=torch.where(has, hi, zero).numpy(),
        q01=torch.where(has, q[0], zero).numpy(),
        q99=torch.where(has, q[1], zero).numpy(),
        count=count.numpy(),
    )


class Normalizer:
    """Maps values to and from the normalised space of one mode.

    Dimensions whose spread is (near) zero are passed through shifted but unscaled, so that a
    constant dimension never divides by zero.

    Args:
        stats: Statistics of the feature.
        mode: A :class:`NormMode` or its name.
        eps: Spread below which a dimension is treated as constant.
    """

    def __init__(self, stats: NormStats, mode: NormMode | str, *, eps: float = 1e-8) -> None:
        self.stats = stats
        self.mode = NormMode.parse(mode)
        if self.mode is NormMode.MEAN_STD:
            offset, scale = stats.mean, stats.std
        elif self.mode is NormMode.MIN_MAX:
            offset, scale = (stats.max + stats.min) / 2, (stats.max - stats.min) / 2
        elif self.mode is NormMode.Q01_Q99:
            offset, scale = (stats.q99 + stats.q01) / 2, (stats.q99 - stats.q01) / 2
        else:
            offset, scale = np.zeros(stats.dim), np.ones(stats.dim)
        scale = np.where(np.abs(scale) < eps, 1.0, scale)
        self._offset = torch.as_tensor(offset, dtype=torch.float64)
        self._scale = torch.as_tensor(scale, dtype=torch.float64)

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.stats.dim:
            raise ValueError(
                f"Normalizer: expected (..., {self.stats.dim}) values, got {tuple(x.shape)}"
            )

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - offset) / scale`` in the dtype and device of ``x``."""
        self._check(x)
        return (x - self._offset.to(x)) / self._scale.to(x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        self._check(x)
        return x * self._scale.to(x) + self._offset.to(x)
