"""The base class for robot hands described by a URDF: what a third-party hand plugin subclasses.

A robot hand plugin is a subclass that names its URDF (shipped as package data), its fingertip
links (``None`` for a finger the hand does not have, e.g. the little finger of LEAP Hand) and the
links that play the wrist and MCP keypoints; everything else — couplings from ``<mimic>`` tags,
limits, calibration to the contract wrist frame, left/right variants, batched FK and IK, sanity
checks of the URDF and the link choice — comes from here::

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

Hands without a finger: forward kinematics reports the absent fingertip as zeros (the
contract's value for a missing value), inverse kinematics ignores its target (any finite value,
or NaN) and reports a zero error for it, and :attr:`URDFHand.fingertip_mask` says which
fingertips exist, for :func:`metis_core.contract.fingertip_value_mask`.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from metis_core.config import ComponentConfig
from metis_core.interfaces import Embodiment, IKResult
from metis_embodiments.ik import LMSettings, solve_fingertip_ik
from metis_embodiments.kinematics import HandKinematics, KeypointLinks, check_hand_model

if TYPE_CHECKING:
    from metis_embodiments.dex_backend import DexRetargetingIK

__all__ = [
    "IK_BACKENDS",
    "URDFHand",
    "URDFHandConfig",
    "check_fingertips",
    "inverse_kinematics_two_hands",
]

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
        ik_max_iterations: Iteration cap of the torch solver (per pass).
        ik_tolerance_m: The torch solver stops once every fingertip is this close (metres).
        ik_seeds: Canonical starting points per problem without a warm start (middle of the
            ranges, open hand, 1/4 and 3/4 of the ranges, then quasi-random points). With a warm
            start, the first pass starts from it alone.
        ik_damping: Initial LM damping.
        ik_dtype: Arithmetic of the torch solver's iterations (``"float32"`` or ``"float64"``).
        ik_restart_threshold_m: Problems whose worst fingertip is still farther than this after
            the first pass are solved again from more starting points (metres).
        ik_restart_seeds: Quasi-random starting points of a restart (besides the canonical
            poses not tried yet). High-DoF hands with multi-joint thumbs gain from more.
        ik_restarts: Restart passes at most (0 turns restarts off).
        dex_ftol_abs: NLopt objective tolerance of the dex-retargeting backend.
        dex_norm_delta: dex-retargeting's regulariser towards the previous frame (0 = off).
        left_model: How a left hand is built: ``"mirror"`` (the mirror image of the right-hand
            URDF, exact left/right symmetry) or ``"urdf"`` (the plugin's own left-hand URDF,
            see :meth:`URDFHand.left_urdf_path`).
        sanity_checks: Check the URDF and the link choice when the hand is built (no wrist or
            arm joints, open-hand fingertips forward of the wrist, a proper calibration) and
            raise with what to change; turn off only for a hand known to violate them.
    """

    side: str = "right"
    strict_limits: bool = True
    ik_backend: str = "torch_lm"
    ik_max_iterations: int = 40
    ik_tolerance_m: float = 1e-5
    ik_seeds: int = 4
    ik_damping: float = 1e-3
    ik_dtype: str = "float32"
    ik_restart_threshold_m: float = 2e-4
    ik_restart_seeds: int = 32
    ik_restarts: int = 2
    dex_ftol_abs: float = 1e-10
    dex_norm_delta: float = 0.0
    left_model: str = "mirror"
    sanity_checks: bool = True

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
        if not self.ik_restart_threshold_m > 0:
            raise ValueError(
                f"ik_restart_threshold_m must be > 0, got {self.ik_restart_threshold_m}"
            )
        if self.ik_restart_seeds < 1:
            raise ValueError(f"ik_restart_seeds must be >= 1, got {self.ik_restart_seeds}")
        if self.ik_restarts < 0:
            raise ValueError(f"ik_restarts must be >= 0, got {self.ik_restarts}")
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
    fingertip_links: tuple[str | None, ...],
    keypoint_links: KeypointLinks,
    mirror: bool,
    joint_order: tuple[str, ...] | None,
    sanity_checks: bool = True,
) -> HandKinematics:
    # Parsing the URDF and calibrating cost milliseconds; instances of one hand share them.
    return HandKinematics(
        urdf_path,
        fingertip_links=fingertip_links,
        keypoint_links=keypoint_links,
        mirror=mirror,
        joint_order=joint_order,
        sanity_checks=sanity_checks,
    )


def check_fingertips(
    name: str, fingertips: torch.Tensor, present: torch.Tensor | None = None
) -> torch.Tensor:
    """Validate ``(..., 5, 3)`` finite floating fingertips; raise ``ValueError`` otherwise.

    Args:
        name: The hand, for messages.
        fingertips: The targets.
        present: ``(5,)`` bool; absent fingertips' values are not checked for finiteness.
    """
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
    finite = torch.isfinite(fingertips).all(-1)
    if present is not None:
        finite = finite | ~present.to(finite.device)
    if not bool(finite.all()):
        raise ValueError(f"{name}: fingertips contain NaN or infinity")
    return fingertips


class URDFHand(Embodiment, abc.ABC):
    """A robot hand whose kinematics come from a URDF describing its right-hand version.

    Subclasses set ``name``, ``config_class`` (a :class:`URDFHandConfig` subclass),
    ``fingertip_links``, ``keypoint_links`` and implement :meth:`urdf_path`.

    Attributes:
        fingertip_links: The fingertip link of each contract finger, thumb to little; ``None``
            for a finger the hand does not have (e.g. ``(..., "ring_tip", None)``).
        keypoint_links: Links whose origins are the wrist and index/middle/little MCP joints;
            the calibration applies :func:`metis_core.frames.wrist_frame_from_keypoints` to
            them at the zero pose.
        joint_order: Order of the actuated joints in joint vectors (default: URDF order).
    """

    fingertip_links: ClassVar[tuple[str | None, ...]]
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
            urdf,
            tuple(self.fingertip_links),
            self.keypoint_links,
            mirror,
            self.joint_order,
            config.sanity_checks,
        )
        if config.sanity_checks and type(self).open_joints is not URDFHand.open_joints:
            problems = check_hand_model(self.kinematics, self.open_joints())
            if problems:
                raise ValueError("\n".join(problems))
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
    def fingertip_mask(self) -> torch.Tensor:
        """``(5,)`` bool: which contract fingertips (thumb .. little) this hand has."""
        return self.kinematics.fingertip_mask.clone()

    def open_joints(self) -> torch.Tensor:
        """``(J,)`` float64 joints of the open hand (default: zeros clamped into the limits).

        Used by the sanity checks (open-hand fingertips lie forward of the wrist) and as a
        canonical IK starting point; override it for a hand whose zero pose is not open.
        """
        return self.kinematics.open_joints()

    def sanity_problems(self) -> list[str]:
        """The sanity checks' findings (empty when the model is sound); see the module doc."""
        return check_hand_model(self.kinematics, self.open_joints())

    @property
    def joint_limits(self) -> torch.Tensor:
        """``(J, 2)`` limits from the URDF, in radians."""
        return self.kinematics.joint_limits.clone()

    def forward_kinematics(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` joints → ``(..., 5, 3)`` fingertips in the contract wrist frame.

        Batched and differentiable (pytorch-kinematics' analytic backward). A fingertip the hand
        does not have is zeros.

        Raises:
            ValueError: Wrong shape or dtype, NaN, or (if ``config.strict_limits``) a value
                outside the limits.
        """
        joints = self.check_joints(joints, strict=self.config.strict_limits)
        flat = joints.reshape(-1, self.num_joints)
        return self.kinematics.fingertips(flat).reshape(*joints.shape[:-1], 5, 3)

    @classmethod
    def inverse_kinematics_pair(
        cls,
        left: Embodiment,
        right: Embodiment,
        left_fingertips: torch.Tensor,
        right_fingertips: torch.Tensor,
        *,
        left_initial: torch.Tensor | None = None,
        right_initial: torch.Tensor | None = None,
    ) -> tuple[IKResult, IKResult]:
        """Both hands in one batched solve when they can share it (see
        :func:`inverse_kinematics_two_hands`)."""
        return inverse_kinematics_two_hands(
            left,
            right,
            left_fingertips,
            right_fingertips,
            left_initial=left_initial,
            right_initial=right_initial,
        )

    def inverse_kinematics(
        self, fingertips: torch.Tensor, *, initial_joints: torch.Tensor | None = None
    ) -> IKResult:
        """``(..., 5, 3)`` fingertips in the wrist frame → joints within the limits.

        Args:
            fingertips: Targets; unreachable targets get the least-squares solution. Targets of
                fingertips the hand does not have are ignored (they may be NaN).
            initial_joints: ``(..., J)`` or ``(J,)`` warm start (e.g. the previous frame's
                solution); values outside the limits are clamped.

        Returns:
            :class:`IKResult` with ``joints (..., J)`` and ``fingertip_error (..., 5)`` in metres
            (zero for absent fingertips).

        Raises:
            ValueError: Bad fingertip or warm-start shapes, or NaN.
        """
        present = self.kinematics.fingertip_mask
        fingertips = check_fingertips(self.name, fingertips, present)
        if not bool(present.all()):  # absent fingertips: the same zeros as forward kinematics
            fingertips = fingertips.masked_fill(~present[:, None].to(fingertips.device), 0.0)
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
            iterations, error = 0, None
        else:
            settings = LMSettings(
                max_iterations=self.config.ik_max_iterations,
                tolerance_m=self.config.ik_tolerance_m,
                seeds=self.config.ik_seeds,
                damping=self.config.ik_damping,
                dtype=_DTYPES[self.config.ik_dtype],
                restart_threshold_m=self.config.ik_restart_threshold_m,
                restart_seeds=self.config.ik_restart_seeds,
                restarts=self.config.ik_restarts,
            )
            # Without gradients to the targets the solve records no autograd history (inference
            # mode: ~15 % less per-op overhead in a control loop); the results are cloned out of
            # it so that callers get ordinary tensors, and the kinematics' caches are never
            # filled with inference tensors. Targets that require grad keep the implicit
            # gradient step of the solver.
            with torch.inference_mode(not (flat.requires_grad and torch.is_grad_enabled())):
                joints, iterations, error = solve_fingertip_ik(
                    self.kinematics.fingertips_and_jacobian,
                    flat,
                    self.kinematics.joint_limits,
                    initial_joints=initial,
                    settings=settings,
                    open_joints=self.open_joints(),
                    groups=self.kinematics.fingertip_groups(),
                    return_errors=True,
                )
            joints, error = joints.clone(), error.clone()
        if error is None:
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


def _same_but_side(left: URDFHandConfig, right: URDFHandConfig) -> bool:
    """Whether two hand configs are equal in every field but ``side`` (cheaper than building
    ``left.replace(side=right.side)``, which validates every field, in a control loop)."""
    return type(left) is type(right) and all(
        getattr(left, field.name) == getattr(right, field.name)
        for field in dataclasses.fields(left)
        if field.name != "side"
    )


def inverse_kinematics_two_hands(
    left: Embodiment,
    right: Embodiment,
    left_fingertips: torch.Tensor,
    right_fingertips: torch.Tensor,
    *,
    left_initial: torch.Tensor | None = None,
    right_initial: torch.Tensor | None = None,
) -> tuple[IKResult, IKResult]:
    """Both hands' inverse kinematics, in one batched solve when they can share it.

    A left hand built as the mirror image of the right (``left_model="mirror"``, the default)
    has the right hand's kinematics with x negated, so its targets mirrored into the right
    hand's frame are problems of the right hand: the two hands' frames are then solved as one
    batch (half the per-call overhead, the same results as two calls up to the solver's
    tolerance). Otherwise (different hands or configs, one side warm-started and the other
    not) this is two :meth:`~metis_core.interfaces.Embodiment.inverse_kinematics` calls.

    Args:
        left: The left hand.
        right: The right hand.
        left_fingertips: ``(..., 5, 3)`` left-hand targets in the left wrist frame.
        right_fingertips: ``(..., 5, 3)`` right-hand targets.
        left_initial: Warm start of the left hand, as for ``inverse_kinematics``.
        right_initial: Warm start of the right hand.

    Returns:
        ``(left_result, right_result)``.

    Raises:
        ValueError: If ``left`` is not a left hand or ``right`` not a right hand, or for bad
            targets.
    """
    if left.side != "left" or right.side != "right":
        raise ValueError(
            f"inverse_kinematics_two_hands: expected a left and a right hand, got "
            f"{left.side} {left.name!r} and {right.side} {right.name!r}"
        )
    shared = (
        isinstance(left, URDFHand)
        and isinstance(right, URDFHand)
        and type(left) is type(right)
        and _same_but_side(left.config, right.config)
        and right.config.ik_backend == "torch_lm"
        and left.kinematics.mirror
        and left.kinematics.urdf_path == right.kinematics.urdf_path
        and isinstance(left_fingertips, torch.Tensor)
        and isinstance(right_fingertips, torch.Tensor)
        and left_fingertips.shape == right_fingertips.shape
        and left_fingertips.dim() >= 2
        and (left_initial is None) == (right_initial is None)
    )
    if shared and left_initial is not None:
        assert right_initial is not None
        shared = left_initial.shape == right_initial.shape
    if not shared:
        return (
            left.inverse_kinematics(left_fingertips, initial_joints=left_initial),
            right.inverse_kinematics(right_fingertips, initial_joints=right_initial),
        )
    assert isinstance(right, URDFHand)
    mirror = torch.tensor([-1.0, 1.0, 1.0], dtype=left_fingertips.dtype)
    targets = torch.stack([left_fingertips * mirror, right_fingertips])
    initial = None
    if left_initial is not None and right_initial is not None:
        if left_initial.dim() == 1:
            lead = left_fingertips.shape[:-2]
            left_initial = left_initial.expand(*lead, -1)
            right_initial = right_initial.expand(*lead, -1)
        initial = torch.stack([left_initial, right_initial])
    both = right.inverse_kinematics(targets, initial_joints=initial)
    return (
        IKResult(both.joints[0], both.fingertip_error[0], both.iterations),
        IKResult(both.joints[1], both.fingertip_error[1], both.iterations),
    )
