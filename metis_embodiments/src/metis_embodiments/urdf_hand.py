"""The base class for robot hands described by a URDF: what a third-party hand plugin subclasses.

A robot hand plugin is a subclass that names its URDF (shipped as package data), its five
fingertip links and the links that play the wrist and MCP keypoints; everything else — couplings
from ``<mimic>`` tags, limits, calibration to the contract wrist frame, left/right variants,
batched FK and IK — comes from here::

    @dataclass(frozen=True, kw_only=True)
    class MyHandConfig(URDFHandConfig):
        '''Args: see URDFHandConfig.'''

    class MyHand(URDFHand):
        name = "my_hand"
        config_class = MyHandConfig
        fingertip_links = ("thumb_tip", "index_tip", "middle_tip", "ring_tip", "little_tip")
        keypoint_links = KeypointLinks(wrist="base", index_mcp="index_mcp_link", ...)

        @classmethod
        def urdf_path(cls) -> Path:
            return Path(__file__).parent / "urdf" / "my_hand_right.urdf"

Shape legend: ``J`` actuated joints, ``F`` = 5 fingertips, ``L`` links.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from metis_core.config import ComponentConfig
from metis_core.interfaces import Embodiment, IKResult
from metis_embodiments.ik import LMSettings, solve_fingertip_ik
from metis_embodiments.kinematics import HandKinematics, KeypointLinks

if TYPE_CHECKING:
    from metis_embodiments.dex_backend import DexRetargetingIK

__all__ = ["IK_BACKENDS", "URDFHand", "URDFHandConfig", "check_fingertips"]

#: IK backends selectable by name in :attr:`URDFHandConfig.ik_backend`.
IK_BACKENDS = ("torch_lm", "dex_retargeting")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True, kw_only=True)
class URDFHandConfig(ComponentConfig):
    """Config of a URDF robot hand.

    Args:
        side: ``"right"`` or ``"left"`` (the left hand is the mirror image of the right).
        strict_limits: Reject joint values outside the limits in forward kinematics.
        ik_backend: ``"torch_lm"`` (batched Levenberg–Marquardt in torch) or
            ``"dex_retargeting"`` (dex-retargeting's position optimiser, frame by frame).
        ik_max_iterations: Iteration cap of the torch solver.
        ik_tolerance_m: The torch solver stops once every fingertip is this close (metres).
        ik_seeds: Starting points per problem besides the warm start.
        ik_damping: Initial LM damping.
        ik_dtype: Arithmetic of the torch solver's iterations (``"float32"`` or ``"float64"``).
        dex_ftol_abs: NLopt objective tolerance of the dex-retargeting backend.
        dex_norm_delta: dex-retargeting's regulariser towards the previous frame (0 = off).
        left_model: How a left hand is built: ``"mirror"`` (the mirror image of the right-hand
            URDF, exact left/right symmetry) or ``"urdf"`` (the plugin's own left-hand URDF,
            see :meth:`URDFHand.left_urdf_path`).
    """

    side: str = "right"
    strict_limits: bool = True
    ik_backend: str = "torch_lm"
    ik_max_iterations: int = 40
    ik_tolerance_m: float = 1e-5
    ik_seeds: int = 2
    ik_damping: float = 1e-3
    ik_dtype: str = "float32"
    dex_ftol_abs: float = 1e-10
    dex_norm_delta: float = 0.0
    left_model: str = "mirror"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {self.side!r}")
        if self.ik_backend not in IK_BACKENDS:
            raise ValueError(f"ik_backend must be one of {IK_BACKENDS}, got {self.ik_backend!r}")
        if self.ik_max_iterations < 1:
            raise ValueError(f"ik_max_iterations must be >= 1, got {self.ik_max_iterations}")
        if not self.ik_tolerance_m > 0:
            raise ValueError(f"ik_tolerance_m must be > 0, got {self.ik_tolerance_m}")
        if self.ik_seeds < 1:
            raise ValueError(f"ik_seeds must be >= 1, got {self.ik_seeds}")
        if not self.ik_damping > 0:
            raise ValueError(f"ik_damping must be > 0, got {self.ik_damping}")
        if self.ik_dtype not in _DTYPES:
            raise ValueError(f"ik_dtype must be one of {sorted(_DTYPES)}, got {self.ik_dtype!r}")
        if not self.dex_ftol_abs > 0:
            raise ValueError(f"dex_ftol_abs must be > 0, got {self.dex_ftol_abs}")
        if self.dex_norm_delta < 0:
            raise ValueError(f"dex_norm_delta must be >= 0, got {self.dex_norm_delta}")
        if self.left_model not in ("mirror", "urdf"):
            raise ValueError(f"left_model must be 'mirror' or 'urdf', got {self.left_model!r}")


@functools.lru_cache(maxsize=32)
def _kinematics(
    urdf_path: Path,
    fingertip_links: tuple[str, ...],
    keypoint_links: KeypointLinks,
    mirror: bool,
    joint_order: tuple[str, ...] | None,
) -> HandKinematics:
    # Parsing the URDF and calibrating cost milliseconds; instances of one hand share them.
    return HandKinematics(
        urdf_path,
        fingertip_links=fingertip_links,
        keypoint_links=keypoint_links,
        mirror=mirror,
        joint_order=joint_order,
    )


def check_fingertips(name: str, fingertips: torch.Tensor) -> torch.Tensor:
    """Validate ``(..., 5, 3)`` finite floating fingertips; raise ``ValueError`` otherwise."""
    if not isinstance(fingertips, torch.Tensor):
        raise ValueError(
            f"{name}: expected fingertips as a torch.Tensor, got {type(fingertips).__name__}"
        )
    if fingertips.dim() < 2 or tuple(fingertips.shape[-2:]) != (5, 3):
        raise ValueError(
            f"{name}: expected fingertips of shape (..., 5, 3) (thumb, index, middle, ring, "
            f"little; x, y, z in metres), got {tuple(fingertips.shape)}"
        )
    if not fingertips.is_floating_point():
        raise ValueError(f"{name}: expected floating-point fingertips, got {fingertips.dtype}")
    if not bool(torch.isfinite(fingertips).all()):
        raise ValueError(f"{name}: fingertips contain NaN or infinity")
    return fingertips


class URDFHand(Embodiment, abc.ABC):
    """A robot hand whose kinematics come from a URDF describing its right-hand version.

    Subclasses set ``name``, ``config_class`` (a :class:`URDFHandConfig` subclass),
    ``fingertip_links``, ``keypoint_links`` and implement :meth:`urdf_path`.

    Attributes:
        fingertip_links: The 5 fingertip links, thumb to little.
        keypoint_links: Links whose origins are the wrist and index/middle/little MCP joints;
            the calibration applies :func:`metis_core.frames.wrist_frame_from_keypoints` to
            them at the zero pose.
        joint_order: Order of the actuated joints in joint vectors (default: URDF order).
    """

    fingertip_links: ClassVar[tuple[str, ...]]
    keypoint_links: ClassVar[KeypointLinks]
    joint_order: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: URDFHandConfig) -> None:
        self.config = config
        urdf, mirror = Path(self.urdf_path()), config.side == "left"
        if mirror and config.left_model == "urdf":
            left = self.left_urdf_path()
            if left is None:
                raise ValueError(f"{self.name} ships no left-hand URDF; use left_model='mirror'")
            urdf, mirror = Path(left), False
        self.kinematics = _kinematics(
            urdf, tuple(self.fingertip_links), self.keypoint_links, mirror, self.joint_order
        )
        self._dex: DexRetargetingIK | None = None

    @classmethod
    @abc.abstractmethod
    def urdf_path(cls) -> Path:
        """Path of the right-hand URDF shipped with the plugin (package data)."""

    @classmethod
    def left_urdf_path(cls) -> Path | None:
        """The maker's left-hand URDF, if the plugin ships one (used when ``left_model="urdf"``)."""
        return None

    # -- Embodiment interface ----------------------------------------------------------------

    @property
    def joint_names(self) -> tuple[str, ...]:
        """The actuated URDF joints (those without a ``<mimic>`` tag), in URDF order."""
        return self.kinematics.actuated_joint_names

    @property
    def joint_limits(self) -> torch.Tensor:
        """``(J, 2)`` limits from the URDF, in radians."""
        return self.kinematics.joint_limits.clone()

    def forward_kinematics(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` joints → ``(..., 5, 3)`` fingertips in the contract wrist frame.

        Batched and differentiable (pytorch-kinematics' analytic backward).

        Raises:
            ValueError: Wrong shape or dtype, NaN, or (if ``config.strict_limits``) a value
                outside the limits.
        """
        joints = self.check_joints(joints, strict=self.config.strict_limits)
        flat = joints.reshape(-1, self.num_joints)
        return self.kinematics.fingertips(flat).reshape(*joints.shape[:-1], 5, 3)

    def inverse_kinematics(
        self, fingertips: torch.Tensor, *, initial_joints: torch.Tensor | None = None
    ) -> IKResult:
        """``(..., 5, 3)`` fingertips in the wrist frame → joints within the limits.

        Args:
            fingertips: Targets; unreachable targets get the least-squares solution.
            initial_joints: ``(..., J)`` or ``(J,)`` warm start (e.g. the previous frame's
                solution); values outside the limits are clamped.

        Returns:
            :class:`IKResult` with ``joints (..., J)`` and ``fingertip_error (..., 5)`` in metres.

        Raises:
            ValueError: Bad fingertip or warm-start shapes, or NaN.
        """
        fingertips = check_fingertips(self.name, fingertips)
        batch_shape = fingertips.shape[:-2]
        flat = fingertips.reshape(-1, 5, 3)
        initial = None
        if initial_joints is not None:
            initial_joints = self.check_joints(initial_joints, strict=False).to(flat.dtype)
            if initial_joints.dim() == 1:
                initial = initial_joints.expand(flat.shape[0], -1)
            elif initial_joints.shape[:-1] == batch_shape:
                initial = initial_joints.reshape(-1, self.num_joints)
            else:
                raise ValueError(
                    f"{self.name}: initial_joints must have shape ({self.num_joints},) or "
                    f"{(*batch_shape, self.num_joints)}, got {tuple(initial_joints.shape)}"
                )
        if self.config.ik_backend == "dex_retargeting":
            joints = self.dex_backend().solve(flat, initial)
            iterations = 0
        else:
            settings = LMSettings(
                max_iterations=self.config.ik_max_iterations,
                tolerance_m=self.config.ik_tolerance_m,
                seeds=self.config.ik_seeds,
                damping=self.config.ik_damping,
                dtype=_DTYPES[self.config.ik_dtype],
            )
            joints, iterations = solve_fingertip_ik(
                self.kinematics.fingertips_and_jacobian,
                flat,
                self.kinematics.joint_limits,
                initial_joints=initial,
                settings=settings,
            )
        with torch.no_grad():
            reached = self.kinematics.fingertips(joints.detach())
            error = (reached - flat.detach()).norm(dim=-1)
        return IKResult(
            joints=joints.reshape(*batch_shape, self.num_joints),
            fingertip_error=error.reshape(*batch_shape, 5),
            iterations=iterations,
        )

    # -- extras ------------------------------------------------------------------------------

    def dex_backend(self) -> DexRetargetingIK:
        """The dex-retargeting reference solver for this hand (built on first use)."""
        if self._dex is None:
            from metis_embodiments.dex_backend import DexRetargetingIK

            self._dex = DexRetargetingIK(
                self.kinematics,
                ftol_abs=self.config.dex_ftol_abs,
                norm_delta=self.config.dex_norm_delta,
            )
        return self._dex

    @property
    def link_names(self) -> tuple[str, ...]:
        """Names of the ``L`` links of :meth:`link_poses`."""
        return self.kinematics.link_names

    def link_poses(self, joints: torch.Tensor) -> torch.Tensor:
        """Every link's pose in the contract wrist frame.

        Args:
            joints: ``(..., J)``.

        Returns:
            ``(..., L, 4, 4)`` link → wrist transforms, in :attr:`link_names` order.
        """
        joints = self.check_joints(joints, strict=self.config.strict_limits)
        poses = self.kinematics.link_poses(joints.reshape(-1, self.num_joints))
        return poses.reshape(*joints.shape[:-1], len(self.link_names), 4, 4)

    def link_pose(self, joints: torch.Tensor, link: str) -> torch.Tensor:
        """``(..., 4, 4)`` pose of one link in the contract wrist frame.

        Raises:
            ValueError: For an unknown link, listing the known ones.
        """
        if link not in self.link_names:
            raise ValueError(f"{self.name}: no link {link!r}; links are {list(self.link_names)}")
        return self.link_poses(joints)[..., self.link_names.index(link), :, :]

    @property
    def calibration(self) -> torch.Tensor:
        """``(4, 4)`` pose of the contract wrist frame in the URDF base link frame (right hand).

        Derived by applying :func:`metis_core.frames.wrist_frame_from_keypoints` to the
        origins of :attr:`keypoint_links` at the zero pose; a left hand additionally negates x.
        """
        out = torch.eye(4, dtype=torch.float64)
        out[:3, :3] = self.kinematics.calibration_rotation
        out[:3, 3] = self.kinematics.calibration_origin
        return out

    @property
    def hand_length_m(self) -> float:
        """Wrist → middle fingertip distance at the zero pose (clamped into the limits), metres.

        Used to scale human hands (see :func:`metis_embodiments.retarget.retarget`).
        """
        zero = torch.zeros(1, self.num_joints, dtype=torch.float64)
        limits = self.kinematics.joint_limits
        tips = self.kinematics.fingertips(zero.clamp(limits[:, 0], limits[:, 1]))
        return float(tips[0, 2].norm())

    def expand_joints(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` actuated joints → ``(..., Q)`` all URDF joints through the couplings."""
        joints = self.check_joints(joints, strict=False)
        flat = self.kinematics.expand_joints(joints.reshape(-1, self.num_joints))
        return flat.reshape(*joints.shape[:-1], -1)
