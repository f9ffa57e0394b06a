"""Configuration of the DCT + BPE baseline tokenizer (in the manner of FAST)."""

from __future__ import annotations

from dataclasses import dataclass

from metis_core.config import ComponentConfig

__all__ = ["DCTBPEConfig"]


@dataclass(frozen=True, kw_only=True)
class DCTBPEConfig(ComponentConfig):
    """DCT over time, scale and round, byte-pair encoding (Pertsch et al. 2025, "FAST").

    Args:
        window_len: Frames per action window.
        scale: Multiplier of the DCT coefficients before rounding; larger keeps more detail
            and costs more tokens.
        vocab_size: Target BPE vocabulary size.
        min_frequency: Minimum pair frequency for a BPE merge.
    """

    window_len: int = 16
    scale: float = 10.0
    vocab_size: int = 1024
    min_frequency: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window_len < 2:
            raise ValueError(f"window_len must be >= 2 frames, got {self.window_len}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.vocab_size < 16:
            raise ValueError(f"vocab_size must be >= 16, got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {self.min_frequency}")
