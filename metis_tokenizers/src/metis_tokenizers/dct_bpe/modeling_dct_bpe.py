"""DCT + BPE baseline tokenizer over start-relative motion features, in the manner of FAST.

Frames ``1 .. T-1`` of the start-relative window (see :mod:`metis_tokenizers._common`) are
normalised per dimension to about ``[-1, 1]`` (fitted 1st/99th percentiles), transformed with an
orthonormal DCT-II over time, multiplied by ``scale`` and rounded. The integer coefficients are
flattened frequency-major (all dimensions' lowest frequency first), written as one character
each, and compressed with byte-pair encoding from the Hugging Face ``tokenizers`` library. The
token count varies from window to window (``tokens_per_window`` is ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, trainers

from metis_core.contract import ACTION_DIM, hand_value_mask
from metis_core.interfaces import Tokenizer
from metis_core.io import CorruptFileError
from metis_tokenizers._common import (
    check_start,
    check_windows,
    fit_windows,
    from_relative,
    to_relative,
    zero_motion_frame,
)
from metis_tokenizers.dct_bpe.configuration_dct_bpe import DCTBPEConfig

__all__ = ["DCTBPE", "dct_matrix"]

# Integer coefficients are written as characters from this code point on (a block of CJK
# ideographs: printable, and single characters to BPE).
_CHAR_BASE = 0x4E00


def dct_matrix(length: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``(length, length)``: ``coefficients = M @ signal``."""
    n = torch.arange(length, dtype=torch.float64)
    k = n[:, None]
    matrix = torch.cos(math.pi / length * (n[None, :] + 0.5) * k)
    matrix[0] *= math.sqrt(1.0 / length)
    matrix[1:] *= math.sqrt(2.0 / length)
    return matrix.float()


class DCTBPE(Tokenizer):
    """``(B, T, 48)`` windows ↔ variable-length lists of BPE ids.

    Args:
        config: A :class:`DCTBPEConfig`. Call :meth:`fit` on training windows before use.
    """

    name: ClassVar[str] = "dct_bpe"
    config_class: ClassVar[type[DCTBPEConfig]] = DCTBPEConfig
    config: DCTBPEConfig

    def __init__(self, config: DCTBPEConfig) -> None:
        self.config = config
        frames = config.window_len - 1
        self.dct = dct_matrix(frames)
        self.low = torch.full((ACTION_DIM,), -1.0)
        self.high = torch.full((ACTION_DIM,), 1.0)
        self.max_abs = 0
        self.bpe: HFTokenizer | None = None

    # -- interface ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Size of the fitted BPE vocabulary (the configured target before fitting)."""
        return self.bpe.get_vocab_size() if self.bpe is not None else self.config.vocab_size

    @property
    def tokens_per_window(self) -> None:
        """``None``: the count varies with the window."""
        return None

    @property
    def values_per_window(self) -> int:
        """The number of integer coefficients per window before BPE, ``(T-1) × 48``."""
        return (self.config.window_len - 1) * ACTION_DIM

    # -- coefficients ------------------------------------------------------------------------

    def _coefficients(self, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        values = to_relative(actions, mask)[:, 1:]
        unit = 2.0 * (values - self.low) / (self.high - self.low) - 1.0
        unit = unit * hand_value_mask(mask)[:, None, :].float()
        coefficients = torch.einsum("kt,btd->bkd", self.dct, unit)
        return torch.round(coefficients * self.config.scale).long()

    def _to_text(self, integers: torch.Tensor) -> Iterator[str]:
        clipped = integers.clamp(-self.max_abs, self.max_abs) + self.max_abs + _CHAR_BASE
        for row in clipped.reshape(integers.shape[0], -1).tolist():
            yield "".join(map(chr, row))

    def fit(self, actions: Any, hand_mask: Any = None) -> DCTBPE:
        """Fit the normalisation range and train the BPE vocabulary; returns ``self``.

        Args:
            actions: ``(N, T, 48)`` training windows.
            hand_mask: ``(N, 2)`` or ``(N, T, 2)``.
        """
        x, mask = fit_windows(actions, hand_mask, self.config.window_len)
        values = to_relative(x, mask)[:, 1:].reshape(-1, ACTION_DIM).double()
        self.low = torch.quantile(values, 0.01, dim=0).float()
        self.high = torch.maximum(torch.quantile(values, 0.99, dim=0).float(), self.low + 1e-6)
        integers = self._coefficients(x, mask)
        self.max_abs = int(integers.abs().max())
        alphabet = [chr(_CHAR_BASE + i) for i in range(2 * self.max_abs + 1)]
        bpe = HFTokenizer(models.BPE())
        bpe.decoder = decoders.BPEDecoder(suffix="")
        trainer = trainers.BpeTrainer(
            vocab_size=max(self.config.vocab_size, len(alphabet)),
            min_frequency=self.config.min_frequency,
            initial_alphabet=alphabet,
            show_progress=False,
            max_token_length=64,
        )
        bpe.train_from_iterator(self._to_text(integers), trainer=trainer, length=x.shape[0])
        self.bpe = bpe
        return self

    def _require_fitted(self) -> HFTokenizer:
        if self.bpe is None:
            raise ValueError("dct_bpe: call fit(windows) (or load a fitted tokenizer) first")
        return self.bpe

    def encode(self, actions: Any, hand_mask: Any = None) -> list[list[int]]:
        """Windows ``(B, T, 48)`` to one list of BPE ids per window (lengths vary)."""
        bpe = self._require_fitted()
        x, mask = check_windows(actions, hand_mask, self.config.window_len)
        texts = list(self._to_text(self._coefficients(x, mask)))
        return [encoding.ids for encoding in bpe.encode_batch(texts)]

    def decode(self, codes: Any, start: Any = None, hand_mask: Any = None) -> torch.Tensor:
        """Lists of BPE ids back to ``(B, T, 48)`` windows, given the ``(B, 48)`` start state.

        A sequence that decodes to too few or too many coefficients (possible for ids a policy
        generated) is zero-padded or cut, as FAST does. ``hand_mask (B, 2)``, as given to
        :meth:`encode`, marks missing hands (they come back as zeros); without it a hand whose 24
        start values are all zero is missing.
        """
        bpe = self._require_fitted()
        if isinstance(codes, torch.Tensor):
            if codes.dim() != 2 or codes.is_floating_point() or codes.dtype == torch.bool:
                raise ValueError(
                    f"codes: expected a list of id lists or a (B, N) integer tensor, got "
                    f"{tuple(codes.shape)} {codes.dtype}"
                )
            codes = codes.tolist()
        if not isinstance(codes, (list, tuple)) or not all(
            isinstance(row, (list, tuple)) for row in codes
        ):
            raise ValueError("codes: expected one list of integer ids per window")
        size = self.vocab_size
        for row in codes:
            for token in row:
                if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < size:
                    raise ValueError(f"codes: ids must be integers in [0, {size}), got {token!r}")
        if not codes:
            raise ValueError("codes: the batch is empty")
        start_state, present = check_start(start, len(codes), name=self.name, hand_mask=hand_mask)
        count = self.values_per_window
        rows = []
        for row in codes:
            text = "".join(bpe.id_to_token(token) for token in row)
            integers = [ord(char) - _CHAR_BASE - self.max_abs for char in text][:count]
            integers += [0] * (count - len(integers))
            rows.append(integers)
        coefficients = torch.tensor(rows, dtype=torch.float32).view(len(codes), -1, ACTION_DIM)
        unit = torch.einsum("kt,bkd->btd", self.dct, coefficients / self.config.scale)
        values = self.low + (unit + 1.0) * 0.5 * (self.high - self.low)
        features = torch.cat([zero_motion_frame(len(codes)), values], 1)
        return from_relative(features, start_state, present)

    # -- save / load -------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The fitted range, coefficient bound and BPE model (its JSON as uint8 bytes)."""
        text = self.bpe.to_str() if self.bpe is not None else ""
        return {
            "low": self.low,
            "high": self.high,
            "max_abs": torch.tensor(self.max_abs),
            "bpe_json": torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8),
        }

    def load_state_tensors(
        self, tensors: Mapping[str, torch.Tensor], *, strict: bool = True
    ) -> None:
        """Restore what :meth:`state_tensors` wrote."""
        if set(tensors) != {"low", "high", "max_abs", "bpe_json"}:
            raise CorruptFileError(
                f"dct_bpe: expected tensors low, high, max_abs, bpe_json; got {sorted(tensors)}"
            )
        self.low = tensors["low"].float()
        self.high = tensors["high"].float()
        self.max_abs = int(tensors["max_abs"])
        raw = bytes(tensors["bpe_json"].tolist())
        self.bpe = HFTokenizer.from_str(raw.decode("utf-8")) if raw else None
