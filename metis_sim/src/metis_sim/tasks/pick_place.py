"""Pick and place: put the object onto the plate (the paper's "pick and place" task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import TABLE_TOP, EnvConfig, SimEnv

__all__ = ["PickPlaceConfig", "PickPlaceEnv"]

CUBE_HALF = 0.025
PLATE_RADIUS = 0.08
PLATE_HALF_HEIGHT = 0.006


@dataclass(frozen=True, kw_only=True)
class PickPlaceConfig(EnvConfig):
    """Config of :class:`PickPlaceEnv` (fields: see :class:`~metis_sim.env.EnvConfig`)."""


class PickPlaceEnv(SimEnv):
    """Pick the object up with the right hand and put it on the plate.

    Randomised per seed: object position (14 × 14 cm) and yaw (±30°), plate position, object
    mass (50-200 g) and friction (0.8-1.2). Variant ``object``: a cylinder instead of the cube.

    Stages: reached (a fingertip within 4 cm), lifted (3 cm above the table, touched by the
    hand), above the plate, placed (success: resting on the plate, released).
    """

    name = "pick_place"
    config_class = PickPlaceConfig
    default_instruction = "pick up the cube and place it on the plate"
    stage_labels: ClassVar[tuple[str, ...]] = ("reach the object", "grasp and lift the object", "move it above the plate", "place it on the plate")  # fmt: skip

    def _objects_xml(self, variant: str) -> str:
        if variant == "object":
            shape = f'type="cylinder" size="{CUBE_HALF} {CUBE_HALF}"'
        else:
            shape = f'type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}"'
        return f"""
    <body name="object" pos="0.5 -0.15 {TABLE_TOP + CUBE_HALF}">
      <freejoint name="object_free"/>
      <geom name="object" {shape} mass="0.1" rgba="0.85 0.15 0.12 1" contype="1" conaffinity="3" condim="4" friction="1.0 0.01 0.0002" solref="0.01 1"/>
    </body>
    <body name="plate" pos="0.47 0.08 {TABLE_TOP + PLATE_HALF_HEIGHT}">
      <geom name="plate" type="cylinder" size="{PLATE_RADIUS} {PLATE_HALF_HEIGHT}" rgba="0.92 0.92 0.95 1" contype="1" conaffinity="3" friction="1.0 0.01 0.0002"/>
    </body>"""

    def _make_instruction(self, rng: np.random.Generator) -> str:
        what = "cylinder" if self.config.variant == "object" else "cube"
        return f"pick up the {what} and place it on the plate"

    def _randomize(self, rng: np.random.Generator) -> None:
        x, y = rng.uniform(0.40, 0.54), rng.uniform(-0.22, -0.08)
        yaw = rng.uniform(-np.pi / 6, np.pi / 6)
        adr = self.model.jnt_qposadr[self.model.joint("object_free").id]
        self.data.qpos[adr : adr + 3] = (x, y, TABLE_TOP + CUBE_HALF + 0.001)
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0, 0, np.sin(yaw / 2))
        plate = self.model.body("plate").id
        self.model.body_pos[plate] = (rng.uniform(0.40, 0.52), rng.uniform(0.03, 0.14), TABLE_TOP + PLATE_HALF_HEIGHT)  # fmt: skip
        obj = self.model.body("object").id
        self.model.body_mass[obj] = rng.uniform(0.05, 0.2)
        self.model.geom_friction[self.model.geom("object").id, 0] = rng.uniform(0.8, 1.2)
        self._object_geoms = self.body_geoms("object")
        self._hands = self.hand_geoms()

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and rotation of the object."""
        body = self.model.body("object").id
        return self.data.xpos[body].copy(), self.data.xmat[body].reshape(3, 3).copy()

    def plate_position(self) -> np.ndarray:
        """World position of the plate's centre."""
        return self.data.xpos[self.model.body("plate").id].copy()

    def _evaluate(self) -> tuple[bool, int]:
        position, _ = self.object_pose()
        plate = self.plate_position()
        touching = self.contacts_between(self._object_geoms, self._hands)
        lifted = position[2] > TABLE_TOP + CUBE_HALF + 0.03
        horizontal = float(np.linalg.norm(position[:2] - plate[:2]))
        speed = float(np.linalg.norm(self.data.qvel[self.model.jnt_dofadr[self.model.joint("object_free").id] :][:3]))  # fmt: skip
        resting = position[2] < plate[2] + PLATE_HALF_HEIGHT + CUBE_HALF + 0.012
        success = horizontal < PLATE_RADIUS - 0.01 and resting and not touching and speed < 0.05
        stage = 0
        if np.linalg.norm(self.fingertips_world("right") - position, axis=1).min() < 0.04:
            stage = 1
        if lifted and touching:
            stage = 2
        if lifted and horizontal < PLATE_RADIUS - 0.02:
            stage = 3
        return success, stage
