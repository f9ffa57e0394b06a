"""Open drawer: pull the drawer out by its handle (the paper's "open drawer" task)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import TABLE_TOP, EnvConfig, SimEnv
from metis_sim.tasks._furniture import (
    CABINET_CONTACTS,
    HANDLE_HEIGHT,
    HANDLE_OFFSET,
    PANEL,
    cabinet_xml,
)

__all__ = ["OpenDrawerConfig", "OpenDrawerEnv"]

#: Opening that counts as success (metres).
OPEN_THRESHOLD = 0.10


@dataclass(frozen=True, kw_only=True)
class OpenDrawerConfig(EnvConfig):
    """Config of :class:`OpenDrawerEnv` (fields: see :class:`~metis_sim.env.EnvConfig`)."""


class DrawerMixin:
    """Cabinet pose, handle position and drawer opening, shared by the drawer tasks."""

    model: object
    data: object

    def drawer_opening(self) -> float:
        """How far the drawer is out (metres)."""
        return float(self.data.qpos[self.model.jnt_qposadr[self.model.joint("drawer_slide").id]])  # type: ignore[attr-defined]

    def handle_position(self) -> np.ndarray:
        """World position of the middle of the handle bar."""
        cabinet = self.data.xpos[self.model.body("cabinet").id]  # type: ignore[attr-defined]
        return cabinet + np.array(
            [-PANEL - HANDLE_OFFSET - self.drawer_opening(), 0.0, HANDLE_HEIGHT]
        )

    def drawer_position(self) -> np.ndarray:
        """World position of the drawer body's origin."""
        return self.data.xpos[self.model.body("drawer").id].copy()  # type: ignore[attr-defined]

    def _place_cabinet(self, x: float, y: float, rng: np.random.Generator) -> None:
        self.model.body_pos[self.model.body("cabinet").id] = (x, y, TABLE_TOP)  # type: ignore[attr-defined]
        joint = self.model.joint("drawer_slide").id  # type: ignore[attr-defined]
        self.model.dof_frictionloss[self.model.jnt_dofadr[joint]] = rng.uniform(0.3, 0.7)  # type: ignore[attr-defined]
        self.model.body_mass[self.model.body("drawer").id] = rng.uniform(0.4, 0.8)  # type: ignore[attr-defined]


class OpenDrawerEnv(DrawerMixin, SimEnv):
    """Hook the fingers behind the handle with the right hand and pull the drawer open.

    Randomised per seed: cabinet position (8 × 12 cm), drawer friction and mass. Variant
    ``object``: a shorter, thicker handle. Success: the drawer is out by more than 10 cm.

    Stages: handle reached (a fingertip within 5 cm), hooked (touching the handle, drawer moved
    1 cm), half open (5 cm), open.
    """

    name = "open_drawer"
    config_class = OpenDrawerConfig
    default_instruction = "open the drawer"
    stage_labels: ClassVar[tuple[str, ...]] = ("reach the handle", "hook the handle", "pull the drawer", "pull the drawer open")  # fmt: skip

    def _objects_xml(self, variant: str) -> str:
        if variant == "object":
            return cabinet_xml(handle_half_length=0.05, handle_radius=0.009)
        return cabinet_xml()

    def _extra_xml(self, variant: str) -> str:
        return CABINET_CONTACTS

    def _randomize(self, rng: np.random.Generator) -> None:
        self._place_cabinet(rng.uniform(0.52, 0.60), rng.uniform(-0.14, -0.02), rng)
        self._handle = {self.model.geom(n).id for n in ("handle", "handle_post_l", "handle_post_r")}
        self._hands = self.hand_geoms()

    def _evaluate(self) -> tuple[bool, int]:
        opening = self.drawer_opening()
        stage = 0
        if (
            np.linalg.norm(self.fingertips_world("right") - self.handle_position(), axis=1).min()
            < 0.05
        ):
            stage = 1
        if opening > 0.01 and self.contacts_between(self._handle, self._hands):
            stage = 2
        if opening > 0.05:
            stage = 3
        return opening > OPEN_THRESHOLD, stage
