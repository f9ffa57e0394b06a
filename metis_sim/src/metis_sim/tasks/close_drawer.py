"""Close drawer: push an open drawer shut (a pre-training task, not one of the paper's four)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metis_sim.env import EnvConfig
from metis_sim.tasks._furniture import HALF_WIDTH, HEIGHT, PANEL
from metis_sim.tasks.open_drawer import OpenDrawerEnv

__all__ = ["CLOSED_THRESHOLD", "CloseDrawerConfig", "CloseDrawerEnv"]

#: Opening below which the drawer counts as closed (metres).
CLOSED_THRESHOLD = 0.02
#: Range of the initial opening (metres).
START_OPENING = (0.12, 0.16)


@dataclass(frozen=True, kw_only=True)
class CloseDrawerConfig(EnvConfig):
    """Config of :class:`CloseDrawerEnv` (fields: see :class:`~metis_sim.env.EnvConfig`)."""


class CloseDrawerEnv(OpenDrawerEnv):
    """Push the open drawer of :class:`~metis_sim.tasks.open_drawer.OpenDrawerEnv`'s cabinet shut.

    Randomised per seed: cabinet position, drawer friction and mass (as in ``open_drawer``) and
    the initial opening (12-16 cm). Variant ``object``: a shorter, thicker handle. Success: the
    drawer is out by less than 2 cm.

    Stages: drawer reached (a fingertip within 5 cm of the front panel), pushed (touched by the
    hand, closed by 1 cm), half closed (less than half the initial opening), closed.
    """

    name = "close_drawer"
    config_class = CloseDrawerConfig
    default_instruction = "close the drawer"
    stage_labels: ClassVar[tuple[str, ...]] = ("reach the drawer", "push the drawer", "push the drawer shut", "close the drawer")  # fmt: skip

    def _randomize(self, rng: np.random.Generator) -> None:
        super()._randomize(rng)
        self.start_opening = float(rng.uniform(*START_OPENING))
        self.data.qpos[self.model.jnt_qposadr[self.model.joint("drawer_slide").id]] = self.start_opening  # fmt: skip
        self._drawer = self.body_geoms("drawer")
        self._touched = False

    def front_position(self) -> np.ndarray:
        """World position of the middle of the drawer front panel's outer face."""
        cabinet = self.data.xpos[self.model.body("cabinet").id]
        return cabinet + np.array([-PANEL - self.drawer_opening(), 0.0, HEIGHT / 2])

    def _evaluate(self) -> tuple[bool, int]:
        opening = self.drawer_opening()
        stage = 0
        tips = self.fingertips_world("right")
        front = self.front_position()
        near = np.abs(tips - front) < np.array([0.05, HALF_WIDTH + 0.02, HEIGHT / 2 + 0.03])
        if near.all(axis=1).any():
            stage = 1
        # a push can be an impulse: the drawer slides on ahead of the hand
        self._touched = self._touched or self.contacts_between(self._drawer, self._hands)
        if opening < self.start_opening - 0.01 and self._touched:
            stage = 2
        if opening < self.start_opening / 2:
            stage = 3
        return opening < CLOSED_THRESHOLD, stage
