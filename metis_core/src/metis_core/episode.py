"""One episode in the hand action contract, as dataset sources produce it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metis_core.contract import HAND_CONTRACT, ContractError, validate_hand_vector

__all__ = ["Episode", "Subtask"]


@dataclass(frozen=True)
class Subtask:
    """A subtask segment of an episode.

    Args:
        start: First frame (inclusive).
        end: Last frame (exclusive).
        text: What the hands do in this segment, e.g. ``"grasp the cup"``.
    """

    start: int
    end: int
    text: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(
                f"subtask {self.text!r}: expected 0 <= start < end, got [{self.start}, {self.end})"
            )


@dataclass
class Episode:
    """A trajectory of two hands with its annotations, at a fixed frame rate.

    Shapes: ``T`` frames.

    Args:
        state: ``(T, 48)`` float32 proprio/observed hand state in the contract.
        action: ``(T, 48)`` float32 commanded (robot) or next (human) hand pose in the contract.
        hand_mask: ``(T, 2)`` bool presence of (left, right).
        fps: Frame rate in Hz.
        instruction: Language instruction of the whole episode.
        subtasks: Subtask segments, sorted and non-overlapping.
        images: Camera name → ``(T, H, W, 3)`` uint8 frames (e.g. ``"ego"``), possibly empty.
        source: Registry name of the dataset source.
        embodiment: Registry name of the hand (``"human_mano"``, ``"inspire"``, ...).
        metadata: Anything else worth keeping (camera intrinsics, original ids).
    """

    state: np.ndarray
    action: np.ndarray
    hand_mask: np.ndarray
    fps: float
    instruction: str = ""
    subtasks: list[Subtask] = field(default_factory=list)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""
    embodiment: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Number of frames ``T``."""
        return int(self.state.shape[0])

    def validate(self) -> None:
        """Check shapes, dtypes, masks, subtasks and images against the contract.

        Raises:
            ContractError: Naming the first problem found.
        """
        if not self.fps > 0:
            raise ContractError(f"episode fps must be positive, got {self.fps}")
        for name in ("state", "action"):
            array = getattr(self, name)
            if not isinstance(array, np.ndarray) or array.ndim != 2:
                raise ContractError(f"episode {name}: expected a (T, 48) numpy array, got {getattr(array, 'shape', type(array).__name__)}")  # fmt: skip
            validate_hand_vector(array, hand_mask=self.hand_mask, name=f"episode {name}", contract=HAND_CONTRACT, require_float32=True)  # fmt: skip
        if self.action.shape[0] != self.length:
            raise ContractError(
                f"episode action has {self.action.shape[0]} frames but state has {self.length}"
            )
        previous_end = 0
        for subtask in sorted(self.subtasks, key=lambda s: s.start):
            if subtask.start < previous_end or subtask.end > self.length:
                raise ContractError(
                    f"subtask {subtask.text!r} [{subtask.start}, {subtask.end}) overlaps another or "
                    f"runs past the episode's {self.length} frames"
                )
            previous_end = subtask.end
        for camera, frames in self.images.items():
            if (
                not isinstance(frames, np.ndarray)
                or frames.ndim != 4
                or frames.shape[-1] != 3
                or frames.dtype != np.uint8
            ):
                raise ContractError(f"episode images[{camera!r}]: expected (T, H, W, 3) uint8, got {getattr(frames, 'shape', None)} {getattr(frames, 'dtype', None)}")  # fmt: skip
            if frames.shape[0] != self.length:
                raise ContractError(
                    f"episode images[{camera!r}] has {frames.shape[0]} frames but state has {self.length}"
                )
