"""Batched hand kinematics from a URDF through pytorch-kinematics, with couplings and calibration.

Shape legend: ``B`` batch, ``A`` actuated joints, ``Q`` URDF joints (actuated + mimic),
``L`` link frames, ``F`` = 5 fingertips (thumb, index, middle, ring, little).

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

__all__ = ["Coupling", "HandKinematics", "KeypointLinks", "parse_couplings"]

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
        wrist: Link at the wrist joint (usually the base link).
        index_mcp: Link whose origin is the index-finger MCP joint.
        middle_mcp: Middle-finger MCP.
        little_mcp: Little-finger MCP.
    """

    wrist: str
    index_mcp: str
    middle_mcp: str
    little_mcp: str


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


class HandKinematics:
    """Forward kinematics and fingertip Jacobians of one hand, batched and differentiable.

    Args:
        urdf_path: URDF file (kinematics only; meshes are not needed).
        fingertip_links: The 5 fingertip links, thumb to little.
        keypoint_links: Links that define the contract wrist frame (calibration).
        mirror: Build the left-hand variant by mirroring (the URDF describes a right hand).
        joint_order: Order of the actuated joints in joint vectors (e.g. the maker's SDK order);
            default: URDF order.

    Raises:
        ValueError: If a named link is missing, the couplings reference unknown joints, or
            ``joint_order`` is not a permutation of the actuated joints.
    """

    def __init__(
        self,
        urdf_path: str | Path,
        *,
        fingertip_links: tuple[str, ...],
        keypoint_links: KeypointLinks,
        mirror: bool = False,
        joint_order: tuple[str, ...] | None = None,
    ) -> None:
        self.urdf_path = Path(urdf_path)
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
        for link in (*fingertip_links, *vars(keypoint_links).values()):
            if link not in chain.frame_to_idx:
                raise ValueError(
                    f"{self.urdf_path.name}: no link {link!r}; links are {list(self.link_names)}"
                )
        if len(fingertip_links) != 5:
            raise ValueError(f"expected 5 fingertip links, got {len(fingertip_links)}")
        self.fingertip_links = tuple(fingertip_links)
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
        self._tip_frames = torch.tensor([chain.frame_to_idx[n] for n in self.fingertip_links])
        self._dof_frames = chain._dof_frame_indices.clone()
        ancestors = chain._dof_ancestor_mask.to(torch.float64)  # (Q, L)
        self._tip_ancestors = ancestors[:, self._tip_frames].T.contiguous()  # (F, Q)
        self._axes = chain.axes.to(torch.float64).clone()  # (Q, 3) in each joint's own frame
        if bool((chain.joint_type_indices == 2).any()):
            raise ValueError(f"{self.urdf_path.name}: prismatic joints are not supported")

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
        rotation, origin = wrist_frame_from_keypoints(*points)
        self.calibration_rotation = rotation  # (3, 3) wrist axes as columns, in the base frame
        self.calibration_origin = origin  # (3,)
        self._cache: dict[torch.dtype, dict[str, torch.Tensor]] = {}

    # -- helpers -----------------------------------------------------------------------------

    def chain(self, dtype: torch.dtype) -> pk.Chain:
        """The pytorch-kinematics chain in ``dtype`` (cached)."""
        if dtype not in self._chains:
            # Chain.to() converts in place, so each dtype gets its own chain.
            self._chains[dtype] = pk.build_chain_from_urdf(self._urdf_text.encode()).to(dtype=dtype)
        return self._chains[dtype]

    def _constants(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if dtype not in self._cache:
            mirror = torch.tensor(MIRROR_X if self.mirror else (1.0, 1.0, 1.0), dtype=torch.float64)
            # Left hand: mirror applied after the calibration (rows of R_calᵀ scaled).
            to_wrist = mirror[:, None] * self.calibration_rotation.T
            self._cache[dtype] = {
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
        return self._cache[dtype]

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

    def fingertips(self, joints: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` actuated joints → ``(B, F, 3)`` fingertips in the contract wrist frame."""
        c = self._constants(joints.dtype)
        frames = self._base_frames(joints)[self._tip_frames.to(joints.device)]  # (F, B, 4, 4)
        tips = frames[..., :3, 3].transpose(0, 1)
        return (tips - c["origin"]) @ c["to_wrist"].T

    def fingertips_and_jacobian(self, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fingertips and their Jacobian with respect to the actuated joints (no autograd).

        Args:
            joints: ``(B, A)``.

        Returns:
            ``(tips (B, F, 3), jacobian (B, F*3, A))`` in the contract wrist frame.
        """
        c = self._constants(joints.dtype)
        frames = self._base_frames(joints)  # (L, B, 4, 4)
        tips = frames[self._tip_frames, :, :3, 3].transpose(0, 1)  # (B, F, 3)
        dof = frames[self._dof_frames]  # (Q, B, 4, 4)
        axis_world = torch.einsum("qbij,qj->bqi", dof[..., :3, :3], c["axes"])  # (B, Q, 3)
        origin_world = dof[..., :3, 3].transpose(0, 1)  # (B, Q, 3)
        lever = tips[:, :, None, :] - origin_world[:, None, :, :]  # (B, F, Q, 3)
        columns = torch.linalg.cross(axis_world[:, None].expand_as(lever), lever, dim=-1)
        columns = columns * c["tip_ancestors"][None, :, :, None]  # (B, F, Q, 3)
        # Chain rule through the couplings, then rotate into the wrist frame.
        jac_base = torch.einsum("bfqk,qa->bfka", columns, c["A"])  # (B, F, 3, A)
        jac = torch.einsum("ik,bfka->bfia", c["to_wrist"], jac_base)
        tips_wrist = (tips - c["origin"]) @ c["to_wrist"].T
        return tips_wrist, jac.reshape(joints.shape[0], -1, joints.shape[-1])
