"""Kinematic human-hand demonstrations: the human part of the pre-training mixture.

The simulated scenes can hold, instead of robot hands, kinematic human hands
(``embodiment="human_mano"``): the 20 bones of the MANO skeleton drawn as skin-coloured capsules
plus a palm, each bone a mocap body posed every control step from the 21 ``human_mano``
keypoints. They have no physics and do not collide; a demonstration script moves the objects
instead:

* the hand follows the task's scripted expert (:mod:`metis_sim.experts`): its wrist waypoints,
  orientations and grasp timing, planned for the Inspire hand, are shifted by a constant offset
  in the wrist frame so that the human hand's grasp point (pinch centre, hooked fingertips or
  palm) sits where the Inspire's was; the finger flexion of the MANO hand
  (:func:`metis_embodiments.human.curl_fingers`) goes from an open to a closed posture as the
  expert's fingers close;
* while "grasped" (the hand closed around it), an object's free joint follows the wrist
  rigidly; a hooked drawer follows the hand; the hand pushes a drawer front or a laptop lid
  one-sidedly (its keypoints, as spheres, may not enter them); released objects fall back to
  physics and rest where they were released;
* what the script holds or pushes counts as touching the hand, so the tasks' own success and
  progress detectors apply unchanged.

The contract state of a human hand is the embodiment's :meth:`contract_pose` of the drawn
keypoints in the ego camera frame; the recorded action is that of the next step's keypoints.

Example::

    from metis_sim.record import record

    record("lift_cube", episodes=10, out="data/human_lift_cube", workers=2, embodiment="human_mano")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from metis_embodiments.human import curl_fingers
from metis_sim.hand_model import _fmt

__all__ = [
    "HUMAN_GRASPS",
    "POSTURES",
    "SKIN_RGBA",
    "HumanDemo",
    "KinematicHand",
    "Posture",
    "run_human_demo",
]

#: Base skin colour of the drawn hands (varied slightly per seed).
SKIN_RGBA = (0.87, 0.68, 0.55, 1.0)
#: Palm box of the drawn hand in its contract wrist frame: centre and half sizes (metres).
PALM_CENTRE = np.array([0.0, -0.006, 0.045])
PALM_HALF = np.array([0.011, 0.031, 0.040])
#: Radius of the spheres the keypoints push drawers and lids with (metres).
PUSH_RADIUS = 0.011
#: Closure (0 open … 1 closed) from which a pinch holds an object or a hook holds a handle.
HOLD_CLOSURE = 0.6

# Bone radii (metres) per finger, thumb to little: palm bone (from the wrist), then the phalanges.
_RADII = ((0.011, 0.0095, 0.009, 0.0085), (0.009, 0.0085, 0.008, 0.0075), (0.009, 0.0085, 0.008, 0.0075), (0.009, 0.008, 0.0075, 0.007), (0.009, 0.0072, 0.0067, 0.0062))  # fmt: skip


@dataclass(frozen=True)
class Posture:
    """Finger flexion of a grasp type: ``(5, 3)`` radians (thumb to little, base joint first)."""

    open: np.ndarray
    closed: np.ndarray

    def at(self, closure: float) -> np.ndarray:
        """Flexion ``closure`` of the way from open (0) to closed (1)."""
        return self.open + float(np.clip(closure, 0.0, 1.0)) * (self.closed - self.open)


def _flexion(thumb: tuple, index: tuple, middle: tuple, ring: tuple, little: tuple) -> np.ndarray:
    return np.array([thumb, index, middle, ring, little], dtype=float)


#: The human hand's open and closed postures per grasp type. ``pinch``: the thumb opposing index
#: and middle around a 5 cm object; ``hook``: fingers curled behind a bar handle; ``flat``: a palm push.
POSTURES = {
    "pinch": Posture(
        _flexion(
            (0.5, 0.0, 0.0), (0.1, 0.15, 0.1), (0.1, 0.15, 0.1), (0.3, 0.4, 0.2), (0.3, 0.4, 0.2)
        ),
        _flexion(
            (0.8, 0.1, 0.1), (0.4, 0.6, 0.3), (0.4, 0.6, 0.3), (0.9, 1.1, 0.8), (0.9, 1.1, 0.8)
        ),
    ),
    "hook": Posture(
        _flexion(
            (0.3, 0.1, 0.0),
            (0.05, 0.1, 0.05),
            (0.05, 0.1, 0.05),
            (0.05, 0.1, 0.05),
            (0.05, 0.1, 0.05),
        ),
        _flexion(
            (0.5, 0.3, 0.2), (0.4, 1.3, 0.9), (0.4, 1.3, 0.9), (0.4, 1.3, 0.9), (0.4, 1.3, 0.9)
        ),
    ),
    "flat": Posture(
        _flexion(
            (-0.3, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
        ),
        _flexion(
            (-0.3, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
        ),
    ),
}
#: Relaxed open hand (the pose at reset, before a demonstration starts).
RELAXED = _flexion((0.3, 0.1, 0.1), (0.1, 0.15, 0.1), (0.1, 0.15, 0.1), (0.15, 0.2, 0.1), (0.15, 0.2, 0.1))  # fmt: skip

#: Grasp type of each hand per task (the tasks with human demonstrations).
HUMAN_GRASPS: dict[str, dict[str, str]] = {
    "pick_place": {"right": "pinch"},
    "lift_cube": {"right": "pinch"},
    "open_drawer": {"right": "hook"},
    "close_drawer": {"right": "hook"},
    "close_laptop": {"right": "flat"},
    "bimanual_drawer": {"left": "hook", "right": "pinch"},
}


def _quat(rotation: np.ndarray) -> np.ndarray:
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rotation, dtype=np.float64).reshape(9))
    return quat


def _z_to(directions: np.ndarray) -> np.ndarray:
    """``(N, 3)`` unit vectors → ``(N, 4)`` quaternions (w, x, y, z) turning +z onto them."""
    w = 1.0 + directions[:, 2]
    quats = np.stack([w, -directions[:, 1], directions[:, 0], np.zeros(len(directions))], axis=1)
    flipped = w < 1e-9
    quats[flipped] = (0.0, 1.0, 0.0, 0.0)
    return quats / np.linalg.norm(quats, axis=1, keepdims=True)


class KinematicHand:
    """A drawn, kinematic ``human_mano`` hand: one mocap capsule per skeleton bone and a palm box.

    Built like :class:`~metis_sim.hand_model.HandModel` for :func:`metis_sim.scene.scene_xml`
    (``mocap`` holds the bodies; there are no actuators, equalities or simulated bodies).

    Attributes:
        side: ``"left"`` or ``"right"``.
        embodiment: The ``human_mano`` embodiment of that side.
        prefix: Name prefix of the hand's bodies and geoms (``"rh_"``).
        bones: ``(a, b)`` keypoint pairs of the 20 bones (the embodiment's skeleton).
        keypoints: ``(21, 3)`` world keypoints the hand is drawn at.
    """

    body = ""
    actuators = ""
    equalities = ""

    def __init__(self, embodiment: Any, *, prefix: str) -> None:
        if getattr(embodiment, "num_keypoints", None) != 21:
            raise ValueError(f"KinematicHand draws the 21-keypoint human_mano hand, got {getattr(embodiment, 'name', embodiment)!r}")  # fmt: skip
        self.embodiment = embodiment
        self.side = embodiment.side
        self.prefix = prefix
        self.bones = tuple(embodiment.skeleton)
        template = embodiment.side_template().numpy()
        self.lengths = np.array([np.linalg.norm(template[b] - template[a]) for a, b in self.bones])
        chains = embodiment.fingers
        radius = {}
        for finger, chain in enumerate(chains):
            radius[(0, chain[0])] = _RADII[finger][0]
            for j in range(len(chain) - 1):
                radius[(chain[j], chain[j + 1])] = _RADII[finger][j + 1]
        self.radii = np.array([radius[bone] for bone in self.bones])
        rgba = _fmt(np.array(SKIN_RGBA))
        parts = [
            f'<body name="{prefix}bone{i}" mocap="true"><geom name="{prefix}bone{i}" type="capsule" size="{r:.4f} {length / 2:.5f}" rgba="{rgba}" contype="0" conaffinity="0" mass="0.01"/></body>'
            for i, (r, length) in enumerate(zip(self.radii, self.lengths, strict=True))
        ]
        parts.append(f'<body name="{prefix}palm" mocap="true"><geom name="{prefix}palm" type="box" pos="{_fmt(PALM_CENTRE)}" size="{_fmt(PALM_HALF)}" rgba="{rgba}" contype="0" conaffinity="0" mass="0.01"/></body>')  # fmt: skip
        self.mocap = "\n    ".join(parts)
        self.keypoints = np.zeros((21, 3))
        self._curled: dict[bytes, np.ndarray] = {}
        self._bone_mocap = np.zeros(0, dtype=int)
        self._palm_mocap = -1
        self._geoms = np.zeros(0, dtype=int)

    # -- model ---------------------------------------------------------------------------------

    def bind(self, model: Any) -> None:
        """Look up the hand's mocap and geom ids in a compiled scene."""
        self._bone_mocap = np.array([model.body_mocapid[model.body(f"{self.prefix}bone{i}").id] for i in range(len(self.bones))])  # fmt: skip
        self._palm_mocap = int(model.body_mocapid[model.body(f"{self.prefix}palm").id])
        self._geoms = np.array([model.geom(f"{self.prefix}bone{i}").id for i in range(len(self.bones))] + [model.geom(f"{self.prefix}palm").id])  # fmt: skip

    @property
    def geom_ids(self) -> np.ndarray:
        """MuJoCo ids of the hand's geoms (bones, then the palm)."""
        return self._geoms.copy()

    def set_skin(self, model: Any, rng: np.random.Generator) -> None:
        """Colour the hand a skin tone near :data:`SKIN_RGBA` (±4 % brightness, ±2 % hue)."""
        rgb = np.array(SKIN_RGBA[:3]) * rng.uniform(0.96, 1.04) * (1 + rng.uniform(-0.02, 0.02, 3))
        model.geom_rgba[self._geoms, :3] = np.clip(rgb, 0.0, 1.0)
        model.geom_rgba[self._geoms, 3] = 1.0

    # -- pose ----------------------------------------------------------------------------------

    def local_keypoints(self, flexion: np.ndarray) -> np.ndarray:
        """``(21, 3)`` keypoints in the contract wrist frame of a hand flexed by ``flexion (5, 3)``."""
        flexion = np.asarray(flexion, dtype=np.float64)
        key = flexion.tobytes()
        if key not in self._curled:
            if len(self._curled) > 4096:
                self._curled.clear()
            points = curl_fingers(torch.as_tensor(flexion)).numpy()
            self._curled[key] = (
                points * np.array([-1.0, 1.0, 1.0]) if self.side == "left" else points
            )
        return self._curled[key].copy()

    def posture_keypoints(self, kind: str, closure: float) -> np.ndarray:
        """``(21, 3)`` wrist-frame keypoints of a posture of :data:`POSTURES`, closure rounded to 1e-3."""
        return self.local_keypoints(POSTURES[kind].at(round(float(closure), 3)))

    def world_keypoints(self, position: np.ndarray, rotation: np.ndarray, flexion: np.ndarray) -> np.ndarray:  # fmt: skip
        """``(21, 3)`` world keypoints of the hand with its wrist frame at ``(position, rotation)``."""
        return np.asarray(position, float) + self.local_keypoints(flexion) @ np.asarray(rotation, float).T  # fmt: skip

    def open_keypoints(self, position: np.ndarray, rotation: np.ndarray) -> np.ndarray:
        """``(21, 3)`` world keypoints of the relaxed open hand at a wrist pose."""
        return self.world_keypoints(position, rotation, RELAXED)

    def place(self, data: Any, keypoints: np.ndarray) -> None:
        """Pose the bones and the palm at ``(21, 3)`` world keypoints (mocap bodies of ``data``)."""
        if keypoints.shape != (21, 3) or not np.isfinite(keypoints).all():
            raise ValueError(f"{self.side} human hand: expected finite (21, 3) world keypoints, got shape {keypoints.shape}")  # fmt: skip
        a = keypoints[[i for i, _ in self.bones]]
        b = keypoints[[j for _, j in self.bones]]
        direction = b - a
        direction /= np.linalg.norm(direction, axis=1, keepdims=True).clip(1e-12)
        data.mocap_pos[self._bone_mocap] = (a + b) / 2
        data.mocap_quat[self._bone_mocap] = _z_to(direction)
        _, rotation = self._frame(keypoints)
        data.mocap_pos[self._palm_mocap] = keypoints[0]
        data.mocap_quat[self._palm_mocap] = _quat(rotation)
        self.keypoints = keypoints.copy()

    def _frame(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The contract wrist frame of keypoints (as :func:`metis_core.frames.wrist_frame_from_keypoints`)."""
        wrist, index, middle, little = (keypoints[i] for i in self.embodiment.frame_keypoints)
        z = (middle - wrist) / np.linalg.norm(middle - wrist)
        across = index - little
        y = across - np.dot(across, z) * z
        y /= np.linalg.norm(y)
        return wrist.copy(), np.stack([np.cross(y, z), y, z], axis=1)

    def wrist_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """World ``(position, rotation)`` of the contract wrist frame of the drawn keypoints."""
        return self._frame(self.keypoints)

    def contract(self, camera_rotation: np.ndarray, camera_position: np.ndarray, keypoints: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        """``(..., 48)`` this hand's part of the contract (zeros elsewhere) from world keypoints.

        The keypoints (default: the drawn ones; or ``(..., 21, 3)``) are expressed in the ego
        camera frame and passed to the embodiment's :meth:`contract_pose`: wrist position and
        6D rotation in the camera frame, fingertips in the wrist frame.
        """
        from metis_core.contract import HAND_LAYOUTS

        points = self.keypoints if keypoints is None else np.asarray(keypoints, dtype=np.float64)
        in_camera = (points - camera_position) @ camera_rotation
        batch = in_camera.shape[:-2]
        origin, rot6d, tips = self.embodiment.contract_pose(torch.as_tensor(in_camera.reshape(*batch, 63)))  # fmt: skip
        out = np.zeros((*batch, 48))
        layout = HAND_LAYOUTS[self.side]
        out[..., layout.wrist_position] = origin.numpy()
        out[..., layout.wrist_rot6d] = rot6d.numpy()
        out[..., layout.fingertips] = tips.numpy().reshape(*batch, 15)
        return out


# -- demonstrations ----------------------------------------------------------------------------

_INSPIRE_RIGS: dict[str, SimpleNamespace] = {}


def _inspire_rig(side: str) -> SimpleNamespace:
    """The Inspire hand the experts plan their grasps for (embodiment and generated model)."""
    if side not in _INSPIRE_RIGS:
        from metis_core.registry import EMBODIMENTS
        from metis_sim.hand_model import HandModelConfig, build_hand_model

        embodiment = EMBODIMENTS.create("inspire", side=side)
        _INSPIRE_RIGS[side] = SimpleNamespace(side=side, embodiment=embodiment, hand=build_hand_model(embodiment, prefix=f"{side[0]}h_", config=HandModelConfig()))  # fmt: skip
    return _INSPIRE_RIGS[side]


class _PlanningView:
    """A human scene as an Inspire expert sees it: same objects, Inspire hands for the geometry."""

    def __init__(self, env: Any) -> None:
        self._env = env
        self.rigs = {side: _inspire_rig(side) for side in env.sides}
        self.config = dataclasses.replace(env.config, embodiment="inspire")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)

    def home_joints(self, side: str) -> np.ndarray:
        limits = self.rigs[side].hand.joint_limits
        return np.clip(np.zeros(len(limits)), limits[:, 0], limits[:, 1])


def _inspire_tool(view: _PlanningView, side: str, kind: str) -> np.ndarray:
    """Grasp point of the Inspire in its wrist frame, as the expert plans it."""
    from metis_sim.experts import _finger_joints, _grasp_geometry, _inspire

    rig = view.rigs[side]
    if kind == "pinch":
        return _grasp_geometry(view, side, _inspire(1.3, 0.0, 0.15), _inspire(1.3, 0.10, 0.55))  # type: ignore[arg-type]
    if kind == "hook":
        joints = torch.as_tensor(_finger_joints(view, side, 0.0), dtype=torch.float64)  # type: ignore[arg-type]
        return rig.embodiment.forward_kinematics(joints).numpy()[1:].mean(0)
    sign = 1.0 if side == "right" else -1.0
    return np.asarray(rig.hand.palm_centre) + sign * np.array([rig.hand.palm_half_size[0], 0, 0])


def _human_tool(hand: KinematicHand, kind: str) -> np.ndarray:
    """Grasp point of the human hand in its wrist frame (pinch centre, hooked tips, palm face)."""
    if kind == "pinch":
        tips = hand.local_keypoints(POSTURES["pinch"].closed)[[4, 8, 12]]
        return (tips[0] + 0.5 * (tips[1] + tips[2])) / 2
    if kind == "hook":
        return hand.local_keypoints(POSTURES["hook"].open)[[8, 12, 16, 20]].mean(0)
    sign = 1.0 if hand.side == "right" else -1.0
    return PALM_CENTRE + sign * np.array([PALM_HALF[0], 0, 0])


@dataclass
class _HandPlan:
    script: Any
    kind: str
    offset: np.ndarray
    tool: np.ndarray
    low: float
    high: float


class HumanDemo:
    """A kinematic human-hand demonstration of a task: the expert's strategy, objects moved by script.

    Args:
        env: A task built with ``embodiment="human_mano"`` (already reset).
        rng: Randomness of the expert's pose estimates (as for the robot experts).
        config: :class:`~metis_sim.experts.ExpertConfig` of the expert.

    Raises:
        ValueError: If ``env`` has no kinematic human hands or the task has no human demo.
    """

    def __init__(self, env: Any, rng: np.random.Generator, config: Any = None) -> None:
        from metis_sim.experts import EXPERTS

        if not getattr(env, "is_human", False):
            raise ValueError(f"HumanDemo needs a scene with kinematic human hands (embodiment='human_mano'), got embodiment {env.config.embodiment!r}")  # fmt: skip
        if env.name not in HUMAN_GRASPS or env.name not in EXPERTS:
            raise ValueError(f"no human demonstration for task {env.name!r}; they exist for {sorted(HUMAN_GRASPS)}")  # fmt: skip
        self.env = env
        view = _PlanningView(env)
        self.expert = EXPERTS[env.name](view, rng, config)  # type: ignore[arg-type]
        self.hands: dict[str, _HandPlan] = {}
        for side, script in self.expert.scripts.items():
            kind = HUMAN_GRASPS[env.name][side]
            hand = env.kinematic_hands[side]
            tool = _human_tool(hand, kind)
            fingers = np.array([k.joints[2:].mean() for k in script.keyframes[1:]])
            self.hands[side] = _HandPlan(script, kind, _inspire_tool(view, side, kind) - tool, tool, float(fingers.min()), float(fingers.max()))  # fmt: skip
        model = env.model
        self._joints = {model.joint(j).name for j in range(model.njnt)}
        self._object_geoms = env.body_geoms("object") if "object_free" in self._joints else set()
        self._drawer_geoms = env.body_geoms("drawer") if "drawer_slide" in self._joints else set()
        self._lid_geoms = env.body_geoms("lid") if "lid_hinge" in self._joints else set()
        self._grasped: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._hooked: dict[str, tuple[float, float]] = {}
        # the hands' motion is scripted: plan every step's pose and contract vector up front
        hz = env.config.control_hz
        self.steps = int(np.ceil(self.duration * hz))
        self._poses = [{side: self.pose(side, t / hz) for side in self.hands} for t in range(self.steps + 1)]  # fmt: skip
        self._contracts = np.zeros((self.steps + 1, 48))
        for side in self.hands:
            points = np.stack([pose[side][3] for pose in self._poses])
            self._contracts += env.kinematic_hands[side].contract(env.camera_rotation, env.camera_position, points)  # fmt: skip

    @property
    def duration(self) -> float:
        """Length of the demonstration (seconds)."""
        return self.expert.duration

    def label(self, time: float) -> str:
        """Subtask label of the expert's phase at ``time``."""
        return self.expert.label(time)

    def pose(self, side: str, time: float) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
        """``(wrist position, wrist rotation, closure, (21, 3) keypoints)`` in the world at ``time``."""
        plan = self.hands[side]
        position, rotation, joints, _ = plan.script.at(time)
        span = plan.high - plan.low
        closure = (
            float(np.clip((joints[2:].mean() - plan.low) / span, 0, 1)) if span > 1e-6 else 0.0
        )
        wrist = position + rotation @ plan.offset
        keypoints = wrist + self.env.kinematic_hands[side].posture_keypoints(plan.kind, closure) @ rotation.T  # fmt: skip
        return wrist, rotation, closure, keypoints

    def start(self) -> dict:
        """Put the hands at the demonstration's first pose; return the observation there."""
        self.env.place_keypoints({side: pose[3] for side, pose in self._poses[0].items()}, contract=self._contracts[0])  # fmt: skip
        return self.env._observation()

    def step(self, step: int) -> Any:
        """Move the hands to their pose at control step ``step`` (1 …) and the scripted objects."""
        env = self.env
        poses = self._poses[step]
        driven: dict[str, np.ndarray] = {}
        held: set[int] = set()
        if self._object_geoms:
            self._grasp(poses, driven, held)
        if self._drawer_geoms:
            self._drawer(poses, driven, held)
        if self._lid_geoms:
            self._lid(poses, driven, held)
        return env.step_keypoints({side: pose[3] for side, pose in poses.items()}, driven=driven, held=held, contract=self._contracts[step])  # fmt: skip

    def run(self) -> Iterator[tuple[Any, str]]:
        """Play the demonstration; yield ``(StepResult, subtask label)`` per control step."""
        hz = self.env.config.control_hz
        for t in range(1, self.steps + 1):
            result = self.step(t)
            yield result, self.label(t / hz)
            if result.terminated or result.truncated:
                return

    # -- scripted interactions -----------------------------------------------------------------

    def _grasp(self, poses: dict, driven: dict, held: set) -> None:
        position, rotation = self.env.object_pose()
        for side, (wrist, rot, closure, _) in poses.items():
            plan = self.hands[side]
            if plan.kind != "pinch":
                continue
            if side in self._grasped and closure < HOLD_CLOSURE:
                del self._grasped[side]
            elif side not in self._grasped and closure >= HOLD_CLOSURE and np.linalg.norm(position - (wrist + rot @ plan.tool)) < 0.04:  # fmt: skip
                self._grasped[side] = (rot.T @ (position - wrist), rot.T @ rotation)
            if side in self._grasped:
                offset, relative = self._grasped[side]
                driven["object_free"] = np.concatenate([wrist + rot @ offset, _quat(rot @ relative)])  # fmt: skip
                held |= self._object_geoms

    def _drawer(self, poses: dict, driven: dict, held: set) -> None:
        from metis_sim.tasks._furniture import HALF_WIDTH, HEIGHT, PANEL, SLIDE_RANGE

        env = self.env
        opening = env.drawer_opening()
        target = None
        for side, (wrist, _rot, closure, keypoints) in poses.items():
            if self.hands[side].kind != "hook":
                continue
            if side in self._hooked and closure < HOLD_CLOSURE:
                del self._hooked[side]
            elif side not in self._hooked and closure >= HOLD_CLOSURE and np.linalg.norm(keypoints[[8, 12, 16, 20]].mean(0) - env.handle_position()) < 0.07:  # fmt: skip
                self._hooked[side] = (float(wrist[0]), opening)
            if side in self._hooked:
                x0, q0 = self._hooked[side]
                target = float(np.clip(q0 + x0 - wrist[0], 0.0, SLIDE_RANGE))
        if target is None:
            # one-sided push on the front panel's outer face by the pushing hands' keypoints
            cabinet = env.data.xpos[env.model.body("cabinet").id]
            face = cabinet[0] - PANEL - opening
            points = [pose[3] for side, pose in poses.items() if self.hands[side].kind == "hook"]
            if points:
                p = np.concatenate(points)
                inside = (np.abs(p[:, 1] - cabinet[1]) < HALF_WIDTH) & (p[:, 2] > cabinet[2]) & (p[:, 2] < cabinet[2] + HEIGHT)  # fmt: skip
                depth = p[:, 0] + PUSH_RADIUS - face
                pushing = inside & (depth > 0) & (depth < 0.03)
                if pushing.any():
                    target = float(np.clip(opening - depth[pushing].max(), 0.0, opening))
        if target is not None:
            driven["drawer_slide"] = np.array([target])
            held |= self._drawer_geoms

    def _lid(self, poses: dict, driven: dict, held: set) -> None:
        from metis_sim.tasks.close_laptop import BASE_HALF

        env = self.env
        angle = env.lid_angle()
        hinge = env.hinge_position()
        thickness = 0.007 if env.config.variant == "object" else 0.005
        p = np.concatenate([pose[3] for pose in poses.values()]) - hinge
        along = np.array([-np.cos(angle), 0.0, np.sin(angle)])
        normal = np.array([np.sin(angle), 0.0, np.cos(angle)])
        radial, height = p @ along, p @ normal
        reach = thickness + PUSH_RADIUS
        on_lid = (radial > 0) & (radial < env.lid_length) & (np.abs(p[:, 1]) < BASE_HALF[1] - 0.005)  # fmt: skip
        pushing = on_lid & (np.abs(height) < reach)
        if not pushing.any():
            return
        rho = np.hypot(p[pushing, 0], p[pushing, 2])
        phi = np.arctan2(p[pushing, 2], -p[pushing, 0])
        limit = phi - np.arcsin(np.clip(reach / np.maximum(rho, 1e-9), 0.0, 1.0))
        driven["lid_hinge"] = np.array([float(np.clip(min(angle, limit.min()), 0.0, angle))])
        held |= self._lid_geoms


def run_human_demo(env: Any, seed: int, config: Any = None) -> tuple[dict, Iterator[tuple[Any, str]]]:  # fmt: skip
    """Start the human demonstration of ``env`` (already reset at ``seed``).

    Returns:
        ``(first observation, iterator of (StepResult, subtask label))``; the expert's pose
        estimates draw from ``seed + 1_000_000`` as for the robot demonstrations.
    """
    demo = HumanDemo(env, np.random.default_rng(seed + 1_000_000), config)
    return demo.start(), demo.run()
