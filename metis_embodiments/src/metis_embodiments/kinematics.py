"""Batched hand kinematics from a URDF through pytorch-kinematics, with couplings and calibration.

Shape legend: ``B`` batch, ``A`` actuated joints, ``Q`` URDF joints (actuated + mimic),
``L`` link frames, ``F`` = 5 fingertips (thumb, index, middle, ring, little). A hand without a
finger (LEAP Hand, Allegro: no little finger) names no link for it; its fingertip is reported as
zeros and its Jacobian rows are zero.

Sanity checks (:func:`check_hand_model`, run when a hand is built): the wrist keypoint link must
not move with any joint, no joint may move every fingertip at once (those are wrist or arm
joints), fingertip links must be distinct, the calibration must be a proper rotation, and the
open hand's fingertips must lie forward of the wrist (z > 0). Each failure says what to change.

The chain comes from :func:`pytorch_kinematics.build_chain_from_urdf`; pytorch-kinematics does
not read ``<mimic>`` tags, so couplings are parsed here and applied as an affine map from the
actuated joints to all URDF joints (``q_urdf = q_act @ Aᵀ + b``). The geometric Jacobian of the
fingertips is computed analytically from the link frames pytorch-kinematics returns, which makes
it cheap enough for the batched solver in :mod:`metis_embodiments.ik`.

Frames: pytorch-kinematics works in the URDF root ("base link") frame. The fixed calibration
``(R_cal, o_cal)`` — the contract wrist frame's axes (columns) and origin expressed in the base
link frame — moves everything to the contract wrist frame: ``p_wrist = R_calᵀ (p_base − o_cal)``.
A left hand is the mirror image of a right hand; mirroring flips the x axis of the contract
wrist frame (see :mod:`metis_core.frames`), so left-hand points are ``diag(-1, 1, 1)`` times the
right-hand points of the same joint values.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytorch_kinematics as pk
import torch

from metis_core.frames import wrist_frame_from_keypoints

__all__ = [
    "Coupling",
    "HandKinematics",
    "HandModelError",
    "KeypointLinks",
    "check_hand_model",
    "parse_couplings",
    "strip_geometry",
]

_FINGERS = ("thumb", "index", "middle", "ring", "little")


class HandModelError(ValueError):
    """A hand's URDF or link choice fails a sanity check; the message says what to change."""


#: Reflection that turns right-hand wrist-frame coordinates into left-hand ones.
MIRROR_X = (-1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Coupling:
    """A URDF ``<mimic>`` relation: ``joint = multiplier * source + offset``."""

    joint: str
    source: str
    multiplier: float
    offset: float


@dataclass(frozen=True)
class KeypointLinks:
    """Links whose origins play the human keypoints that define the contract wrist frame.

    Args:
        wrist: Link at the wrist joint (usually the base link); no joint may move it.
        index_mcp: Link whose origin is the index-finger MCP joint.
        middle_mcp: Middle-finger MCP.
        little_mcp: Little-finger MCP; a hand without a little finger uses its outermost
            finger's MCP (the ring finger's on LEAP Hand), which only sets the direction of y.
    """

    wrist: str
    index_mcp: str
    middle_mcp: str
    little_mcp: str


def strip_geometry(urdf_text: str) -> str:
    """The URDF without ``<visual>`` and ``<collision>`` elements (kinematics only).

    Tools that load meshes (dex-retargeting through pinocchio) otherwise print a warning per
    unresolvable mesh file; kinematics never needs them.
    """
    root = ET.fromstring(urdf_text)
    for link in root.iter("link"):
        for child in list(link):
            if child.tag in ("visual", "collision"):
                link.remove(child)
    return ET.tostring(root, encoding="unicode")


def parse_couplings(urdf_text: str) -> list[Coupling]:
    """Read the ``<mimic>`` tags of a URDF.

    Raises:
        ValueError: If a mimic tag names no source joint.
    """
    root = ET.fromstring(urdf_text)
    couplings = []
    for joint in root.iter("joint"):
        mimic = joint.find("mimic")
        if mimic is None:
            continue
        source = mimic.get("joint")
        if not source:
            raise ValueError(f"URDF joint {joint.get('name')!r} has a <mimic> without a joint")
        couplings.append(
            Coupling(
                joint=str(joint.get("name")),
                source=source,
                multiplier=float(mimic.get("multiplier", 1.0)),
                offset=float(mimic.get("offset", 0.0)),
            )
        )
    return couplings


class _JointTree:
    """Fixed joints folded away: the movable joints as a tree, for fast FK of tips and axes.

    pytorch-kinematics composes a 4×4 transform for every link (fixed ones included); the IK
    needs only each joint's origin and axis and each fingertip's position. Folding every fixed
    joint into its movable neighbours leaves one rotation and one offset per movable joint,
    composed level by level (a hand is a few joints deep), which takes a fraction of the time.
    Used without autograd, by :meth:`HandKinematics.fingertips_and_jacobian`.
    """

    def __init__(self, chain: pk.Chain, tip_frames: list[int]) -> None:
        static = chain._static_offsets.to(torch.float64)  # (L, 4, 4)
        parent = chain._direct_parent_idx.tolist()
        joint_of = chain._joint_indices_clamped.tolist()
        movable = (chain.joint_type_indices == 1).tolist()
        num_joints = len(chain.get_joint_parameter_names())
        base = num_joints  # index of the (identity) base node
        node_of: list[int] = []  # nearest movable ancestor-or-self of each frame
        offset: list[torch.Tensor] = []  # transform from that node's frame to the frame
        joint_parent = [base] * num_joints
        joint_static = [torch.eye(4, dtype=torch.float64)] * num_joints
        for frame in range(static.shape[0]):  # frames are stored parents first
            up = parent[frame]
            up_node, up_offset = (base, torch.eye(4, dtype=torch.float64))
            if up >= 0:
                up_node, up_offset = node_of[up], offset[up]
            if movable[frame]:
                j = joint_of[frame]
                joint_parent[j], joint_static[j] = up_node, up_offset @ static[frame]
                node_of.append(j)
                offset.append(torch.eye(4, dtype=torch.float64))
            else:
                node_of.append(up_node)
                offset.append(up_offset @ static[frame])
        depth = [0] * (num_joints + 1)
        order = sorted(range(num_joints), key=lambda j: chain._dof_frame_indices[j].item())
        for j in order:  # parents come before children in frame order
            depth[j] = 0 if joint_parent[j] == base else depth[joint_parent[j]] + 1
        self.levels = [
            torch.tensor([j for j in range(num_joints) if depth[j] == d])
            for d in range(max(depth[:num_joints], default=-1) + 1)
        ]
        self.parents = [torch.tensor([joint_parent[j] for j in lv.tolist()]) for lv in self.levels]
        self.num_joints = num_joints
        statics = torch.stack(joint_static) if num_joints else torch.zeros(0, 4, 4)
        self.static_rotation = statics[:, :3, :3]
        self.static_position = statics[:, :3, 3]
        axes = chain.axes.to(torch.float64)  # (Q, 3) in each joint's frame
        self.axes = axes / axes.norm(dim=-1, keepdim=True)
        self.tip_node = torch.tensor([node_of[f] for f in tip_frames])
        self.tip_offset = torch.stack([offset[f][:3, 3] for f in tip_frames])
        base_rotation = torch.eye(3, dtype=torch.float64)
        self.tip_from_base = torch.stack(
            [offset[f][:3, 3] if node_of[f] == base else base_rotation[0] * 0 for f in tip_frames]
        )
        self._cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}

    def _consts(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if dtype not in self._cache:
            with torch.inference_mode(False):  # cached: never inference tensors (see IK)
                self._cache[dtype] = self._build_consts(dtype)
        return self._cache[dtype]

    def _build_consts(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        # Rodrigues' constant factors: the skew matrix [k]x of each joint axis and its square
        k = self.axes
        skew = torch.zeros(self.num_joints, 3, 3, dtype=torch.float64)
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
        skew = skew - skew.transpose(1, 2)
        return {
            "sr": self.static_rotation.to(dtype),
            "sp": self.static_position.to(dtype),
            "axes": self.axes.to(dtype),
            "tip_offset": self.tip_offset.to(dtype),
            "skew": skew[:, None].to(dtype),
            "skew2": (skew @ skew)[:, None].to(dtype),
            "eye": torch.eye(3, dtype=dtype),
        }

    def __call__(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, Q)`` URDF joint values → tips ``(B, P, 3)``, joint origins and axes ``(B, Q, 3)``.

        All in the base link frame.
        """
        c = self._consts(q.dtype)
        batch, num = q.shape[0], self.num_joints
        # Rodrigues: the rotation of each joint about its own axis, (Q, B, 3, 3).
        k, eye = c["axes"], c["eye"]
        angle = q.T[:, :, None, None]
        rot = eye + torch.sin(angle) * c["skew"] + (1 - torch.cos(angle)) * c["skew2"]
        local = c["sr"][:, None] @ rot  # (Q, B, 3, 3)
        rotation = torch.empty(num + 1, batch, 3, 3, dtype=q.dtype)
        position = torch.empty(num + 1, batch, 3, dtype=q.dtype)
        rotation[num] = eye
        position[num] = 0.0
        for nodes, parents in zip(self.levels, self.parents, strict=True):
            r_parent = rotation[parents]
            position[nodes] = (r_parent @ c["sp"][nodes][:, None, :, None])[..., 0] + position[
                parents
            ]
            rotation[nodes] = r_parent @ local[nodes]
        tips = (rotation[self.tip_node] @ c["tip_offset"][:, None, :, None])[..., 0]
        tips = tips + position[self.tip_node]  # (P, B, 3)
        axes = (rotation[:num] @ k[:, None, :, None])[..., 0]  # (Q, B, 3)
        return tips.transpose(0, 1), position[:num].transpose(0, 1), axes.transpose(0, 1)


class HandKinematics:
    """Forward kinematics and fingertip Jacobians of one hand, batched and differentiable.

    Args:
        urdf_path: URDF file (kinematics only; meshes are not needed).
        fingertip_links: The 5 fingertip links, thumb to little; ``None`` for a finger the
            hand does not have.
        keypoint_links: Links that define the contract wrist frame (calibration).
        mirror: Build the left-hand variant by mirroring (the URDF describes a right hand).
        joint_order: Order of the actuated joints in joint vectors (e.g. the maker's SDK order);
            default: URDF order.
        sanity_checks: Run :func:`check_hand_model` and raise :class:`HandModelError` on the
            first problems found.

    Raises:
        FileNotFoundError: If the URDF does not exist (with a hint about package data).
        ValueError: If a named link is missing, the couplings reference unknown joints, or
            ``joint_order`` is not a permutation of the actuated joints.
        HandModelError: If a sanity check fails.
    """

    def __init__(
        self,
        urdf_path: str | Path,
        *,
        fingertip_links: tuple[str, ...],
        keypoint_links: KeypointLinks,
        mirror: bool = False,
        joint_order: tuple[str, ...] | None = None,
        sanity_checks: bool = True,
    ) -> None:
        self.urdf_path = Path(urdf_path)
        if not self.urdf_path.is_file():
            raise FileNotFoundError(
                f"URDF {self.urdf_path} does not exist. A hand plugin ships its URDF as package "
                "data inside the package directory (hatchling includes every file there; "
                "setuptools needs [tool.setuptools.package-data]) and returns its path from "
                "urdf_path(), e.g. Path(__file__).parent / 'urdf' / 'my_hand_right.urdf'; check "
                "that the file is in the installed wheel"
            )
        text = self.urdf_path.read_text()
        self._urdf_text = text
        self._chains: dict[torch.dtype, pk.Chain] = {}
        chain = pk.build_chain_from_urdf(text.encode()).to(dtype=torch.float64)
        self._chains[torch.float64] = chain
        self.urdf_joint_names: tuple[str, ...] = tuple(chain.get_joint_parameter_names())
        self.link_names: tuple[str, ...] = tuple(
            chain.idx_to_frame[i] for i in range(chain._num_frames)
        )
        #: Parent link index of each link (-1 for the root), for drawing the skeleton.
        self.link_parents: tuple[int, ...] = tuple(int(i) for i in chain._direct_parent_idx)
        if len(fingertip_links) != 5:
            raise ValueError(
                f"{self.urdf_path.name}: expected 5 fingertip links (thumb, index, middle, ring, "
                f"little; None for a finger the hand lacks), got {len(fingertip_links)}: "
                f"{list(fingertip_links)}"
            )
        for link in (*fingertip_links, *vars(keypoint_links).values()):
            if link is not None and link not in chain.frame_to_idx:
                raise ValueError(
                    f"{self.urdf_path.name}: no link {link!r}; links are {list(self.link_names)}"
                )
        present = [link for link in fingertip_links if link is not None]
        if not present:
            raise ValueError(f"{self.urdf_path.name}: every fingertip link is None")
        repeated = sorted({link for link in present if present.count(link) > 1})
        if repeated:
            fingers = {
                link: [
                    f for f, other in zip(_FINGERS, fingertip_links, strict=True) if other == link
                ]
                for link in repeated
            }
            raise HandModelError(
                f"{self.urdf_path.name}: fingertip links must be distinct, but "
                + "; ".join(
                    f"{link!r} is given for {' and '.join(f)}" for link, f in fingers.items()
                )
                + ". Name each finger's own tip link, or None for a finger the hand does not have "
                "(retargeting would otherwise pull one finger towards two targets)"
            )
        #: The fingertip link of each contract finger, ``None`` where the hand has none.
        self.fingertip_links = tuple(fingertip_links)
        #: ``(5,)`` bool: which contract fingertips the hand has.
        self.fingertip_mask = torch.tensor([link is not None for link in fingertip_links])
        self._present_index = self.fingertip_mask.nonzero()[:, 0]
        self._all_present = bool(self.fingertip_mask.all())
        self.keypoint_links = keypoint_links
        self.mirror = mirror

        # Couplings: actuated joints are the URDF joints that mimic nothing.
        couplings = {c.joint: c for c in parse_couplings(text)}
        unknown = [n for c in couplings.values() for n in (c.joint, c.source) if n not in self.urdf_joint_names]  # fmt: skip
        if unknown:
            raise ValueError(f"{self.urdf_path.name}: mimic tags name unknown joints {unknown}")
        self.couplings = tuple(couplings.values())
        self.actuated_joint_names: tuple[str, ...] = tuple(
            n for n in self.urdf_joint_names if n not in couplings
        )
        if joint_order is not None:
            if sorted(joint_order) != sorted(self.actuated_joint_names):
                raise ValueError(
                    f"{self.urdf_path.name}: joint_order must be a permutation of the actuated "
                    f"joints {list(self.actuated_joint_names)}, got {list(joint_order)}"
                )
            self.actuated_joint_names = tuple(joint_order)
        n_urdf, n_act = len(self.urdf_joint_names), len(self.actuated_joint_names)
        matrix = torch.zeros(n_urdf, n_act, dtype=torch.float64)
        bias = torch.zeros(n_urdf, dtype=torch.float64)

        def resolve(name: str, depth: int = 0) -> tuple[torch.Tensor, float]:
            # Chained mimics (a mimic of a mimic) compose affinely.
            if depth > n_urdf:
                raise ValueError(f"{self.urdf_path.name}: cyclic <mimic> chain at {name!r}")
            if name not in couplings:
                row = torch.zeros(n_act, dtype=torch.float64)
                row[self.actuated_joint_names.index(name)] = 1.0
                return row, 0.0
            c = couplings[name]
            row, off = resolve(c.source, depth + 1)
            return c.multiplier * row, c.multiplier * off + c.offset

        for j, name in enumerate(self.urdf_joint_names):
            row, off = resolve(name)
            matrix[j], bias[j] = row, off
        self.coupling_matrix = matrix
        self.coupling_bias = bias

        low, high = chain.get_joint_limits()
        urdf_limits = torch.stack(
            [torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)],
            dim=-1,
        )
        self.urdf_joint_limits = urdf_limits
        act_idx = [self.urdf_joint_names.index(n) for n in self.actuated_joint_names]
        self.joint_limits = urdf_limits[act_idx].clone()

        # Structure for the analytic Jacobian: which link frame each URDF joint moves, and which
        # joints are ancestors of each fingertip.
        self._tip_frames = torch.tensor([chain.frame_to_idx[n] for n in present])
        self._dof_frames = chain._dof_frame_indices.clone()
        self._ancestor_mask = chain._dof_ancestor_mask.clone()  # (Q, L): joint q moves link l
        ancestors = self._ancestor_mask.to(torch.float64)
        self._tip_ancestors = ancestors[:, self._tip_frames].T.contiguous()  # (P, Q) present tips
        self._axes = chain.axes.to(torch.float64).clone()  # (Q, 3) in each joint's own frame
        if bool((chain.joint_type_indices == 2).any()):
            raise ValueError(f"{self.urdf_path.name}: prismatic joints are not supported")
        self._tree = _JointTree(chain, self._tip_frames.tolist())

        # Calibration at the zero pose (clamped into the limits): the contract wrist frame built
        # from the robot's own wrist and MCP joint positions, exactly as for human keypoints.
        zero = torch.zeros(1, n_act, dtype=torch.float64).clamp(
            self.joint_limits[:, 0], self.joint_limits[:, 1]
        )
        frames = chain.forward_kinematics_tensor(zero @ matrix.T + bias)
        points = [
            frames[chain.frame_to_idx[n], 0, :3, 3]
            for n in (
                keypoint_links.wrist,
                keypoint_links.index_mcp,
                keypoint_links.middle_mcp,
                keypoint_links.little_mcp,
            )
        ]
        if sanity_checks:
            self._check_structure()
        try:
            rotation, origin = wrist_frame_from_keypoints(*points)
        except ValueError as err:
            raise HandModelError(
                f"{self.urdf_path.name}: the keypoint links {vars(keypoint_links)} do not define "
                f"a wrist frame at the zero pose ({err}). Choose links whose origins are the "
                "wrist joint and the index, middle and little (or outermost) MCP joints"
            ) from err
        self.calibration_rotation = rotation  # (3, 3) wrist axes as columns, in the base frame
        self.calibration_origin = origin  # (3,)
        self._cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}
        if sanity_checks:
            problems = check_hand_model(self)
            if problems:
                raise HandModelError("\n".join(problems))

    def _joints_moving(self, link: str) -> list[str]:
        """URDF joints (actuated or coupled) that move ``link``."""
        column = self._ancestor_mask[:, self.link_names.index(link)]
        return [self.urdf_joint_names[q] for q in column.nonzero()[:, 0].tolist()]

    def _check_structure(self) -> None:
        """Raise :class:`HandModelError` for wrist or arm joints left in the URDF."""
        name = self.urdf_path.name
        wrist = self.keypoint_links.wrist
        moving_wrist = self._joints_moving(wrist)
        shared = self._tip_ancestors.bool().all(0)  # joints that move every fingertip
        shared_names = [self.urdf_joint_names[q] for q in shared.nonzero()[:, 0].tolist()]
        if moving_wrist:
            raise HandModelError(
                f"{name}: the wrist keypoint link {wrist!r} moves with the joints "
                f"{moving_wrist}: it must not have actuated ancestors. These are arm or wrist "
                f'joints; remove them from the URDF (delete them or make them type="fixed") '
                "so that the URDF starts at the wrist, and use the link at the wrist joint as "
                "keypoint_links.wrist"
            )
        if shared_names and self.fingertip_mask.sum() > 1:
            raise HandModelError(
                f"{name}: the joints {shared_names} move every fingertip at once, so they are "
                "wrist or arm joints, not finger joints (they would shift the wrist-frame "
                "fingertips as a whole). Remove them from the URDF (delete them or make them "
                'type="fixed") and use the link after them (the palm) as keypoint_links.wrist'
            )

    # -- helpers -----------------------------------------------------------------------------

    def chain(self, dtype: torch.dtype) -> pk.Chain:
        """The pytorch-kinematics chain in ``dtype`` (cached)."""
        if dtype not in self._chains:
            # Chain.to() converts in place, so each dtype gets its own chain. Cached tensors are
            # never inference tensors, whatever mode the first caller runs in (see IK).
            with torch.inference_mode(False):
                chain = pk.build_chain_from_urdf(self._urdf_text.encode()).to(dtype=dtype)
            self._chains[dtype] = chain
        return self._chains[dtype]

    def _constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if dtype not in self._cache:
            with torch.inference_mode(False):  # cached: never inference tensors (see IK)
                self._cache[dtype] = self._build_constants(dtype)
        return self._cache[dtype]

    def _build_constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        mirror = torch.tensor(MIRROR_X if self.mirror else (1.0, 1.0, 1.0), dtype=torch.float64)
        # Left hand: mirror applied after the calibration (rows of R_calᵀ scaled).
        to_wrist = mirror[:, None] * self.calibration_rotation.T
        return {
            name: value.to(dtype)
            for name, value in {
                "A": self.coupling_matrix,
                "b": self.coupling_bias,
                "to_wrist": to_wrist,
                "origin": self.calibration_origin,
                "axes": self._axes,
                "tip_ancestors": self._tip_ancestors,
                "mirror": mirror,
            }.items()
        }

    def expand_joints(self, joints: torch.Tensor) -> torch.Tensor:
        """Actuated joints ``(B, A)`` → all URDF joints ``(B, Q)`` through the couplings."""
        c = self._constants(joints.dtype)
        return joints @ c["A"].T + c["b"]

    def _base_frames(self, joints: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` → ``(L, B, 4, 4)`` link frames in the base-link frame."""
        return self.chain(joints.dtype).forward_kinematics_tensor(self.expand_joints(joints))

    # -- public API --------------------------------------------------------------------------

    def link_poses(self, joints: torch.Tensor) -> torch.Tensor:
        """Poses of every link in the contract wrist frame.

        Args:
            joints: ``(B, A)`` actuated joint values.

        Returns:
            ``(B, L, 4, 4)`` homogeneous transforms (link → wrist), in :attr:`link_names` order.
            For a left hand the rotation blocks are ``M R M`` with ``M = diag(-1, 1, 1)``, so they
            stay proper rotations of the mirrored hand.
        """
        c = self._constants(joints.dtype)
        frames = self._base_frames(joints).transpose(0, 1)  # (B, L, 4, 4)
        rotation = c["to_wrist"] @ frames[..., :3, :3]
        position = (frames[..., :3, 3] - c["origin"]) @ c["to_wrist"].T
        if self.mirror:
            rotation = rotation * c["mirror"]  # right-multiply by M keeps det = +1
        out = torch.zeros_like(frames)
        out[..., :3, :3] = rotation
        out[..., :3, 3] = position
        out[..., 3, 3] = 1.0
        return out

    def _scatter_tips(self, present: torch.Tensor) -> torch.Tensor:
        """``(B, P, ...)`` values of the present fingertips → ``(B, 5, ...)`` with zeros."""
        if self._all_present:
            return present
        out = present.new_zeros(present.shape[0], 5, *present.shape[2:])
        return out.index_copy(1, self._present_index.to(present.device), present)

    def fingertips(self, joints: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` actuated joints → ``(B, F, 3)`` fingertips in the contract wrist frame.

        Absent fingertips (a finger the hand lacks) are zeros.
        """
        c = self._constants(joints.dtype)
        frames = self._base_frames(joints)[self._tip_frames.to(joints.device)]  # (P, B, 4, 4)
        tips = frames[..., :3, 3].transpose(0, 1)
        return self._scatter_tips((tips - c["origin"]) @ c["to_wrist"].T)

    def fingertips_and_jacobian(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fingertips and their Jacobian with respect to the actuated joints (no autograd).

        Args:
            joints: ``(B, A)``.

        Returns:
            ``(tips (B, F, 3), jacobian (B, F*3, A))`` in the contract wrist frame; an absent
            fingertip's position and Jacobian rows are zeros.
        """
        c = self._constants(joints.dtype)
        tips, origin_world, axis_world = self._tree(self.expand_joints(joints))
        lever = tips[:, :, None, :] - origin_world[:, None, :, :]  # (B, F, Q, 3)
        columns = torch.linalg.cross(axis_world[:, None].expand_as(lever), lever, dim=-1)
        columns = columns * c["tip_ancestors"][None, :, :, None]  # (B, F, Q, 3)
        # Chain rule through the couplings, then rotate into the wrist frame.
        jac_base = torch.einsum("bfqk,qa->bfka", columns, c["A"])  # (B, F, 3, A)
        jac = torch.einsum("ik,bfka->bfia", c["to_wrist"], jac_base)
        tips_wrist = (tips - c["origin"]) @ c["to_wrist"].T
        tips_wrist, jac = self._scatter_tips(tips_wrist), self._scatter_tips(jac)
        return tips_wrist, jac.reshape(joints.shape[0], -1, joints.shape[-1])

    def fingertip_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Independent fingertip groups: fingers that share no actuated joint.

        Returns:
            ``(tip_group (5,), joint_group (A,))`` long: the group of each fingertip (-1 if
            absent) and of each actuated joint (-1 if it moves no fingertip). On a usual hand
            every finger is its own group; a joint (or coupling) shared by two fingers merges
            their groups.
        """
        if not hasattr(self, "_groups"):
            moves = (self._tip_ancestors @ self.coupling_matrix.abs()) > 0  # (P, A)
            parent = list(range(moves.shape[0]))

            def find(i: int) -> int:
                while parent[i] != i:
                    parent[i] = parent[parent[i]]
                    i = parent[i]
                return i

            for joint in range(moves.shape[1]):
                tips = moves[:, joint].nonzero()[:, 0].tolist()
                for other in tips[1:]:
                    parent[find(other)] = find(tips[0])
            roots = sorted({find(i) for i in range(len(parent))})
            group_of = [roots.index(find(i)) for i in range(len(parent))]
            tip_group = torch.full((5,), -1, dtype=torch.long)
            tip_group[self._present_index] = torch.tensor(group_of)
            joint_group = torch.full((moves.shape[1],), -1, dtype=torch.long)
            for joint in range(moves.shape[1]):
                tips = moves[:, joint].nonzero()[:, 0].tolist()
                if tips:
                    joint_group[joint] = group_of[tips[0]]
            self._groups = (tip_group, joint_group)
        return self._groups

    def open_joints(self) -> torch.Tensor:
        """``(A,)`` float64: the open hand used by the checks, zeros clamped into the limits."""
        zero = torch.zeros(len(self.actuated_joint_names), dtype=torch.float64)
        return zero.clamp(self.joint_limits[:, 0], self.joint_limits[:, 1])


def check_hand_model(
    kinematics: HandKinematics, open_joints: torch.Tensor | None = None
) -> list[str]:
    """Sanity checks of a calibrated hand model; an empty list when it passes.

    Checks that the calibration is a proper rotation (orthonormal, det = +1) and that at the
    open pose every present fingertip lies forward of the wrist (z > 0 in the contract wrist
    frame). (The structural checks — wrist or arm joints left in the URDF, repeated fingertip
    links — raise when the kinematics is built.)

    Args:
        kinematics: The hand.
        open_joints: ``(A,)`` open-hand joints; default :meth:`HandKinematics.open_joints`.

    Returns:
        One message per problem, each saying what to change.
    """
    name = kinematics.urdf_path.name
    problems = []
    rotation = kinematics.calibration_rotation
    orthonormal = float((rotation.T @ rotation - torch.eye(3, dtype=rotation.dtype)).abs().max())
    det = float(torch.linalg.det(rotation))
    if not (orthonormal < 1e-6 and abs(det - 1.0) < 1e-6):
        problems.append(
            f"{name}: the calibration is not a proper rotation (orthonormality error "
            f"{orthonormal:.3g}, det {det:.6f}); it must map the base link to the contract wrist "
            "frame by a rotation: build it from keypoint links, do not override it with a "
            "reflection or a scaled matrix"
        )
    joints = kinematics.open_joints() if open_joints is None else open_joints.double()
    tips = kinematics.fingertips(joints[None].to(torch.float64))[0]
    for finger, link, tip in zip(_FINGERS, kinematics.fingertip_links, tips, strict=True):
        if link is not None and not float(tip[2]) > 0:
            problems.append(
                f"{name}: at the open pose the {finger} fingertip {link!r} lies behind the wrist "
                f"(z = {float(tip[2]) * 1e3:.1f} mm in the contract wrist frame; an open hand's "
                f"fingertips have z > 0). keypoint_links.wrist = "
                f"{kinematics.keypoint_links.wrist!r} is probably not the wrist: choose the link "
                "whose origin is the wrist joint (where the hand meets the forearm), and check "
                "that the MCP keypoint links are the index, middle and little knuckles"
            )
    return problems
