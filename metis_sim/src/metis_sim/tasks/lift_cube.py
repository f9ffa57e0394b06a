"""Lift cube: pick the object up and hold it (a pre-training task, not one of the paper's four)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import TABLE_TOP, EnvConfig
from metis_sim.tasks.pick_place import CUBE_HALF, PickPlaceEnv

__all__ = ["LIFT_HEIGHT", "LiftCubeConfig", "LiftCubeEnv"]

#: Height of the object's bottom above the table that counts as lifted (metres).
LIFT_HEIGHT = 0.06
#: Time the object must stay lifted and held (seconds).
HOLD_SECONDS = 0.5


@dataclass(frozen=True, kw_only=True)
class LiftCubeConfig(EnvConfig):
    """Config of :class:`LiftCubeEnv` (fields: see :class:`~metis_sim.env.EnvConfig`)."""


class LiftCubeEnv(PickPlaceEnv):
    """Pick the object up with the right hand and hold it above the table.

    The scene is :class:`~metis_sim.tasks.pick_place.PickPlaceEnv`'s (the plate stays as a
    distractor) with the same randomisation per seed: object position and yaw, plate position,
    object mass and friction. Variant ``object``: a cylinder instead of the cube.

    Success: the object's bottom at least 6 cm above the table while touched by the hand, for
    at least 0.5 s in a row. Stages: reached (a fingertip within 4 cm), grasped (touched by the
    hand), lifted (3 cm above the table, held), held up (success).
    """

    name = "lift_cube"
    config_class = LiftCubeConfig
    default_instruction = "pick up the cube"
    stage_labels: ClassVar[tuple[str, ...]] = ("reach the object", "grasp the object", "lift the object", "hold it up")  # fmt: skip

    def _make_instruction(self, rng: np.random.Generator) -> str:
        return "pick up the cylinder" if self.config.variant == "object" else "pick up the cube"

    def _randomize(self, rng: np.random.Generator) -> None:
        super()._randomize(rng)
        self._held_steps = 0

    def _evaluate(self) -> tuple[bool, int]:
        position, _ = self.object_pose()
        touching = self.contacts_between(self._object_geoms, self._hands)
        height = position[2] - CUBE_HALF - TABLE_TOP
        held_up = touching and height >= LIFT_HEIGHT
        self._held_steps = self._held_steps + 1 if held_up else 0
        stage = 0
        if np.linalg.norm(self.fingertips_world("right") - position, axis=1).min() < 0.04:
            stage = 1
        if touching:
            stage = 2
        if touching and height > 0.03:
            stage = 3
        success = self._held_steps >= round(HOLD_SECONDS * self.config.control_hz)
        return success, stage
