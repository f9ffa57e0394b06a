"""URDF → MJCF: a MuJoCo model of any registered robot hand, built from its embodiment.

The model keeps the embodiment's exact kinematics and adds what simulation needs:

* the root body is the **contract wrist frame** (free joint, welded to a mocap body that the
  controller moves), so the wrist pose in the contract is the pose of that body;
* the URDF base link hangs under it through the embodiment's calibration; a left hand built by
  mirroring (the default of :class:`~metis_embodiments.urdf_hand.URDFHand`) conjugates every
  transform by ``M = diag(-1, 1, 1)`` in the wrist frame, so its fingertips are ``M`` times the
  right hand's, exactly as the embodiment's FK;
* ``<mimic>`` couplings become joint equalities (``polycoef = offset, multiplier``), composed to
  the actuated source joint;
* one capsule per phalanx (link origin → child joint origin / fingertip) and a box palm for
  collisions, no self-collision;
* position actuators on the actuated joints with the URDF limits as control range;
* gravity compensation on every hand body.

Parameters come from the feasibility study in ``SIM.md`` (contact, actuator and weld settings).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metis_core.interfaces import Embodiment

__all__ = ["HandModel", "HandModelConfig", "build_hand_model", "rpy_to_matrix"]

MIRROR = np.diag([-1.0, 1.0, 1.0])


@dataclass(frozen=True, kw_only=True)
class HandModelConfig:
    """Simulation parameters of a generated hand.

    Args:
        capsule_radius_m: Radius of the phalanx capsules.
        thumb_radius_m: Radius of the thumb capsules (links whose name contains ``thumb``).
        palm_thickness_m: Thickness of the box palm along the wrist x axis.
        kp: Position-actuator stiffness (N m/rad).
        force_limit: Actuator force range ± (N m).
        damping: Joint damping.
        armature: Joint armature.
        link_mass_kg: Mass of each phalanx body.
        palm_mass_kg: Mass of the wrist body.
        friction: Sliding, torsional, rolling friction of the hand geoms.
        min_segment_m: Shorter link segments get no capsule (coincident joint origins).
    """

    capsule_radius_m: float = 0.0085
    thumb_radius_m: float = 0.009
    palm_thickness_m: float = 0.024
    kp: float = 3.0
    force_limit: float = 1.0
    damping: float = 0.08
    armature: float = 0.001
    link_mass_kg: float = 0.015
    palm_mass_kg: float = 0.3
    friction: tuple[float, float, float] = (1.5, 0.02, 0.0005)
    min_segment_m: float = 0.004

    def __post_init__(self) -> None:
        for name in ("capsule_radius_m", "thumb_radius_m", "palm_thickness_m", "kp", "force_limit", "link_mass_kg", "palm_mass_kg"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ValueError(f"HandModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.damping < 0 or self.armature < 0:
            raise ValueError("HandModelConfig.damping and armature must be >= 0")
        if len(self.friction) != 3 or min(self.friction) < 0:
            raise ValueError(f"HandModelConfig.friction must be 3 values >= 0, got {self.friction}")


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """URDF roll-pitch-yaw (fixed axes x, y, z) → rotation matrix ``Rz(yaw) Ry(pitch) Rx(roll)``."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = (
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
        math.cos(y),
        math.sin(y),
    )
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def _quat(matrix: np.ndarray) -> np.ndarray:
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(matrix, dtype=np.float64).reshape(9))
    return quat


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{float(v):.9g}" for v in np.asarray(values).reshape(-1))


@dataclass
class _Joint:
    name: str
    kind: str
    parent: str
    child: str
    position: np.ndarray
    rotation: np.ndarray
    axis: np.ndarray
    limits: tuple[float, float]


def _parse_urdf(path: Path) -> tuple[str, dict[str, list[_Joint]]]:
    root = ET.fromstring(path.read_text())
    joints_by_parent: dict[str, list[_Joint]] = {}
    children: set[str] = set()
    links = [link.get("name") for link in root.iter("link")]
    for element in root.iter("joint"):
        origin = element.find("origin")
        xyz = np.array([float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()])  # fmt: skip
        rpy = np.array([float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()])  # fmt: skip
        axis_el = element.find("axis")
        axis = np.array([float(v) for v in (axis_el.get("xyz", "1 0 0") if axis_el is not None else "1 0 0").split()])  # fmt: skip
        limit = element.find("limit")
        limits = (float(limit.get("lower", 0.0)), float(limit.get("upper", 0.0))) if limit is not None else (0.0, 0.0)  # fmt: skip
        kind = str(element.get("type"))
        if kind not in ("revolute", "fixed", "continuous"):
            raise ValueError(f"{path.name}: joint {element.get('name')!r} has type {kind!r}; only revolute, continuous and fixed joints are supported")  # fmt: skip
        joint = _Joint(
            name=str(element.get("name")),
            kind=kind,
            parent=str(element.find("parent").get("link")),
            child=str(element.find("child").get("link")),
            position=xyz,
            rotation=rpy_to_matrix(rpy),
            axis=axis / np.linalg.norm(axis),
            limits=limits,
        )
        joints_by_parent.setdefault(joint.parent, []).append(joint)
        children.add(joint.child)
    roots = [name for name in links if name not in children]
    if len(roots) != 1:
        raise ValueError(f"{path.name}: expected one root link, found {roots}")
    return str(roots[0]), joints_by_parent


@dataclass(frozen=True)
class HandModel:
    """The MJCF pieces of one generated hand, to be placed in a scene.

    Attributes:
        prefix: Name prefix of every element (``"rh_"``).
        body: ``<body>`` XML of the hand (root = contract wrist frame, with a free joint).
        mocap: ``<body mocap="true">`` XML of the wrist target.
        actuators: ``<position>`` elements.
        equalities: ``<joint>`` coupling equalities and the wrist ``<weld>``.
        joint_names: The embodiment's actuated joints (their MJCF names are ``prefix + name``).
        urdf_joint_names: Every moving URDF joint, in the embodiment's URDF order.
        fingertip_sites: MJCF site names of the five fingertips, thumb to little.
        root_body: MJCF name of the wrist body.
        mocap_body: MJCF name of the mocap body.
        joint_limits: ``(J, 2)`` actuated joint limits.
        palm_centre: ``(3,)`` centre of the box palm in the wrist frame.
        palm_half_size: ``(3,)`` half sizes of the box palm (wrist-frame axes).
    """

    prefix: str
    body: str
    mocap: str
    actuators: str
    equalities: str
    joint_names: tuple[str, ...]
    urdf_joint_names: tuple[str, ...]
    fingertip_sites: tuple[str, ...]
    root_body: str
    mocap_body: str
    joint_limits: np.ndarray = field(repr=False)
    palm_centre: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(3))
    palm_half_size: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(3))


def build_hand_model(
    embodiment: Embodiment,
    *,
    prefix: str = "rh_",
    config: HandModelConfig | None = None,
    rgba: str = "0.85 0.85 0.88 1",
) -> HandModel:
    """Build the MJCF of a URDF robot hand embodiment.

    Works for any :class:`~metis_embodiments.urdf_hand.URDFHand` (Inspire, SharpaWave,
    third-party plugins): it reads the embodiment's URDF, couplings, calibration and side.

    Args:
        embodiment: A URDF hand (it must have ``kinematics`` and ``calibration``).
        prefix: Prefix of every MJCF name (two hands in one scene need different ones).
        config: Simulation parameters.
        rgba: Colour of the hand geoms.

    Returns:
        The :class:`HandModel` pieces.

    Raises:
        ValueError: For a keypoint (human) hand or a URDF with unsupported joints.
    """
    config = config or HandModelConfig()
    kinematics = getattr(embodiment, "kinematics", None)
    if embodiment.is_human or kinematics is None:
        raise ValueError(f"{embodiment.name}: only robot hands described by a URDF can be simulated, not keypoint hands")  # fmt: skip
    mirror = bool(kinematics.mirror)
    m = MIRROR if mirror else np.eye(3)
    root_link, joints_by_parent = _parse_urdf(Path(kinematics.urdf_path))
    tips = {link: i for i, link in enumerate(kinematics.fingertip_links) if link is not None}
    coupling = kinematics.coupling_matrix.numpy()
    bias = kinematics.coupling_bias.numpy()
    urdf_names = tuple(kinematics.urdf_joint_names)
    actuated = tuple(kinematics.actuated_joint_names)

    def conj(rotation: np.ndarray) -> np.ndarray:
        return m @ rotation @ m

    # wrist ← base link: inverse of the calibration (axes as columns, origin in base coordinates)
    r_cal = kinematics.calibration_rotation.numpy()
    o_cal = kinematics.calibration_origin.numpy()
    base_rotation = conj(r_cal.T)
    base_position = m @ (-r_cal.T @ o_cal)

    # palm box in the wrist frame: around the wrist origin and the joints fixed to the base link
    base_points = [np.zeros(3)] + [m @ (r_cal.T @ (j.position - o_cal)) for j in joints_by_parent.get(root_link, [])]  # fmt: skip
    points = np.array(base_points)
    low, high = points.min(0), points.max(0)
    centre = (low + high) / 2
    half = np.maximum((high - low) / 2, config.palm_thickness_m / 2)
    half[0] = config.palm_thickness_m / 2
    centre[0] = float(points[:, 0].mean())

    friction = _fmt(np.array(config.friction))
    hand_geom = f'contype="2" conaffinity="1" condim="4" friction="{friction}" solref="0.01 1" solimp="0.95 0.99 0.001" priority="1" rgba="{rgba}"'  # fmt: skip
    tip_sites: list[str] = [""] * 5
    link_inertia = config.link_mass_kg * 1e-4

    def body_xml(link: str, indent: str) -> str:
        out = []
        for joint in joints_by_parent.get(link, []):
            child = joint.child
            parts = [f'{indent}<body name="{prefix}{child}" pos="{_fmt(m @ joint.position)}" quat="{_fmt(_quat(conj(joint.rotation)))}" gravcomp="1">']  # fmt: skip
            if joint.kind != "fixed":
                low_q, high_q = joint.limits
                limited = f'range="{_fmt(np.array([low_q, high_q]))}" limited="true"' if joint.kind == "revolute" else 'limited="false"'  # fmt: skip
                axis = -(m @ joint.axis) if mirror else joint.axis
                parts.append(f'{indent}  <joint name="{prefix}{joint.name}" type="hinge" axis="{_fmt(axis)}" {limited} damping="{config.damping}" armature="{config.armature}"/>')  # fmt: skip
            parts.append(f'{indent}  <inertial pos="0 0 0" mass="{config.link_mass_kg}" diaginertia="{link_inertia} {link_inertia} {link_inertia}"/>')  # fmt: skip
            radius = config.thumb_radius_m if "thumb" in child else config.capsule_radius_m
            for grandchild in joints_by_parent.get(child, []):
                end = m @ grandchild.position
                if np.linalg.norm(end) >= config.min_segment_m:
                    parts.append(f'{indent}  <geom name="{prefix}{child}_to_{grandchild.child}" type="capsule" fromto="0 0 0 {_fmt(end)}" size="{radius}" {hand_geom}/>')  # fmt: skip
            if child in tips:
                site = f"{prefix}{child}"
                tip_sites[tips[child]] = site
                parts.append(
                    f'{indent}  <site name="{site}" size="0.004" rgba="1 0.3 0.3 1" group="5"/>'
                )
            parts.append(body_xml(child, indent + "  "))
            parts.append(f"{indent}</body>")
            out.append("\n".join(p for p in parts if p))
        return "\n".join(out)

    # A hand without some finger (a four-fingered hand) reports that fingertip at the wrist
    # origin, as its embodiment's FK does (zeros in the wrist frame).
    missing_sites = []
    for i, link in enumerate(kinematics.fingertip_links):
        if link is None:
            tip_sites[i] = f"{prefix}missing_tip{i}"
            missing_sites.append(f'  <site name="{tip_sites[i]}" size="0.002" group="5"/>')
    root_body = f"{prefix}wrist"
    mocap_body = f"{prefix}mocap"
    palm_inertia = config.palm_mass_kg * 1e-3
    body = "\n".join(
        [
            f'<body name="{root_body}" gravcomp="1">',
            f'  <freejoint name="{prefix}root"/>',
            f'  <inertial pos="0 0 0.04" mass="{config.palm_mass_kg}" diaginertia="{palm_inertia} {palm_inertia} {palm_inertia}"/>',
            f'  <geom name="{prefix}palm" type="box" pos="{_fmt(centre)}" size="{_fmt(half)}" {hand_geom}/>',
            f'  <site name="{prefix}wrist_site" size="0.005" rgba="0.2 0.2 1 1" group="5"/>',
            *missing_sites,
            f'  <body name="{prefix}{root_link}" pos="{_fmt(base_position)}" quat="{_fmt(_quat(base_rotation))}" gravcomp="1">',
            f'    <inertial pos="0 0 0" mass="{config.link_mass_kg}" diaginertia="{link_inertia} {link_inertia} {link_inertia}"/>',
            body_xml(root_link, "    "),
            "  </body>",
            "</body>",
        ]
    )  # fmt: skip
    if not all(tip_sites):
        raise ValueError(f"{embodiment.name}: fingertip links {kinematics.fingertip_links} not all found in the URDF tree")  # fmt: skip
    mocap = f'<body name="{mocap_body}" mocap="true"><site name="{prefix}target" size="0.006" rgba="0 1 0 0.3" group="5"/></body>'  # fmt: skip
    limits = kinematics.joint_limits.numpy()
    actuators = "\n".join(
        f'<position name="{prefix}{name}" joint="{prefix}{name}" kp="{config.kp}" ctrlrange="{_fmt(limits[i])}" ctrllimited="true" forcerange="{-config.force_limit} {config.force_limit}" forcelimited="true"/>'
        for i, name in enumerate(actuated)
    )  # fmt: skip
    equalities = []
    for j, name in enumerate(urdf_names):
        if name in actuated:
            continue
        sources = np.nonzero(np.abs(coupling[j]) > 0)[0]
        if len(sources) != 1:
            raise ValueError(f"{embodiment.name}: coupled joint {name!r} depends on {len(sources)} actuated joints; only one-source couplings are supported")  # fmt: skip
        source = actuated[int(sources[0])]
        equalities.append(f'<joint joint1="{prefix}{name}" joint2="{prefix}{source}" polycoef="{bias[j]:.9g} {coupling[j, sources[0]]:.9g} 0 0 0" solref="0.005 1"/>')  # fmt: skip
    equalities.append(f'<weld body1="{mocap_body}" body2="{root_body}" relpose="0 0 0 1 0 0 0" solref="0.01 1"/>')  # fmt: skip
    return HandModel(
        prefix=prefix,
        body=body,
        mocap=mocap,
        actuators=actuators,
        equalities="\n".join(equalities),
        joint_names=actuated,
        urdf_joint_names=urdf_names,
        fingertip_sites=tuple(tip_sites),
        root_body=root_body,
        mocap_body=mocap_body,
        joint_limits=limits,
        palm_centre=centre,
        palm_half_size=half,
    )


def standalone_xml(hand: HandModel, *, timestep: float = 1.0 / 480.0) -> str:
    """A minimal MJCF holding only ``hand`` (for kinematics checks and inspection).

    Any scene that includes a hand must use ``<compiler angle="radian"/>``: joint ranges are
    written in radians.
    """
    return f"""<mujoco model="{hand.prefix}hand">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep}" integrator="implicitfast" cone="elliptic" impratio="10" gravity="0 0 -9.81"/>
  <worldbody>
    {hand.mocap}
    {hand.body}
  </worldbody>
  <actuator>{hand.actuators}</actuator>
  <equality>{hand.equalities}</equality>
</mujoco>"""
