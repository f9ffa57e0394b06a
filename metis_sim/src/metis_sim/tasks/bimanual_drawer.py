"""Bimanual drawer: open the drawer, put the cube in, close it (the paper's "drawer + bread").

A long-horizon task with three subtasks and both hands: the left hand opens the drawer, the
right hand puts the object inside, the left hand closes the drawer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import TABLE_TOP, EnvConfig, SimEnv
from metis_sim.tasks._furniture import CABINET_CONTACTS, INTERIOR, cabinet_xml
from metis_sim.tasks.open_drawer import OPEN_THRESHOLD, DrawerMixin
from metis_sim.tasks.pick_place import CUBE_HALF

__all__ = ["BimanualDrawerConfig", "BimanualDrawerEnv"]

SUBTASKS = ("open the drawer", "put the cube in the drawer", "close the drawer")


@dataclass(frozen=True, kw_only=True)
class BimanualDrawerConfig(EnvConfig):
    """Config of :class:`BimanualDrawerEnv` (fields: see :class:`~metis_sim.env.EnvConfig`;
    the time limit defaults to 16 s)."""

    max_seconds: float = 16.0


class BimanualDrawerEnv(DrawerMixin, SimEnv):
    """Both hands: open the drawer (left), put the object in (right), close the drawer (left).

    Randomised per seed: cabinet position, object position and yaw, masses and frictions.
    Variant ``object``: a cylinder instead of the cube. Success: the object lies inside the
    drawer and the drawer is closed (less than 2 cm out).

    Stages: drawer opened (10 cm), object lifted, object in the drawer, drawer closed with it.
    """

    name = "bimanual_drawer"
    config_class = BimanualDrawerConfig
    sides: ClassVar[tuple[str, ...]] = ("left", "right")
    default_instruction = "open the drawer, put the cube in it and close the drawer"
    stage_labels: ClassVar[tuple[str, ...]] = (SUBTASKS[0], SUBTASKS[1], SUBTASKS[1], SUBTASKS[2])  # fmt: skip

    def _objects_xml(self, variant: str) -> str:
        shape = f'type="cylinder" size="{CUBE_HALF} {CUBE_HALF}"' if variant == "object" else f'type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}"'  # fmt: skip
        return (
            cabinet_xml()
            + f"""
    <body name="object" pos="0.45 -0.2 {TABLE_TOP + CUBE_HALF}">
      <freejoint name="object_free"/>
      <geom name="object" {shape} mass="0.1" rgba="0.9 0.75 0.3 1" contype="1" conaffinity="3" condim="4" friction="1.0 0.01 0.0002" solref="0.01 1"/>
    </body>"""
        )

    def _extra_xml(self, variant: str) -> str:
        return CABINET_CONTACTS

    def _make_instruction(self, rng: np.random.Generator) -> str:
        what = "cylinder" if self.config.variant == "object" else "cube"
        return f"open the drawer, put the {what} in it and close the drawer"

    def _randomize(self, rng: np.random.Generator) -> None:
        self._place_cabinet(rng.uniform(0.55, 0.60), rng.uniform(0.06, 0.12), rng)
        x, y = rng.uniform(0.40, 0.50), rng.uniform(-0.24, -0.14)
        yaw = rng.uniform(-np.pi / 6, np.pi / 6)
        adr = self.model.jnt_qposadr[self.model.joint("object_free").id]
        self.data.qpos[adr : adr + 3] = (x, y, TABLE_TOP + CUBE_HALF + 0.001)
        self.data.qpos[adr + 3 : adr + 7] = (np.cos(yaw / 2), 0, 0, np.sin(yaw / 2))
        self.model.body_mass[self.model.body("object").id] = rng.uniform(0.05, 0.2)
        self.model.geom_friction[self.model.geom("object").id, 0] = rng.uniform(0.8, 1.2)
        self._object_geoms = self.body_geoms("object")
        self._hands = self.hand_geoms()

    def home_pose(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        position, rotation = super().home_pose(side)
        return position + np.array([0.0, 0.06 if side == "left" else -0.04, 0.0]), rotation

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World position and rotation of the object."""
        body = self.model.body("object").id
        return self.data.xpos[body].copy(), self.data.xmat[body].reshape(3, 3).copy()

    def object_in_drawer(self) -> bool:
        """Whether the object lies inside the drawer box (below its walls)."""
        relative = self.object_pose()[0] - self.drawer_position()
        (x_low, x_high), y_bound, bottom = INTERIOR
        return bool(x_low < relative[0] < x_high and abs(relative[1]) < y_bound and relative[2] < bottom + 2 * CUBE_HALF + 0.01)  # fmt: skip

    def _evaluate(self) -> tuple[bool, int]:
        opening = self.drawer_opening()
        inside = self.object_in_drawer()
        stage = 0
        if opening > OPEN_THRESHOLD:
            stage = 1
        if self.object_pose()[0][2] > TABLE_TOP + CUBE_HALF + 0.03 and self.contacts_between(self._object_geoms, self._hands):  # fmt: skip
            stage = 2
        if inside and self._stage >= 1:
            stage = 3
        success = inside and opening < 0.02 and self._stage >= 3
        return success, stage

    @property
    def subtask(self) -> str:
        """The current subtask of the three."""
        return self.stage_labels[min(self._stage, len(self.stage_labels) - 1)]
