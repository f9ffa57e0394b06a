"""The base of every simulated task: a Gymnasium environment observed and driven in the contract.

Observation (a dict):

* ``image`` — ``(224, 224, 3)`` uint8 RGB from the ego (head) camera;
* ``state`` — ``(48,)`` float32 hand state in the contract: wrist poses in the ego camera frame
  (OpenCV convention), fingertips in each wrist frame, measured from the simulation;
* ``hand_mask`` — ``(2,)`` bool presence of (left, right).

Action: ``(48,)`` contract targets. The wrist targets (clamped to a reachable box and
speed-limited) move each hand's mocap body; the fingertip targets go through the embodiment's
IK (warm-started from the last solution) to the position actuators. :meth:`SimEnv.step_chunk`
solves the IK of a whole chunk in one batched call, which is how policies are evaluated.

A simulation warning (``mjWARN_BADQACC``, a non-finite state) or an object thrown off the table
ends the episode as a failure (``info["diverged"]``), never as a success.

With ``embodiment="human_mano"`` the scene holds kinematic human hands instead
(:class:`metis_sim.human.KinematicHand`): :meth:`SimEnv.step_keypoints` poses them and moves the
joints a demonstration script drives; the state is the embodiment's contract of the drawn
keypoints.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch

from metis_core.config import ComponentConfig
from metis_core.contract import HAND_LAYOUTS
from metis_core.interfaces import Env
from metis_core.registry import EMBODIMENTS
from metis_core.rotations import axis_angle_to_matrix, matrix_to_axis_angle, rot6d_to_matrix
from metis_sim.hand_model import HandModel, HandModelConfig, build_hand_model
from metis_sim.scene import (
    CAMERA_FOVY_DEG,
    CAMERA_POSITION,
    VARIANTS,
    WORKSPACE,
    camera_rotation,
    scene_xml,
)

os.environ.setdefault("MUJOCO_GL", "egl")
import mujoco

__all__ = [
    "HUMAN_EMBODIMENTS",
    "EnvConfig",
    "HandRig",
    "SimEnv",
    "StepResult",
    "home_rotation",
    "mirror_rotation",
]

_S = np.diag([1.0, -1.0, 1.0])  # world reflection y -> -y (right hand <-> left hand)
_M = np.diag([-1.0, 1.0, 1.0])  # wrist-frame mirror of the contract


def mirror_rotation(rotation: np.ndarray) -> np.ndarray:
    """World wrist orientation of the left hand that mirrors a right-hand one (``S R M``)."""
    return _S @ rotation @ _M


def home_rotation(side: str) -> np.ndarray:
    """Palm down, fingers forward (x out of the palm → -z world, z to the fingers → +x world)."""
    right = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return right if side == "right" else mirror_rotation(right)


def _use_headless_gl() -> None:
    """Render through EGL when no display is available, even if mujoco was imported first.

    MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when it is first imported (other packages,
    e.g. pytorch-kinematics, import it early); without a display the default (GLFW) cannot work,
    so the offscreen renderer is pointed at the EGL context instead.
    """
    from mujoco.rendering.classic import gl_context

    chosen = os.environ.get("MUJOCO_GL", "").lower()
    if os.environ.get("DISPLAY") or (chosen in ("osmesa", "egl") and "glfw" not in str(getattr(gl_context, "GLContext", ""))):  # fmt: skip
        return
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    from mujoco.egl import GLContext

    gl_context.GLContext = GLContext


@dataclass(frozen=True, kw_only=True)
class EnvConfig(ComponentConfig):
    """Config shared by the simulated tasks.

    Args:
        embodiment: Registry name of the robot hand (``"inspire"``, ``"sharpawave"``, a plugin),
            or ``"human_mano"`` for kinematic human hands drawn from keypoints (no robot hand in
            the scene, no hand physics; see :mod:`metis_sim.human`).
        variant: ``"default"`` or an out-of-distribution variant (see :data:`metis_sim.scene.VARIANTS`).
        render: Render the ego image (off for fast physics-only tests).
        image_size: Ego image height and width.
        control_hz: Control (and recording) rate.
        substeps: Physics steps per control step.
        max_seconds: Episode time limit.
        terminate_on_success: End the episode at the first successful step (evaluation); the
            recorder turns it off to let the expert finish its motion.
        max_wrist_speed: Wrist target speed limit (m/s).
        max_wrist_turn: Wrist target angular speed limit (rad/s).
        layout_seed: Seed of the variant's fixed layout (clutter).
    """

    embodiment: str = "inspire"
    variant: str = "default"
    render: bool = True
    image_size: int = 224
    control_hz: float = 30.0
    substeps: int = 16
    max_seconds: float = 12.0
    terminate_on_success: bool = True
    max_wrist_speed: float = 1.5
    max_wrist_turn: float = 6.0
    layout_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be an even number >= 16, got {self.image_size}")
        for name in ("control_hz", "max_seconds", "max_wrist_speed", "max_wrist_turn"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.substeps < 1:
            raise ValueError(f"substeps must be >= 1, got {self.substeps}")


@dataclass
class HandRig:
    """One simulated hand: its embodiment, model pieces and MuJoCo ids."""

    side: str
    embodiment: Any
    hand: HandModel
    qpos_adr: np.ndarray
    urdf_qpos_adr: np.ndarray
    actuator_ids: np.ndarray
    site_ids: np.ndarray
    body_id: int
    mocap_id: int
    free_qpos_adr: int
    last_joints: torch.Tensor = field(default=None)  # type: ignore[assignment]
    target_position: np.ndarray = field(default=None)  # type: ignore[assignment]
    target_rotation: np.ndarray = field(default=None)  # type: ignore[assignment]


@dataclass(frozen=True)
class StepResult:
    """One control step: what :meth:`gymnasium.Env.step` returns, named."""

    observation: dict
    reward: float
    terminated: bool
    truncated: bool
    info: dict


class SimEnv(Env, gym.Env, abc.ABC):
    """Base of the tasks. Subclasses set ``name``, ``config_class``, ``sides`` and the task hooks.

    Attributes:
        sides: Hands in the scene (``("right",)`` or ``("left", "right")``).
        num_stages: Progress stages of the task (progress rate = stages reached / num_stages).
        metadata: Gymnasium metadata.
    """

    sides: ClassVar[tuple[str, ...]] = ("right",)
    num_stages: ClassVar[int] = 4
    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, config: EnvConfig | None = None) -> None:
        self.config = config or self.config_class()
        self.render_mode = "rgb_array"
        layout_rng = np.random.default_rng(self.config.layout_seed)
        rigs_models: list[tuple[str, Any, Any]] = []
        #: Kinematic human hands (embodiment ``human_mano``) instead of simulated robot hands.
        self.kinematic_hands: dict[str, Any] = {}
        human = _is_human(self.config.embodiment)
        for side in self.sides:
            embodiment = EMBODIMENTS.create(self.config.embodiment, side=side)
            if human:
                from metis_sim.human import KinematicHand

                rigs_models.append((side, embodiment, KinematicHand(embodiment, prefix=f"{side[0]}h_")))  # fmt: skip
            else:
                rigs_models.append((side, embodiment, build_hand_model(embodiment, prefix=f"{side[0]}h_", config=HandModelConfig())))  # fmt: skip
        xml = scene_xml(
            hands=[m for _, _, m in rigs_models],
            objects=self._objects_xml(self.config.variant),
            variant=self.config.variant,
            extra=self._extra_xml(self.config.variant),
            rng=layout_rng,
            timestep=1.0 / (self.config.control_hz * self.config.substeps),
            image_size=self.config.image_size,
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.rigs: dict[str, HandRig] = {}
        for side, embodiment, hand in rigs_models:
            if human:
                hand.bind(self.model)
                self.kinematic_hands[side] = hand
                continue
            joint_ids = [self.model.joint(hand.prefix + n).id for n in hand.joint_names]
            urdf_ids = [self.model.joint(hand.prefix + n).id for n in hand.urdf_joint_names]
            body_id = self.model.body(hand.root_body).id
            self.rigs[side] = HandRig(
                side=side,
                embodiment=embodiment,
                hand=hand,
                qpos_adr=self.model.jnt_qposadr[joint_ids].copy(),
                urdf_qpos_adr=self.model.jnt_qposadr[urdf_ids].copy(),
                actuator_ids=np.array(
                    [self.model.actuator(hand.prefix + n).id for n in hand.joint_names]
                ),
                site_ids=np.array([self.model.site(s).id for s in hand.fingertip_sites]),
                body_id=body_id,
                mocap_id=int(self.model.body_mocapid[self.model.body(hand.mocap_body).id]),
                free_qpos_adr=int(
                    self.model.jnt_qposadr[self.model.joint(f"{hand.prefix}root").id]
                ),
            )
        self.camera_rotation = camera_rotation()
        self.camera_position = CAMERA_POSITION.copy()
        size = self.config.image_size
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
                "state": gym.spaces.Box(-np.inf, np.inf, (48,), np.float32),
                "hand_mask": gym.spaces.MultiBinary(2),
            }
        )
        self.action_space = gym.spaces.Box(-2.0, 2.0, (48,), np.float32)
        self._renderer: Any = None
        self._light_diffuse = self.model.light_diffuse.copy()
        self._steps = 0
        self._stage = 0
        self._success = False
        self._diverged = ""
        self._episode_rng = np.random.default_rng(0)
        self._instruction = ""
        #: Geoms the demonstration script holds or pushes (they count as touching a kinematic hand).
        self._script_contacts: set[int] = set()
        self._driven: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._human_contract: np.ndarray | None = None

    # -- task hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def _objects_xml(self, variant: str) -> str:
        """Task bodies (inside ``<worldbody>``) for a variant."""

    @abc.abstractmethod
    def _randomize(self, rng: np.random.Generator) -> None:
        """Place and randomise the task's objects in ``self.data``/``self.model`` (before settling)."""

    @abc.abstractmethod
    def _evaluate(self) -> tuple[bool, int]:
        """``(success, stage reached now)`` from object poses and contacts."""

    def _extra_xml(self, variant: str) -> str:
        """Top-level MJCF elements of the task (contact exclusions); none by default."""
        return ""

    def _make_instruction(self, rng: np.random.Generator) -> str:
        return self.default_instruction

    default_instruction: ClassVar[str] = ""
    #: Subtask label of each progress stage (the label of the next stage to reach).
    stage_labels: ClassVar[tuple[str, ...]] = ()

    # -- Env interface ------------------------------------------------------------------------

    @property
    def instruction(self) -> str:
        """The language instruction of the current episode."""
        return self._instruction

    @property
    def subtask(self) -> str:
        """Label of the stage being worked on (the next one to reach)."""
        if not self.stage_labels:
            return self._instruction
        return self.stage_labels[min(self._stage, len(self.stage_labels) - 1)]

    @property
    def max_steps(self) -> int:
        """Control steps before truncation."""
        return round(self.config.max_seconds * self.config.control_hz)

    @property
    def hand_mask(self) -> np.ndarray:
        """``(2,)`` presence of (left, right)."""
        return np.array([s in self.rigs or s in self.kinematic_hands for s in ("left", "right")])

    @property
    def is_human(self) -> bool:
        """Whether the hands are kinematic human hands (``embodiment="human_mano"``)."""
        return bool(self.kinematic_hands)

    @property
    def camera_intrinsics(self) -> np.ndarray:
        """``(3, 3)`` pinhole K of the ego image in pixels."""
        size = self.config.image_size
        focal = (size / 2) / np.tan(np.deg2rad(CAMERA_FOVY_DEG) / 2)
        return np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """Start an episode with objects, masses and frictions drawn from ``seed``."""
        super().reset(seed=seed)
        rng = np.random.default_rng(seed)
        self._episode_rng = rng
        mujoco.mj_resetData(self.model, self.data)
        self.model.light_diffuse[:] = self._light_diffuse
        for rig in self.rigs.values():
            position, rotation = self.home_pose(rig.side)
            joints = self.home_joints(rig.side)
            self._place_hand(rig, position, rotation, joints)
        self._script_contacts, self._driven = set(), []
        for side, hand in self.kinematic_hands.items():
            # a separate stream: the task's randomisation stays that of the robot scenes
            hand.set_skin(self.model, np.random.default_rng([0 if seed is None else seed, 1729]))
            position, rotation = self.home_pose(side)
            self.place_keypoints({side: hand.open_keypoints(position, rotation)})
        self._randomize(rng)
        self._instruction = self._make_instruction(rng)
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        self._stage = 0
        self._success = False
        self._diverged = ""
        # let objects settle on their supports before the first observation
        for _ in range(int(0.2 * self.config.control_hz * self.config.substeps)):
            mujoco.mj_step(self.model, self.data)
        self._check_divergence()
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        """Apply one ``(48,)`` contract action (see the module docstring)."""
        result = self.step_chunk(np.asarray(action, dtype=np.float32)[None])[-1]
        return result.observation, result.reward, result.terminated, result.truncated, result.info

    def step_chunk(self, actions: Any, *, render_every_step: bool = True) -> list[StepResult]:
        """Execute a ``(C, 48)`` chunk of contract actions at the control rate.

        The IK of the whole chunk is solved in one batched call per hand, warm-started from the
        last solution. Stops early when the episode ends. ``render_every_step=False`` renders
        only the last step's image (what a policy sees next; about half the time of a chunk
        goes to rendering); the other steps' observations then hold ``"image": None``.

        Returns:
            One :class:`StepResult` per executed step.

        Raises:
            ValueError: For a chunk that is not ``(C, 48)`` finite floats.
        """
        if self.is_human:
            raise ValueError(f"{self.name}: the {self.config.embodiment} hands are kinematic: drive them with step_keypoints() (metis_sim.human.HumanDemo), not with contract actions")  # fmt: skip
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != 48 or actions.shape[0] < 1:
            raise ValueError(f"{self.name}: expected a (C, 48) chunk of contract actions, got shape {actions.shape}")  # fmt: skip
        if not np.isfinite(actions).all():
            raise ValueError(f"{self.name}: the action chunk contains NaN or infinity")
        joints = {side: self._solve_ik(rig, actions) for side, rig in self.rigs.items()}
        results = []
        for t in range(actions.shape[0]):
            for side, rig in self.rigs.items():
                layout = HAND_LAYOUTS[side]
                position = self.camera_rotation @ actions[t, layout.wrist_position] + self.camera_position  # fmt: skip
                rotation = self.camera_rotation @ rot6d_to_matrix(actions[t, layout.wrist_rot6d])
                self._command(rig, position, rotation, joints[side][t])
            last = t == actions.shape[0] - 1
            results.append(self._advance(actions[t], render=render_every_step or last))
            if results[-1].terminated or results[-1].truncated:
                if results[-1].observation["image"] is None:
                    results[-1].observation["image"] = self.render() if self.config.render else np.zeros((self.config.image_size,) * 2 + (3,), np.uint8)  # fmt: skip
                break
        return results

    def step_joints(
        self, targets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    ) -> StepResult:
        """Drive the hands with world wrist targets and joint targets (scripted experts).

        Args:
            targets: side → ``(wrist position (3,), wrist rotation (3, 3), joints (J,))`` in the
                world frame; hands not named keep their targets.

        Returns:
            The step; ``info["action"]`` is the equivalent ``(48,)`` contract action (wrist
            targets in the ego frame, fingertips of the joint targets by the embodiment's FK).
        """
        if self.is_human:
            raise ValueError(f"{self.name}: the {self.config.embodiment} hands are kinematic: drive them with step_keypoints(), not with joint targets")  # fmt: skip
        action = np.zeros(48)
        for side, rig in self.rigs.items():
            if side in targets:
                position, rotation, joints = targets[side]
                self._command(rig, np.asarray(position, float), np.asarray(rotation, float), np.asarray(joints, float))  # fmt: skip
            action[:] += self._contract_action_of_targets(rig)
        return self._advance(action)

    def place_keypoints(self, keypoints: dict[str, np.ndarray], *, contract: np.ndarray | None = None) -> None:  # fmt: skip
        """Put kinematic hands at ``(21, 3)`` world keypoints (no simulation step).

        Args:
            keypoints: side → ``(21, 3)`` world keypoints.
            contract: The ``(48,)`` contract vector of these keypoints if already computed
                (:meth:`metis_sim.human.KinematicHand.contract` of every hand, batched by a
                demonstration); computed on demand otherwise.

        Raises:
            ValueError: Without kinematic hands, for an absent side or keypoints of another shape.
        """
        if not self.is_human:
            raise ValueError(f"{self.name}: place_keypoints needs kinematic human hands (embodiment 'human_mano'), not {self.config.embodiment!r}")  # fmt: skip
        for side, points in keypoints.items():
            if side not in self.kinematic_hands:
                raise ValueError(f"{self.name}: no {side!r} hand in this scene; hands: {sorted(self.kinematic_hands)}")  # fmt: skip
            self.kinematic_hands[side].place(self.data, np.asarray(points, dtype=np.float64))
        if contract is not None and np.shape(contract) != (48,):
            raise ValueError(f"{self.name}: contract must have shape (48,), got {np.shape(contract)}")  # fmt: skip
        self._human_contract = None if contract is None else np.asarray(contract, dtype=np.float32)
        mujoco.mj_kinematics(self.model, self.data)

    def step_keypoints(
        self,
        keypoints: dict[str, np.ndarray],
        *,
        driven: dict[str, np.ndarray] | None = None,
        held: set[int] | None = None,
        contract: np.ndarray | None = None,
    ) -> StepResult:
        """One control step of the kinematic human hands (demonstration scripts).

        Args:
            keypoints: side → ``(21, 3)`` world keypoints the hand is at after the step.
            driven: Joint name → its ``qpos`` at the end of the step (a free joint's 7 values,
                a slide's or hinge's 1): the script moves these joints, interpolated over the
                physics substeps with the matching velocity (so what rests on them moves along).
            held: Geoms the script holds or pushes: they count as touching the hand for the
                task's contact detectors.
            contract: The keypoints' ``(48,)`` contract vector, if already computed.

        Returns:
            The step; ``info["action"]`` is the contract vector of the new keypoints (the
            embodiment's :meth:`contract_pose`), which is the next observation's state.
        """
        self.place_keypoints(keypoints, contract=contract)
        action = self.contract_state()
        self._script_contacts = set(held or ())
        self._driven = []
        for name, target in (driven or {}).items():
            joint = self.model.joint(name).id
            adr = int(self.model.jnt_qposadr[joint])
            size = 7 if self.model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE else 1
            target = np.asarray(target, dtype=np.float64).reshape(size)
            self._driven.append((joint, self.data.qpos[adr : adr + size].copy(), target))
        return self._advance(action)

    def render(self) -> np.ndarray:
        """The current ego image ``(H, W, 3)`` uint8."""
        if self._renderer is None:
            _use_headless_gl()
            try:
                self._renderer = mujoco.Renderer(self.model, self.config.image_size, self.config.image_size)  # fmt: skip
            except mujoco.FatalError as err:
                raise RuntimeError(f"MuJoCo cannot render headless with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: set MUJOCO_GL=egl (or osmesa) before mujoco is first imported (importing metis_sim first does it), and install libegl1 + libegl-mesa0 (or libosmesa6)") from err  # fmt: skip
        self._renderer.update_scene(self.data, camera="ego")
        return self._renderer.render().copy()

    def close(self) -> None:
        """Release the renderer."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- poses --------------------------------------------------------------------------------

    def home_pose(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """World wrist pose of a hand at the start of an episode."""
        y = -0.22 if side == "right" else 0.22
        return np.array([0.30, y, TABLE_TOP + 0.23]), home_rotation(side)

    def home_joints(self, side: str) -> np.ndarray:
        """Open hand, clamped into the limits (kinematic hands: open keypoints in the wrist frame)."""
        if self.is_human:
            return self.kinematic_hands[side].open_keypoints(np.zeros(3), np.eye(3)).reshape(-1)
        limits = self.rigs[side].hand.joint_limits
        return np.clip(np.zeros(len(limits)), limits[:, 0], limits[:, 1])

    def wrist_pose(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """Measured world pose of a wrist."""
        if self.is_human:
            return self.kinematic_hands[side].wrist_pose()
        rig = self.rigs[side]
        return self.data.xpos[rig.body_id].copy(), self.data.xmat[rig.body_id].reshape(3, 3).copy()

    def fingertips_world(self, side: str) -> np.ndarray:
        """``(5, 3)`` measured fingertip positions in the world."""
        if self.is_human:
            hand = self.kinematic_hands[side]
            return hand.keypoints[list(hand.embodiment.fingertip_keypoints)].copy()
        return self.data.site_xpos[self.rigs[side].site_ids].copy()

    def joints(self, side: str) -> np.ndarray:
        """Measured actuated joint values (kinematic hands: the ``(63,)`` world keypoints)."""
        if self.is_human:
            return self.kinematic_hands[side].keypoints.reshape(-1).copy()
        return self.data.qpos[self.rigs[side].qpos_adr].copy()

    def contacts_between(self, geoms_a: set[int], geoms_b: set[int]) -> bool:
        """Whether any active contact touches a geom of each set.

        Kinematic hands do not collide: a geom the demonstration script holds or pushes counts
        as touching every hand geom.
        """
        if self._script_contacts and self.is_human:
            hands = self.hand_geoms()
            if (geoms_a & self._script_contacts and geoms_b & hands) or (geoms_b & self._script_contacts and geoms_a & hands):  # fmt: skip
                return True
        for i in range(self.data.ncon):
            contact = self.data.contact[i]
            g1, g2 = int(contact.geom1), int(contact.geom2)
            if (g1 in geoms_a and g2 in geoms_b) or (g2 in geoms_a and g1 in geoms_b):
                return True
        return False

    def hand_geoms(self, side: str | None = None) -> set[int]:
        """Geom ids of one hand (or of every hand)."""
        hands = self.kinematic_hands or self.rigs
        prefixes = tuple((self.kinematic_hands[s].prefix if self.kinematic_hands else self.rigs[s].hand.prefix) for s in ([side] if side else hands))  # fmt: skip
        return {g for g in range(self.model.ngeom) if (self.model.geom(g).name or "").startswith(prefixes)}  # fmt: skip

    def body_geoms(self, body: str) -> set[int]:
        """Geom ids attached to a body and its descendants."""
        root = self.model.body(body).id
        bodies = {root}
        for b in range(self.model.nbody):
            parent = b
            while parent not in (0, root):
                parent = int(self.model.body_parentid[parent])
            if parent == root:
                bodies.add(b)
        return {g for g in range(self.model.ngeom) if int(self.model.geom_bodyid[g]) in bodies}

    # -- internals ----------------------------------------------------------------------------

    def _place_hand(self, rig: HandRig, position: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> None:  # fmt: skip
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, rotation.reshape(9))
        adr = rig.free_qpos_adr
        self.data.qpos[adr : adr + 3] = position
        self.data.qpos[adr + 3 : adr + 7] = quat
        full = rig.embodiment.expand_joints(torch.as_tensor(joints, dtype=torch.float64)).numpy()
        self.data.qpos[rig.urdf_qpos_adr] = full
        self.data.mocap_pos[rig.mocap_id] = position
        self.data.mocap_quat[rig.mocap_id] = quat
        self.data.ctrl[rig.actuator_ids] = joints
        rig.target_position, rig.target_rotation = position.copy(), rotation.copy()
        rig.last_joints = torch.as_tensor(joints, dtype=torch.float32)

    def _solve_ik(self, rig: HandRig, actions: np.ndarray) -> np.ndarray:
        tips = torch.as_tensor(actions[:, HAND_LAYOUTS[rig.side].fingertips].reshape(-1, 5, 3), dtype=torch.float32)  # fmt: skip
        result = rig.embodiment.inverse_kinematics(tips, initial_joints=rig.last_joints)
        joints = result.joints.detach()
        rig.last_joints = joints[-1].clone()
        return joints.double().numpy()

    def _command(self, rig: HandRig, position: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> None:  # fmt: skip
        dt = 1.0 / self.config.control_hz
        position = np.clip(position, WORKSPACE[0], WORKSPACE[1])
        step = position - rig.target_position
        limit = self.config.max_wrist_speed * dt
        if np.linalg.norm(step) > limit:
            position = rig.target_position + step * (limit / np.linalg.norm(step))
        relative = matrix_to_axis_angle(rig.target_rotation.T @ rotation)
        angle = float(np.linalg.norm(relative))
        turn = self.config.max_wrist_turn * dt
        if angle > turn:
            rotation = rig.target_rotation @ axis_angle_to_matrix(relative * (turn / angle))
        rig.target_position, rig.target_rotation = position, rotation
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, np.ascontiguousarray(rotation).reshape(9))
        self.data.mocap_pos[rig.mocap_id] = position
        self.data.mocap_quat[rig.mocap_id] = quat
        limits = rig.hand.joint_limits
        self.data.ctrl[rig.actuator_ids] = np.clip(joints, limits[:, 0], limits[:, 1])

    def _contract_action_of_targets(self, rig: HandRig) -> np.ndarray:
        out = np.zeros(48)
        layout = HAND_LAYOUTS[rig.side]
        rotation = self.camera_rotation.T @ rig.target_rotation
        out[layout.wrist_position] = self.camera_rotation.T @ (
            rig.target_position - self.camera_position
        )
        out[layout.wrist_rot6d] = np.concatenate([rotation[:, 0], rotation[:, 1]])
        joints = torch.as_tensor(self.data.ctrl[rig.actuator_ids], dtype=torch.float64)
        out[layout.fingertips] = rig.embodiment.forward_kinematics(joints).numpy().reshape(15)
        rig.last_joints = joints.float()
        return out

    def contract_state(self) -> np.ndarray:
        """``(48,)`` float32 measured hand state in the contract (absent hands are zeros).

        Kinematic human hands: the embodiment's :meth:`contract_pose` of the drawn keypoints
        expressed in the ego camera frame.
        """
        if self.is_human:
            if self._human_contract is None:
                out = np.zeros(48)
                for hand in self.kinematic_hands.values():
                    out += hand.contract(self.camera_rotation, self.camera_position)
                self._human_contract = out.astype(np.float32)
            return self._human_contract.copy()
        out = np.zeros(48)
        for side, _rig in self.rigs.items():
            layout = HAND_LAYOUTS[side]
            position, rotation = self.wrist_pose(side)
            in_camera = self.camera_rotation.T @ rotation
            out[layout.wrist_position] = self.camera_rotation.T @ (position - self.camera_position)
            out[layout.wrist_rot6d] = np.concatenate([in_camera[:, 0], in_camera[:, 1]])
            tips = (self.fingertips_world(side) - position) @ rotation
            out[layout.fingertips] = tips.reshape(15)
        return out.astype(np.float32)

    def _check_divergence(self) -> None:
        if self._diverged:
            return
        if self.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0:
            self._diverged = "mjWARN_BADQACC (bad acceleration: the simulation diverged)"
        elif not (np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all()):
            self._diverged = "non-finite simulation state"
        elif self.data.warning[mujoco.mjtWarning.mjWARN_BADQPOS].number > 0:
            self._diverged = "mjWARN_BADQPOS"
        elif np.abs(self.data.qvel).max() > 200.0:
            self._diverged = (
                f"velocity {np.abs(self.data.qvel).max():.0f} beyond 200 (an object was thrown)"
            )

    def _drive(self, fraction: float) -> None:
        """Set the script-driven joints ``fraction`` of the way to their targets (kinematic hands)."""
        rate = self.config.control_hz
        for joint, start, target in self._driven:
            adr, dof = int(self.model.jnt_qposadr[joint]), int(self.model.jnt_dofadr[joint])
            if start.size == 7:
                quat_target = target[3:] if np.dot(start[3:], target[3:]) >= 0 else -target[3:]
                quat = start[3:] + fraction * (quat_target - start[3:])
                self.data.qpos[adr : adr + 3] = start[:3] + fraction * (target[:3] - start[:3])
                self.data.qpos[adr + 3 : adr + 7] = quat / np.linalg.norm(quat)
                self.data.qvel[dof : dof + 3] = (target[:3] - start[:3]) * rate
                self.data.qvel[dof + 3 : dof + 6] = 0.0
            else:
                self.data.qpos[adr] = start[0] + fraction * (target[0] - start[0])
                self.data.qvel[dof] = (target[0] - start[0]) * rate

    def _advance(self, action: np.ndarray, render: bool = True) -> StepResult:
        if self._driven:
            for k in range(self.config.substeps):
                self._drive(k / self.config.substeps)
                mujoco.mj_step(self.model, self.data)
            self._drive(1.0)
            mujoco.mj_forward(self.model, self.data)
        else:
            for _ in range(self.config.substeps):
                mujoco.mj_step(self.model, self.data)
        self._steps += 1
        if self.config.variant == "lighting":
            # Note: flicker at 1.3 Hz plus noise, an unseen lighting condition for Table 3.
            phase = 0.65 + 0.35 * np.sin(2 * np.pi * 1.3 * self._steps / self.config.control_hz)
            self.model.light_diffuse[:] = self._light_diffuse * (phase + 0.1 * self._episode_rng.random())  # fmt: skip
        self._check_divergence()
        if not self._diverged:
            success, stage = self._evaluate()
            self._stage = max(self._stage, stage)
            self._success = self._success or success
            if success:
                self._stage = self.num_stages
        terminated = bool(self._diverged) or (self._success and self.config.terminate_on_success)
        truncated = not terminated and self._steps >= self.max_steps
        info = self._info()
        info["action"] = np.asarray(action, dtype=np.float32)
        return StepResult(self._observation(render), float(self._success and not self._diverged), terminated, truncated, info)  # fmt: skip

    def _observation(self, render: bool = True) -> dict:
        if not render:
            return {"image": None, "state": self.contract_state(), "hand_mask": self.hand_mask}
        image = self.render() if self.config.render else np.zeros((self.config.image_size,) * 2 + (3,), np.uint8)  # fmt: skip
        return {"image": image, "state": self.contract_state(), "hand_mask": self.hand_mask}

    def _info(self) -> dict:
        return {
            "success": bool(self._success and not self._diverged),
            "diverged": self._diverged,
            "stage": self._stage,
            "progress": self._stage / self.num_stages,
            "instruction": self._instruction,
            "subtask": self.subtask,
            "step": self._steps,
        }


TABLE_TOP = 0.75

#: Embodiments simulated as kinematic hands (drawn from keypoints, no hand physics).
HUMAN_EMBODIMENTS = ("human_mano",)


def _is_human(embodiment: str) -> bool:
    """Whether ``embodiment`` is a kinematic human hand in the simulator.

    Raises:
        ValueError: For a keypoint human hand the simulator cannot draw (only ``human_mano``).
    """
    if embodiment in HUMAN_EMBODIMENTS:
        return True
    if embodiment.startswith("human"):
        raise ValueError(f"the simulator draws kinematic human hands for {list(HUMAN_EMBODIMENTS)}, not {embodiment!r}; robot hands: any URDF hand in the registry (e.g. 'inspire', 'sharpawave')")  # fmt: skip
    return False
