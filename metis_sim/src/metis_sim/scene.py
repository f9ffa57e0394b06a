"""The shared scene: a table in front of a G1-like robot, its head camera, lights and variants.

World frame: origin on the floor under the robot's pelvis, x forward, y to the robot's left,
z up. The table top is at :data:`TABLE_HEIGHT`; the ego camera sits where the G1's head camera
(a RealSense D435) is, about 1.2 m above the floor, looking down at the table.

Out-of-distribution variants (the paper's Table 3): ``background`` (an unseen table texture),
``lighting`` (a coloured, flickering light), ``object`` (another object shape, chosen by the task)
and ``clutter`` (distractor objects on the table).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from metis_sim.hand_model import HandModel, _fmt

__all__ = [
    "CAMERA_FOVY_DEG",
    "CAMERA_POSITION",
    "CAMERA_TARGET",
    "TABLE_HEIGHT",
    "VARIANTS",
    "WORKSPACE",
    "camera_rotation",
    "scene_xml",
]

TABLE_HEIGHT = 0.75
#: G1 head camera (D435) pose: ~1.22 m high, 8 cm ahead of the pelvis, looking at the table.
CAMERA_POSITION = np.array([0.08, 0.0, 1.22])
CAMERA_TARGET = np.array([0.52, 0.0, TABLE_HEIGHT])
#: Vertical field of view of the 480×480 centre crop of the D435's 640×480 colour image.
CAMERA_FOVY_DEG = 58.0
#: Reachable wrist box (world, metres): low corner, high corner.
WORKSPACE = np.array([[0.15, -0.55, TABLE_HEIGHT + 0.01], [0.85, 0.55, TABLE_HEIGHT + 0.45]])
VARIANTS = ("default", "background", "lighting", "object", "clutter")


def camera_rotation() -> np.ndarray:
    """``(3, 3)`` world ← camera rotation in the OpenCV convention (x right, y down, z forward)."""
    forward = CAMERA_TARGET - CAMERA_POSITION
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


@dataclass(frozen=True)
class _Texture:
    rgb1: str
    rgb2: str
    builtin: str


_TABLE = {"default": _Texture("0.55 0.42 0.30", "0.50 0.38 0.27", "flat"), "background": _Texture("0.15 0.35 0.65", "0.85 0.85 0.85", "checker")}  # fmt: skip


def scene_xml(
    *,
    hands: Sequence[HandModel | Any],
    objects: str,
    variant: str,
    extra: str = "",
    rng: np.random.Generator,
    timestep: float = 1.0 / 480.0,
    image_size: int = 224,
) -> str:
    """The MJCF of a task scene.

    Args:
        hands: Generated hands to place (their mocap bodies and bodies): robot
            :class:`~metis_sim.hand_model.HandModel` or kinematic
            :class:`~metis_sim.human.KinematicHand` (anything with ``mocap``, ``body``,
            ``actuators`` and ``equalities`` XML).
        objects: Task bodies (XML inside ``<worldbody>``).
        extra: Top-level MJCF elements of the task (``<contact>`` exclusions).
        variant: One of :data:`VARIANTS`.
        rng: Randomness of the variant's layout (clutter positions).
        timestep: Physics step (1/480 s: 16 substeps per 30 Hz control step).
        image_size: Offscreen buffer size.

    Raises:
        ValueError: For an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    table = _TABLE.get(variant, _TABLE["default"])
    rotation = camera_rotation()
    # MuJoCo cameras look along -z with y up: x = right, y = -down.
    xyaxes = _fmt(np.concatenate([rotation[:, 0], -rotation[:, 1]]))
    light = '<light name="key" pos="0.3 0 2.2" dir="0.2 0 -1" diffuse="0.8 0.8 0.8" specular="0.1 0.1 0.1" castshadow="false"/>'  # fmt: skip
    if variant == "lighting":
        light = '<light name="key" pos="0.3 0.4 2.0" dir="0.1 -0.2 -1" diffuse="1.0 0.55 0.25" specular="0.1 0.1 0.1" castshadow="false"/>'  # fmt: skip
    clutter = ""
    if variant == "clutter":
        parts = []
        shapes = ("box", "sphere", "cylinder")
        for i in range(4):
            # distractors along the back and the sides of the table, outside the task areas
            x = rng.uniform(0.72, 0.84) if i < 2 else rng.uniform(0.3, 0.8)
            y = (
                rng.uniform(-0.45, 0.45)
                if i < 2
                else (0.4 if i == 2 else -0.4) + rng.uniform(-0.05, 0.05)
            )
            shape = shapes[int(rng.integers(3))]
            size = (
                "0.02 0.02 0.02"
                if shape == "box"
                else ("0.022" if shape == "sphere" else "0.02 0.03")
            )
            z = TABLE_HEIGHT + (0.03 if shape == "cylinder" else 0.022)
            colour = _fmt(rng.uniform(0.1, 0.95, 3))
            parts.append(f'<body name="clutter{i}" pos="{x:.4f} {y:.4f} {z:.4f}"><freejoint/><geom type="{shape}" size="{size}" rgba="{colour} 1" mass="0.05" contype="1" conaffinity="3" friction="1 0.01 0.0002"/></body>')  # fmt: skip
        clutter = "\n".join(parts)
    return f"""<mujoco model="metis_sim">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10" gravity="0 0 -9.81"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <asset>
    <texture name="table_tex" type="2d" builtin="{table.builtin}" rgb1="{table.rgb1}" rgb2="{table.rgb2}" width="64" height="64"/>
    <material name="table_mat" texture="table_tex" texrepeat="6 6"/>
    <texture name="floor_tex" type="2d" builtin="flat" rgb1="0.35 0.35 0.38" width="8" height="8"/>
    <material name="floor_mat" texture="floor_tex"/>
  </asset>
  <worldbody>
    {light}
    <geom name="floor" type="plane" size="3 3 0.1" material="floor_mat" contype="1" conaffinity="1"/>
    <geom name="table" type="box" pos="0.55 0 {TABLE_HEIGHT / 2}" size="0.35 0.6 {TABLE_HEIGHT / 2}" material="table_mat" contype="1" conaffinity="3" friction="1 0.01 0.0002"/>
    <camera name="ego" pos="{_fmt(CAMERA_POSITION)}" xyaxes="{xyaxes}" fovy="{CAMERA_FOVY_DEG}"/>
    {objects}
    {clutter}
    {"".join(h.mocap for h in hands)}
    {"".join(h.body for h in hands)}
  </worldbody>
  <actuator>{"".join(h.actuators for h in hands)}</actuator>
  <equality>{"".join(h.equalities for h in hands)}</equality>
  {extra}
</mujoco>"""
