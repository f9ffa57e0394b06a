"""Scripted experts: waypoints from the estimated object poses, with grasp synthesis per object.

An expert plans, at the start of an episode, a :class:`Script` per hand: keyframes of the wrist
pose (world frame) and the actuated joints, interpolated linearly (positions, joints) and by
slerp (rotations). The object poses it plans from carry an estimation error (``pose_noise_m``,
``yaw_noise_rad``), as a perception module would. Each keyframe names the subtask it belongs to,
which becomes the subtask segments of a recorded demonstration.

The grasp geometry follows the feasibility study (``SIM.md``): the thumb tip faces the index and
middle tips horizontally (wrist tilted 0.85 rad, thumb pitch 0.10, fingers 0.55), and the hand
closes 0.25 rad past contact.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from metis_core.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from metis_sim.env import TABLE_TOP, SimEnv, home_rotation, mirror_rotation

__all__ = [
    "EXPERTS",
    "CloseDrawerExpert",
    "Expert",
    "ExpertConfig",
    "Keyframe",
    "LiftCubeExpert",
    "PinchGrasp",
    "Script",
    "expert_for",
    "run_expert",
]


@dataclass(frozen=True)
class Keyframe:
    """Where a hand should be at time ``time`` (seconds from the start)."""

    time: float
    position: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    label: str


@dataclass
class Script:
    """Keyframes of one hand, interpolated in time."""

    keyframes: list[Keyframe] = field(default_factory=list)
    _relative: dict = field(default_factory=dict, repr=False, compare=False)

    def add(self, duration: float, position, rotation, joints, label: str) -> Script:  # type: ignore[no-untyped-def]
        start = self.keyframes[-1].time if self.keyframes else 0.0
        self.keyframes.append(Keyframe(start + duration, np.asarray(position, float), np.asarray(rotation, float), np.asarray(joints, float), label))  # fmt: skip
        return self

    def hold(self, duration: float, label: str | None = None) -> Script:
        last = self.keyframes[-1]
        return self.add(duration, last.position, last.rotation, last.joints, label or last.label)

    @property
    def duration(self) -> float:
        return self.keyframes[-1].time

    def at(self, time: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Interpolated ``(position, rotation, joints, label)`` at ``time``."""
        frames = self.keyframes
        if time <= frames[0].time:
            k = frames[0]
            return k.position, k.rotation, k.joints, k.label
        for before, after in itertools.pairwise(frames):
            if time <= after.time:
                u = (time - before.time) / max(after.time - before.time, 1e-9)
                u = 0.5 - 0.5 * np.cos(np.pi * u)  # ease in and out
                key = id(before), id(after)
                if key not in self._relative:
                    self._relative[key] = matrix_to_axis_angle(before.rotation.T @ after.rotation)
                relative = self._relative[key]
                rotation = before.rotation @ axis_angle_to_matrix(relative * u)
                return (
                    before.position + u * (after.position - before.position),
                    rotation,
                    before.joints + u * (after.joints - before.joints),
                    after.label,
                )
        k = frames[-1]
        return k.position, k.rotation, k.joints, k.label


def _rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


def _grasp_geometry(env: SimEnv, side: str, open_joints: np.ndarray, closed_joints: np.ndarray) -> np.ndarray:  # fmt: skip
    """Grasp centre in the wrist frame: between the thumb and the index/middle tips at contact."""
    embodiment = env.rigs[side].embodiment
    tips = embodiment.forward_kinematics(torch.as_tensor(closed_joints, dtype=torch.float64)).numpy()  # fmt: skip
    return (tips[0] + 0.5 * (tips[1] + tips[2])) / 2


# -- Inspire joint presets (thumb yaw, thumb pitch, index, middle, ring, little) ----------------


def _inspire(thumb_yaw: float, thumb_pitch: float, fingers: float) -> np.ndarray:
    return np.array([thumb_yaw, thumb_pitch, fingers, fingers, fingers, fingers])


@dataclass(frozen=True, kw_only=True)
class ExpertConfig:
    """Expert settings.

    Args:
        pose_noise_m: Uniform error of the estimated object positions (± metres).
        yaw_noise_rad: Uniform error of the estimated object yaw (± radians).
        tilt_rad: Wrist tilt of the pinch grasp (fingers down from horizontal).
    """

    pose_noise_m: float = 0.006
    yaw_noise_rad: float = 0.05
    tilt_rad: float = 0.85

    def __post_init__(self) -> None:
        if self.pose_noise_m < 0 or self.yaw_noise_rad < 0:
            raise ValueError(f"pose_noise_m and yaw_noise_rad must be >= 0, got {self.pose_noise_m}, {self.yaw_noise_rad}")  # fmt: skip
        if not 0 <= self.tilt_rad < 1.5:
            raise ValueError(f"tilt_rad must be in [0, 1.5), got {self.tilt_rad}")


class Expert:
    """Base of the scripted experts: builds the scripts at reset, then plays them."""

    #: Hands the expert's grasps are tuned for (None: any hand, through :func:`_finger_joints`).
    embodiments: tuple[str, ...] | None = None

    def __init__(self, env: SimEnv, rng: np.random.Generator, config: ExpertConfig | None = None) -> None:  # fmt: skip
        if self.embodiments is not None and env.config.embodiment not in self.embodiments:
            raise ValueError(f"the {env.name} expert's grasp is tuned for {list(self.embodiments)}, not {env.config.embodiment!r}: record with an Inspire hand and replay the contract actions on {env.config.embodiment!r} (`--policy schedule:DATASET --embodiment {env.config.embodiment}`)")  # fmt: skip
        self.env = env
        self.rng = rng
        self.config = config or ExpertConfig()
        self.scripts: dict[str, Script] = self.plan()

    def noisy(self, position: np.ndarray) -> np.ndarray:
        return position + self.rng.uniform(-1, 1, 3) * self.config.pose_noise_m * np.array([1, 1, 0.3])  # fmt: skip

    def plan(self) -> dict[str, Script]:
        raise NotImplementedError

    @property
    def duration(self) -> float:
        return max(s.duration for s in self.scripts.values())

    def targets(self, time: float) -> tuple[dict, str]:
        out, label = {}, ""
        for side, script in self.scripts.items():
            position, rotation, joints, label_side = script.at(time)
            out[side] = (position, rotation, joints)
            label = label or label_side
        return out, self.label(time)

    def label(self, time: float) -> str:
        # the subtask is the label of the hand whose keyframes change at this time
        for side in ("left", "right"):
            if side in self.scripts:
                script = self.scripts[side]
                index = next((i for i, k in enumerate(script.keyframes) if time <= k.time), len(script.keyframes) - 1)  # fmt: skip
                key = script.keyframes[index]
                if index > 0 and not _same(script.keyframes[index - 1], key):
                    return key.label
        side = next(iter(self.scripts))
        return self.scripts[side].at(time)[3]


def _same(a: Keyframe, b: Keyframe) -> bool:
    return bool(np.allclose(a.position, b.position) and np.allclose(a.rotation, b.rotation) and np.allclose(a.joints, b.joints))  # fmt: skip


def pinch_rotation(side: str, yaw: float, tilt: float) -> np.ndarray:
    """Palm down, fingers forward and tilted down by ``tilt``, turned by ``yaw`` about z."""
    right = _rot_z(yaw) @ _rot_y(tilt) @ home_rotation("right")
    return right if side == "right" else mirror_rotation(right)


class PinchGrasp(NamedTuple):
    """A planned pinch: wrist rotation, grasp centre (wrist frame), wrist position, postures."""

    rotation: np.ndarray
    centre: np.ndarray
    wrist: np.ndarray
    open_joints: np.ndarray
    squeeze_joints: np.ndarray


class PickPlaceExpert(Expert):
    """Pinch the object from above-behind, lift, carry over the plate, lower, release, retreat."""

    embodiments = ("inspire",)

    def pinch(self) -> PinchGrasp:
        """Plan the pinch of the object from its estimated pose (draws the estimation noise)."""
        env = self.env
        position, rotation = env.object_pose()  # type: ignore[attr-defined]
        position = self.noisy(position)
        yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4 + self.rng.uniform(-1, 1) * self.config.yaw_noise_rad  # fmt: skip
        open_j, closed_j, squeeze_j = _inspire(1.3, 0.0, 0.15), _inspire(1.3, 0.10, 0.55), _inspire(1.3, 0.30, 0.85)  # fmt: skip
        rot = pinch_rotation("right", yaw, self.config.tilt_rad)
        centre = _grasp_geometry(env, "right", open_j, closed_j)
        grasp = position - rot @ centre
        grasp[2] = max(grasp[2], TABLE_TOP + 0.005)
        return PinchGrasp(rot, centre, grasp, open_j, squeeze_j)

    def plan(self) -> dict[str, Script]:
        env = self.env
        rot, centre, grasp, open_j, squeeze_j = self.pinch()
        plate = self.noisy(env.plate_position())  # type: ignore[attr-defined]
        above = grasp + np.array([0, 0, 0.10])
        lift = grasp + np.array([0, 0, 0.12])
        carry = np.array([plate[0], plate[1], 0]) - (rot @ centre) * np.array([1, 1, 0]) + np.array([0, 0, lift[2]])  # fmt: skip
        place = carry - np.array([0, 0, 0.10])
        home_p, home_r = env.home_pose("right")
        s = Script()
        s.add(0.0, home_p, home_r, env.home_joints("right"), "reach the object")
        s.add(1.4, above, rot, open_j, "reach the object")
        s.add(1.0, grasp, rot, open_j, "reach the object")
        s.add(0.6, grasp, rot, squeeze_j, "grasp the object")
        s.hold(0.3)
        s.add(1.0, lift, rot, squeeze_j, "lift the object")
        s.add(1.5, carry, rot, squeeze_j, "move it above the plate")
        s.add(1.0, place, rot, squeeze_j, "place it on the plate")
        s.add(0.5, place, rot, open_j, "release the object")
        s.add(1.0, place + np.array([0, 0, 0.12]), rot, open_j, "retreat")
        s.hold(0.7)
        return {"right": s}


def hook_rotation(side: str) -> np.ndarray:
    """Fingers pointing down, palm facing the robot (to hang the fingers behind a bar handle)."""
    right = np.stack([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]], axis=1)
    return right if side == "right" else mirror_rotation(right)


def _finger_joints(env: SimEnv, side: str, flex: float, thumb_yaw: float = 0.0, thumb_pitch: float = 0.0) -> np.ndarray:  # fmt: skip
    """Joint targets of a simple posture: every finger flexed by ``flex`` (Inspire or any hand).

    For hands other than the Inspire, every joint whose name does not contain ``thumb`` and is
    a flexion joint gets ``flex``; the rest stay at zero (clamped into the limits).
    """
    rig = env.rigs[side]
    names = rig.hand.joint_names
    limits = rig.hand.joint_limits
    if env.config.embodiment == "inspire":
        return np.clip(_inspire(thumb_yaw, thumb_pitch, flex), limits[:, 0], limits[:, 1])
    out = np.zeros(len(names))
    for i, name in enumerate(names):
        if "thumb" not in name and ("flex" in name or "proximal" in name):
            out[i] = flex
    return np.clip(out, limits[:, 0], limits[:, 1])


def _hook_wrist(env: SimEnv, side: str, handle: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> np.ndarray:  # fmt: skip
    """Wrist position that hangs the four fingers in the gap behind the handle, 3 cm below it."""
    from metis_sim.tasks._furniture import HANDLE_OFFSET

    tips = env.rigs[side].embodiment.forward_kinematics(torch.as_tensor(joints, dtype=torch.float64)).numpy()  # fmt: skip
    target = handle + np.array([HANDLE_OFFSET / 2, 0.0, -0.03])
    return target - rotation @ tips[1:].mean(0)


def hook_and_pull(env: SimEnv, side: str, handle: np.ndarray, script: Script, *, start: float, pull_m: float = 0.16) -> np.ndarray:  # fmt: skip
    """Append reach → hook → pull keyframes to ``script``; return the pulled wrist position."""
    rotation = hook_rotation(side)
    open_j, hook_j = _finger_joints(env, side, 0.0), _finger_joints(env, side, 0.5)
    wrist = _hook_wrist(env, side, handle, rotation, open_j)
    if start > 0:
        script.hold(start)
    # turn the fingers down in front of the cabinet, then come over the gap and lower them in
    script.add(1.0, wrist + np.array([-0.12, 0, 0.10]), rotation, open_j, "reach the handle")
    script.add(0.6, wrist + np.array([0, 0, 0.06]), rotation, open_j, "reach the handle")
    script.add(0.8, wrist, rotation, open_j, "reach the handle")
    script.add(0.4, wrist, rotation, hook_j, "hook the handle")
    pulled = wrist - np.array([pull_m, 0, 0])
    script.add(2.0, pulled, rotation, hook_j, "pull the drawer open")
    return pulled


class OpenDrawerExpert(Expert):
    """Hang the fingers behind the bar handle, curl them, pull 16 cm, release, retreat."""

    def plan(self) -> dict[str, Script]:
        env = self.env
        handle = self.noisy(env.handle_position())  # type: ignore[attr-defined]
        home_p, home_r = env.home_pose("right")
        s = Script().add(0.0, home_p, home_r, env.home_joints("right"), "reach the handle")
        pulled = hook_and_pull(env, "right", handle, s, start=0.0)
        rotation, open_j = hook_rotation("right"), _finger_joints(env, "right", 0.0)
        s.add(0.4, pulled, rotation, open_j, "release the handle")
        s.add(0.8, pulled + np.array([-0.03, 0, 0.10]), rotation, open_j, "retreat")
        s.hold(0.5)
        return {"right": s}


def laptop_push_rotation(side: str, angle: float) -> np.ndarray:
    """Palm facing the lid's outer face (lid at ``angle``), fingers along the hinge (+y)."""
    normal = np.array([np.sin(angle), 0.0, np.cos(angle)])
    x = -normal
    z = np.array([0.0, 1.0, 0.0])
    right = np.stack([x, np.cross(z, x), z], axis=1)
    return right if side == "right" else mirror_rotation(right)


class CloseLaptopExpert(Expert):
    """Go over the lid, put the palm on its outer face, sweep it down around the hinge."""

    def plan(self) -> dict[str, Script]:
        env = self.env
        hinge = self.noisy(env.hinge_position())  # type: ignore[attr-defined]
        start = env.start_angle + self.rng.uniform(-1, 1) * self.config.yaw_noise_rad  # type: ignore[attr-defined]
        length = env.lid_length  # type: ignore[attr-defined]
        rig = env.rigs["right"]
        palm, palm_half = rig.hand.palm_centre, rig.hand.palm_half_size
        flat = _finger_joints(env, "right", 0.0, thumb_yaw=0.0)

        def wrist(angle: float, gap: float) -> tuple[np.ndarray, np.ndarray]:
            along = np.array([-np.cos(angle), 0.0, np.sin(angle)])
            normal = np.array([np.sin(angle), 0.0, np.cos(angle)])
            contact = hinge + 0.62 * length * along + (0.007 + palm_half[0] + gap) * normal
            rotation = laptop_push_rotation("right", angle)
            return contact - rotation @ palm, rotation

        home_p, home_r = env.home_pose("right")
        s = Script().add(0.0, home_p, home_r, env.home_joints("right"), "reach the lid")
        over_p, over_r = wrist(start, 0.10)
        # turn first, away from the lid: the home pose points the fingers at it
        s.add(0.6, home_p + np.array([-0.05, -0.05, 0.12]), over_r, flat, "reach the lid")
        s.add(1.0, over_p + np.array([-0.05, 0, 0.12]), over_r, flat, "reach the lid")
        s.add(0.8, over_p, over_r, flat, "reach the lid")
        pre_p, pre_r = wrist(start, 0.02)
        s.add(0.6, pre_p, pre_r, flat, "reach the lid")
        angles = np.linspace(start, -0.04, 6)
        for angle in angles[1:]:
            p, r = wrist(float(angle), -0.004)
            s.add(0.45, p, r, flat, "push the lid down")
        s.hold(0.3)
        s.add(0.8, s.keyframes[-1].position + np.array([0, 0, 0.12]), s.keyframes[-1].rotation, flat, "retreat")  # fmt: skip
        s.hold(0.5)
        return {"right": s}


class BimanualDrawerExpert(Expert):
    """Left hand opens the drawer; right hand puts the object in; left hand pushes it shut."""

    embodiments = ("inspire",)

    def plan(self) -> dict[str, Script]:
        from metis_sim.tasks._furniture import INTERIOR, PANEL

        env = self.env
        handle = self.noisy(env.handle_position())  # type: ignore[attr-defined]
        left_p, left_r = env.home_pose("left")
        left = Script().add(0.0, left_p, left_r, env.home_joints("left"), "open the drawer")
        pulled = hook_and_pull(env, "left", handle, left, start=0.0, pull_m=0.16)
        rotation = hook_rotation("left")
        open_j = _finger_joints(env, "left", 0.0)
        left.hold(4.3)  # wait for the right hand (until t = 9.2 s)
        left.add(0.3, pulled, rotation, open_j, "close the drawer")
        left.add(1.8, pulled + np.array([0.19, 0, 0]), rotation, open_j, "close the drawer")
        left.add(0.8, pulled + np.array([0.12, 0, 0.12]), rotation, open_j, "close the drawer")
        left.hold(0.3)

        position, obj_rotation = env.object_pose()  # type: ignore[attr-defined]
        position = self.noisy(position)
        yaw = float(np.arctan2(obj_rotation[1, 0], obj_rotation[0, 0]))
        yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
        open_r, closed_r, squeeze_r = _inspire(1.3, 0.0, 0.15), _inspire(1.3, 0.10, 0.55), _inspire(1.3, 0.30, 0.85)  # fmt: skip
        rot = pinch_rotation("right", yaw, self.config.tilt_rad)
        centre = _grasp_geometry(env, "right", open_r, closed_r)
        grasp = position - rot @ centre
        grasp[2] = max(grasp[2], TABLE_TOP + 0.005)
        cabinet = env.data.xpos[env.model.body("cabinet").id]
        drop = np.array([cabinet[0] - 0.15 + PANEL + 0.07 + 0.0, cabinet[1], TABLE_TOP + INTERIOR[2] + 0.025 + 0.03])  # fmt: skip
        drop_wrist = drop - rot @ centre
        high = max(grasp[2], drop_wrist[2]) + 0.13
        home_p, home_r = env.home_pose("right")
        right = Script().add(0.0, home_p, home_r, env.home_joints("right"), "put the cube in the drawer")  # fmt: skip
        right.hold(2.0)
        right.add(1.4, grasp + np.array([0, 0, 0.10]), rot, open_r, "put the cube in the drawer")
        right.add(1.0, grasp, rot, open_r, "put the cube in the drawer")
        right.add(0.6, grasp, rot, squeeze_r, "put the cube in the drawer")
        right.hold(0.3)
        right.add(1.0, np.array([grasp[0], grasp[1], high]), rot, squeeze_r, "put the cube in the drawer")  # fmt: skip
        right.add(1.4, np.array([drop_wrist[0], drop_wrist[1], high]), rot, squeeze_r, "put the cube in the drawer")  # fmt: skip
        right.add(0.8, drop_wrist, rot, squeeze_r, "put the cube in the drawer")
        right.add(0.4, drop_wrist, rot, open_r, "put the cube in the drawer")
        right.add(0.8, drop_wrist + np.array([-0.04, -0.08, 0.15]), rot, open_r, "put the cube in the drawer")  # fmt: skip
        right.hold(3.2)
        return {"left": left, "right": right}

    def label(self, time: float) -> str:
        if time <= 5.0:
            return "open the drawer"
        if time <= 9.0:
            return "put the cube in the drawer"
        return "close the drawer"


class LiftCubeExpert(PickPlaceExpert):
    """Pinch the object like :class:`PickPlaceExpert`, lift it 12 cm, hold it, put it back down."""

    def plan(self) -> dict[str, Script]:
        env = self.env
        rot, _centre, grasp, open_j, squeeze_j = self.pinch()
        lift = grasp + np.array([0, 0, 0.12])
        down = grasp + np.array([0, 0, 0.01])
        home_p, home_r = env.home_pose("right")
        s = Script()
        s.add(0.0, home_p, home_r, env.home_joints("right"), "reach the object")
        s.add(1.4, grasp + np.array([0, 0, 0.10]), rot, open_j, "reach the object")
        s.add(1.0, grasp, rot, open_j, "reach the object")
        s.add(0.6, grasp, rot, squeeze_j, "grasp the object")
        s.hold(0.3)
        s.add(1.2, lift, rot, squeeze_j, "lift the object")
        s.hold(1.2, "hold it up")
        s.add(1.0, down, rot, squeeze_j, "put it down")
        s.add(0.5, down, rot, open_j, "release the object")
        s.add(1.0, down + np.array([0, 0, 0.12]), rot, open_j, "retreat")
        s.hold(0.5)
        return {"right": s}


class CloseDrawerExpert(Expert):
    """Hang the open fingers in the gap behind the handle, push the drawer shut, retreat."""

    def plan(self) -> dict[str, Script]:
        env = self.env
        handle = self.noisy(env.handle_position())  # type: ignore[attr-defined]
        opening = env.drawer_opening() + self.rng.uniform(-1, 1) * self.config.pose_noise_m  # type: ignore[attr-defined]
        rotation, open_j = hook_rotation("right"), _finger_joints(env, "right", 0.0)
        wrist = _hook_wrist(env, "right", handle, rotation, open_j)
        home_p, home_r = env.home_pose("right")
        s = Script().add(0.0, home_p, home_r, env.home_joints("right"), "reach the drawer")
        # back and up first: the open drawer's front is under the fingers of the home pose
        s.add(0.6, home_p + np.array([-0.10, 0, 0.12]), home_r, open_j, "reach the drawer")
        s.add(1.0, wrist + np.array([-0.12, 0, 0.10]), rotation, open_j, "reach the drawer")
        s.add(0.6, wrist + np.array([0, 0, 0.06]), rotation, open_j, "reach the drawer")
        s.add(0.8, wrist, rotation, open_j, "reach the drawer")
        pushed = wrist + np.array([opening + 0.03, 0, 0])
        s.add(2.0, pushed, rotation, open_j, "push the drawer shut")
        s.hold(0.3)
        s.add(0.8, pushed + np.array([-0.10, 0, 0.12]), rotation, open_j, "retreat")
        s.hold(0.5)
        return {"right": s}


def run_expert(env: SimEnv, expert: Expert):  # type: ignore[no-untyped-def]
    """Play an expert in ``env`` (already reset); yield ``(StepResult, subtask label)`` per step."""
    steps = int(np.ceil(expert.duration * env.config.control_hz))
    for t in range(1, steps + 1):
        targets, label = expert.targets(t / env.config.control_hz)
        result = env.step_joints(targets)
        yield result, label
        if result.terminated or result.truncated:
            return


EXPERTS: dict[str, type[Expert]] = {
    "pick_place": PickPlaceExpert,
    "open_drawer": OpenDrawerExpert,
    "close_laptop": CloseLaptopExpert,
    "bimanual_drawer": BimanualDrawerExpert,
    "lift_cube": LiftCubeExpert,
    "close_drawer": CloseDrawerExpert,
}


def expert_for(env: SimEnv, rng: np.random.Generator, config: ExpertConfig | None = None) -> Expert:
    """The scripted expert of ``env``'s task.

    Raises:
        ValueError: If the task has no expert.
    """
    if env.name not in EXPERTS:
        raise ValueError(f"no scripted expert for task {env.name!r}; experts exist for {sorted(EXPERTS)}")  # fmt: skip
    return EXPERTS[env.name](env, rng, config)
