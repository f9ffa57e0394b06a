"""Close laptop: push the hinged lid shut (the paper's "close laptop" task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import TABLE_TOP, EnvConfig, SimEnv

__all__ = ["CloseLaptopConfig", "CloseLaptopEnv"]

BASE_HALF = (0.11, 0.15, 0.008)
#: Lid angle that counts as closed (radians).
CLOSED_ANGLE = 0.12


@dataclass(frozen=True, kw_only=True)
class CloseLaptopConfig(EnvConfig):
    """Config of :class:`CloseLaptopEnv` (fields: see :class:`~metis_sim.env.EnvConfig`)."""


class CloseLaptopEnv(SimEnv):
    """Push the open lid of a laptop down with the right hand's palm until it is closed.

    The lid hinges at the back edge of the base; its angle is 0 when closed. Randomised per
    seed: laptop position (8 × 12 cm), opening angle (60-80°), hinge friction and lid mass.
    Variant ``object``: a larger, thicker lid. Success: lid angle below 7°.

    Stages: lid touched, angle below 70 % of the start, below 35 %, closed.
    """

    name = "close_laptop"
    config_class = CloseLaptopConfig
    default_instruction = "close the laptop"
    stage_labels: ClassVar[tuple[str, ...]] = ("reach the lid", "push the lid down", "push the lid down", "close the lid")  # fmt: skip

    @property
    def lid_length(self) -> float:
        """Hinge → free edge (metres)."""
        return 0.25 if self.config.variant == "object" else 0.21

    def _objects_xml(self, variant: str) -> str:
        bx, by, bz = BASE_HALF
        length = self.lid_length
        thickness = 0.007 if variant == "object" else 0.005
        return f"""
    <body name="laptop" pos="0.55 -0.08 {TABLE_TOP}">
      <geom name="laptop_base" type="box" pos="0 0 {bz}" size="{bx} {by} {bz}" rgba="0.3 0.3 0.33 1" contype="1" conaffinity="3" friction="1 0.01 0.0002"/>
      <body name="lid" pos="{bx} 0 {2 * bz + thickness}">
        <joint name="lid_hinge" type="hinge" axis="0 1 0" range="0 2.0" damping="0.05" frictionloss="0.15" armature="0.002"/>
        <inertial pos="{-length / 2} 0 0" mass="0.25" diaginertia="0.002 0.001 0.003"/>
        <geom name="lid" type="box" pos="{-length / 2} 0 0" size="{length / 2} {by - 0.005} {thickness}" rgba="0.55 0.56 0.6 1" contype="1" conaffinity="3" friction="1 0.01 0.0002"/>
        <geom name="screen" type="box" pos="{-length / 2} 0 {-thickness - 0.0005}" size="{length / 2 - 0.012} {by - 0.02} 0.0005" rgba="0.1 0.15 0.3 1" contype="0" conaffinity="0"/>
      </body>
    </body>"""

    def _extra_xml(self, variant: str) -> str:
        return '<contact><exclude body1="laptop" body2="lid"/></contact>'

    def _randomize(self, rng: np.random.Generator) -> None:
        self.model.body_pos[self.model.body("laptop").id] = (rng.uniform(0.50, 0.58), rng.uniform(-0.16, -0.04), TABLE_TOP)  # fmt: skip
        hinge = self.model.joint("lid_hinge").id
        self.start_angle = float(rng.uniform(np.deg2rad(60), np.deg2rad(80)))
        self.data.qpos[self.model.jnt_qposadr[hinge]] = self.start_angle
        self.model.dof_frictionloss[self.model.jnt_dofadr[hinge]] = rng.uniform(0.15, 0.22)
        self.model.body_mass[self.model.body("lid").id] = rng.uniform(0.15, 0.22)
        self._lid = self.body_geoms("lid")
        self._hands = self.hand_geoms()

    def lid_angle(self) -> float:
        """Opening angle of the lid (radians, 0 = closed)."""
        return float(self.data.qpos[self.model.jnt_qposadr[self.model.joint("lid_hinge").id]])

    def hinge_position(self) -> np.ndarray:
        """World position of the hinge axis (middle of the lid's back edge)."""
        return self.data.xpos[self.model.body("lid").id].copy()

    def _evaluate(self) -> tuple[bool, int]:
        angle = self.lid_angle()
        stage = 0
        if self.contacts_between(self._lid, self._hands):
            stage = 1
        if angle < 0.7 * self.start_angle:
            stage = 2
        if angle < 0.35 * self.start_angle:
            stage = 3
        return angle < CLOSED_ANGLE, stage
