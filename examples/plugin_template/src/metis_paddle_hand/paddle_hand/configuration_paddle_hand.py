"""Configuration of the paddle hand."""

from __future__ import annotations

from dataclasses import dataclass

from metis_core import ComponentConfig


@dataclass(frozen=True, kw_only=True)
class PaddleHandConfig(ComponentConfig):
    """Geometry of a hand whose fingers are rigid links flexing about one joint each.

    Args:
        side: ``"left"`` or ``"right"``.
        finger_lengths: Length of each finger link (thumb, index, middle, ring, little), metres.
        max_flexion: Upper joint limit of each finger, radians (the lower limit is 0 = straight).
    """

    side: str = "right"
    finger_lengths: tuple[float, float, float, float, float] = (0.06, 0.08, 0.09, 0.085, 0.07)
    max_flexion: tuple[float, float, float, float, float] = (1.2, 1.5, 1.5, 1.5, 1.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        if any(length <= 0 for length in self.finger_lengths):
            raise ValueError(f"finger_lengths must be positive, got {self.finger_lengths}")
        if any(not 0 < limit <= 3.0 for limit in self.max_flexion):
            raise ValueError(f"max_flexion must be in (0, 3] radians, got {self.max_flexion}")
