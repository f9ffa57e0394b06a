"""Gymnasium ids of the tasks: ``metis_sim/<Task>-v0`` (registered when ``metis_sim`` is imported).

Each id builds the task registered under ``metis.envs`` (so a third-party task installed as a
plugin is reachable the same way through :func:`make`)::

    import gymnasium as gym
    env = gym.make("metis_sim:metis_sim/PickPlace-v0", variant="clutter", embodiment="sharpawave")
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["GYM_IDS", "make", "register_envs"]

#: registry name → gymnasium id.
GYM_IDS = {
    "pick_place": "metis_sim/PickPlace-v0",
    "open_drawer": "metis_sim/OpenDrawer-v0",
    "close_laptop": "metis_sim/CloseLaptop-v0",
    "bimanual_drawer": "metis_sim/BimanualDrawer-v0",
    # pre-training tasks (not among the paper's downstream tasks)
    "lift_cube": "metis_sim/LiftCube-v0",
    "close_drawer": "metis_sim/CloseDrawer-v0",
}


def make(task: str, **config: Any) -> Any:
    """Build the task registered as ``task`` in ``metis.envs`` from keyword config fields."""
    from metis_core.registry import ENVS

    return ENVS.create(task, **config)


def _factory(task: str):  # type: ignore[no-untyped-def]
    def build(**config: Any) -> Any:
        return make(task, **config)

    return build


def register_envs() -> None:
    """Register every built-in task with gymnasium (idempotent)."""
    for task, env_id in GYM_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=_factory(task), max_episode_steps=None, disable_env_checker=True)  # fmt: skip
