"""Conformance checks for tokenizers: shapes, round trips, determinism and bad inputs."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from metis_core.contract import ACTION_DIM, LEFT, RIGHT, pack_hands
from metis_core.interfaces import Tokenizer
from metis_core.rotations import random_rotation_matrices
from metis_core.testing.component import ComponentConformance


def make_windows(count: int, window_len: int, *, seed: int = 0) -> torch.Tensor:
    """``(count, window_len, 48)`` smooth random hand windows (metres) for conformance tests."""
    generator = torch.Generator().manual_seed(seed)
    times = torch.linspace(0, 1, window_len)[None, :, None, None]
    start = torch.rand(count, 1, 2, 3, generator=generator) * 0.4
    velocity = (torch.rand(count, 1, 2, 3, generator=generator) - 0.5) * 0.3
    position = start + velocity * times
    rotation = random_rotation_matrices(count * 2, generator=generator).float()
    rotation = rotation.view(count, 1, 2, 3, 3).expand(count, window_len, 2, 3, 3)
    tips = torch.rand(count, 1, 2, 5, 3, generator=generator) * 0.1 + torch.tensor([0, 0, 0.1])
    closing = (torch.rand(count, 1, 2, 5, 3, generator=generator) - 0.5) * 0.04
    tips = tips + closing * times[..., None]
    return pack_hands(position.expand(count, window_len, 2, 3), rotation, tips).float()


class TokenizerConformance(ComponentConformance):
    """Behaviour every tokenizer shares; subclass and set ``component_name``.

    Subclasses may override :meth:`prepare` to fit or train the tokenizer on windows before the
    behavioural checks (the default calls ``fit(actions)`` if the tokenizer has one).

    Attributes:
        window_len: Frames per window the tokenizer is built for.
    """

    kind: ClassVar[str] = "tokenizers"
    window_len: ClassVar[int] = 16

    def prepare(self, tokenizer: Tokenizer, actions: torch.Tensor) -> Tokenizer:
        """Make ``tokenizer`` ready to encode (fit it); returns the tokenizer to test."""
        if hasattr(tokenizer, "fit"):
            tokenizer.fit(actions)
        return tokenizer

    @pytest.fixture
    def windows(self) -> torch.Tensor:
        return make_windows(64, self.window_len)

    @pytest.fixture
    def ready(self, component: Tokenizer, windows: torch.Tensor) -> Tokenizer:
        return self.prepare(component, windows)

    def test_is_a_tokenizer(self, component: Tokenizer) -> None:
        assert isinstance(component, Tokenizer)
        assert component.vocab_size > 0
        assert component.tokens_per_window is None or component.tokens_per_window > 0

    def test_encode_shape_and_range(self, ready: Tokenizer, windows: torch.Tensor) -> None:
        codes = ready.encode(windows[:5])
        rows = codes.tolist() if isinstance(codes, torch.Tensor) else codes
        assert len(rows) == 5
        if ready.tokens_per_window is not None:
            assert isinstance(codes, torch.Tensor)
            assert codes.dtype == torch.int64
            assert tuple(codes.shape) == (5, ready.tokens_per_window)
        for row in rows:
            assert all(0 <= token < ready.vocab_size for token in row)

    def test_decode_shape_and_determinism(self, ready: Tokenizer, windows: torch.Tensor) -> None:
        codes = ready.encode(windows[:5])
        first = ready.decode(codes, windows[:5, 0])
        second = ready.decode(codes, windows[:5, 0])
        assert tuple(first.shape) == (5, self.window_len, ACTION_DIM)
        assert torch.equal(first, second)
        assert bool(torch.isfinite(first).all())

    def test_save_load_encode_identical(
        self, ready: Tokenizer, windows: torch.Tensor, tmp_path: Path
    ) -> None:
        ready.save_pretrained(tmp_path / "tok")
        loaded = type(ready).from_pretrained(tmp_path / "tok")
        before, after = ready.encode(windows[:8]), loaded.encode(windows[:8])
        if isinstance(before, torch.Tensor):
            assert torch.equal(before, after)
        else:
            assert before == after
        assert torch.equal(
            ready.decode(before, windows[:8, 0]), loaded.decode(after, windows[:8, 0])
        )

    @pytest.mark.parametrize(
        "bad",
        [
            torch.zeros(2, 48),
            torch.zeros(2, 3, 48),
            torch.zeros(2, 16, 47),
        ],
        ids=["rank2", "frames", "width"],
    )
    def test_encode_rejects_bad_shapes(self, ready: Tokenizer, bad: torch.Tensor) -> None:
        with pytest.raises(ValueError, match="shape"):
            ready.encode(bad)

    def test_encode_rejects_nan(self, ready: Tokenizer, windows: torch.Tensor) -> None:
        bad = windows[:2].clone()
        bad[1, 3, RIGHT.fingertips.start] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            ready.encode(bad)

    def test_one_hand_windows(self, ready: Tokenizer, windows: torch.Tensor) -> None:
        mask = torch.tensor([[True, False], [False, True]])
        actions = windows[:2].clone()
        actions[0, :, list(RIGHT.indices)] = 0.0
        actions[1, :, list(LEFT.indices)] = 0.0
        codes = ready.encode(actions, mask)
        decoded = ready.decode(codes, actions[:, 0])
        assert bool((decoded[0, :, list(RIGHT.indices)] == 0).all())
        assert bool((decoded[1, :, list(LEFT.indices)] == 0).all())

    def test_decode_requires_start(self, ready: Tokenizer, windows: torch.Tensor) -> None:
        codes = ready.encode(windows[:2])
        with pytest.raises(ValueError, match="start"):
            ready.decode(codes, torch.zeros(3, ACTION_DIM))
