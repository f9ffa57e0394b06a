"""Uniform binning baseline (RT-2 / OpenVLA style) over start-relative motion features.

Every value of frames ``1 .. T-1`` of the start-relative window (see
:mod:`metis_tokenizers._common`) is clipped to the fitted ``[min, max]`` of its dimension and
mapped to one of ``num_bins`` uniform bins: ``(T-1) × 48`` tokens per window (720 by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from metis_core.contract import ACTION_DIM
from metis_core.interfaces import Tokenizer
from metis_core.io import CorruptFileError
from metis_tokenizers._common import (
    check_integer_codes,
    check_start,
    check_windows,
    fit_windows,
    from_relative,
    to_relative,
    zero_motion_frame,
)
from metis_tokenizers.binning.configuration_binning import BinningConfig

__all__ = ["Binning"]


class Binning(Tokenizer):
    """``(B, T, 48)`` windows ↔ ``(B, (T-1)·48)`` bin ids.

    Args:
        config: A :class:`BinningConfig`. Call :meth:`fit` on training windows before use.
    """

    name: ClassVar[str] = "binning"
    config_class: ClassVar[type[BinningConfig]] = BinningConfig
    config: BinningConfig

    def __init__(self, config: BinningConfig) -> None:
        self.config = config
        self.low = torch.full((ACTION_DIM,), -1.0)
        self.high = torch.full((ACTION_DIM,), 1.0)
        self.fitted = False

    @property
    def vocab_size(self) -> int:
        """``num_bins``."""
        return self.config.num_bins

    @property
    def tokens_per_window(self) -> int:
        """``(window_len - 1) × 48``: frame 0 is the start state itself."""
        return (self.config.window_len - 1) * ACTION_DIM

    def fit(self, actions: Any, hand_mask: Any = None) -> Binning:
        """Fit the per-value range on ``(N, T, 48)`` training windows; returns ``self``."""
        x, mask = fit_windows(actions, hand_mask, self.config.window_len)
        values = to_relative(x, mask)[:, 1:].reshape(-1, ACTION_DIM)
        self.low = values.min(0).values.float()
        self.high = torch.maximum(values.max(0).values.float(), self.low + 1e-6)
        self.fitted = True
        return self

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ValueError(
                "binning: this tokenizer is not fitted (its value ranges are unknown); call "
                "fit(training_windows) first or load a fitted one with Binning.from_pretrained(path)"
            )

    def encode(self, actions: Any, hand_mask: Any = None) -> torch.Tensor:
        """Windows ``(B, T, 48)`` to ``(B, tokens_per_window)`` int64 bin ids.

        Raises:
            ValueError: If not fitted, or for invalid windows or masks.
        """
        self._require_fitted()
        x, mask = check_windows(actions, hand_mask, self.config.window_len)
        values = to_relative(x, mask)[:, 1:]
        unit = ((values - self.low) / (self.high - self.low)).clamp(0.0, 1.0)
        bins = torch.round(unit * (self.config.num_bins - 1)).long()
        return bins.reshape(x.shape[0], -1)

    def decode(self, codes: Any, start: Any = None, hand_mask: Any = None) -> torch.Tensor:
        """Bin ids back to ``(B, T, 48)`` windows, given the ``(B, 48)`` start state.

        Args:
            codes: ``(B, tokens_per_window)`` integer ids.
            start: ``(B, 48)`` state at the first frame.
            hand_mask: ``(B, 2)`` presence, as given to :meth:`encode`; missing hands come back
                as zeros. ``None``: a hand whose 24 start values are all zero is missing.

        Raises:
            ValueError: If not fitted, or for invalid codes, start or mask.
        """
        self._require_fitted()
        codes = check_integer_codes(codes, self.tokens_per_window, self.vocab_size)
        start_state, present = check_start(
            start, codes.shape[0], name=self.name, hand_mask=hand_mask
        )
        unit = codes.float().view(codes.shape[0], -1, ACTION_DIM) / (self.config.num_bins - 1)
        values = self.low + unit * (self.high - self.low)
        features = torch.cat([zero_motion_frame(codes.shape[0]), values], 1)
        return from_relative(features, start_state, present)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted range."""
        return {"low": self.low, "high": self.high, "fitted": torch.tensor(self.fitted)}

    def load_state_tensors(
        self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True
    ) -> None:
        """Restore the fitted range."""
        if set(tensors) != {"low", "high", "fitted"} or tensors["low"].shape != (ACTION_DIM,):
            raise CorruptFileError(
                f"binning: expected tensors low/high ({ACTION_DIM},) and fitted, got "
                f"{sorted(tensors)}"
            )
        self.low = tensors["low"].float()
        self.high = tensors["high"].float()
        self.fitted = bool(tensors["fitted"])
