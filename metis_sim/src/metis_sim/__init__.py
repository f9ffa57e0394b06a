"""metis-sim: a closed-loop simulated benchmark for dexterous policies in the METIS hand contract.

MuJoCo models generated from any registered robot hand (:mod:`metis_sim.hand_model`), the
paper's tasks as Gymnasium environments (:mod:`metis_sim.tasks`, registry ``metis.envs``),
scripted experts that record LeRobot v3 datasets (:mod:`metis_sim.record`), kinematic human-hand
demonstrations for pre-training (:mod:`metis_sim.human`) and the evaluation of any policy in
process or over HTTP (:mod:`metis_sim.evaluate`). Command line: ``metis-sim``.
"""

import os

# Headless rendering (EGL, llvmpipe on CPU) unless the user chose a backend; MuJoCo reads this
# when it is first imported, so it is set before anything imports mujoco.
os.environ.setdefault("MUJOCO_GL", "egl")

from metis_sim.gym_registration import GYM_IDS, make, register_envs

__all__ = ["ALL_TASKS", "GYM_IDS", "PRETRAIN_TASKS", "TASKS", "make", "register_envs"]

#: The paper's downstream tasks (registry names).
TASKS = ("pick_place", "open_drawer", "close_laptop", "bimanual_drawer")
#: Pre-training tasks: other tabletop tasks for the multi-source pre-training mixture.
PRETRAIN_TASKS = ("lift_cube", "close_drawer")
#: Every built-in task.
ALL_TASKS = tuple(GYM_IDS)

register_envs()
