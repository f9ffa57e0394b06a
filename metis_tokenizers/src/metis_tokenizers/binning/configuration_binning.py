"""Configuration of the uniform-binning baseline tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

from metis_core.config import ComponentConfig

__all__ = ["BinningConfig"]


@dataclass(frozen=True, kw_only=True)
class BinningConfig(ComponentConfig):
    """Per-value uniform binning, as in RT-2 and OpenVLA.

    Args:
        window_len: Frames per action window.
        num_bins: Uniform bins per value between the fitted minimum and maximum.
    """

    window_len: int = 16
    num_bins: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window_len < 2:
            raise ValueError(f"window_len must be >= 2 frames, got {self.window_len}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {self.num_bins}")
