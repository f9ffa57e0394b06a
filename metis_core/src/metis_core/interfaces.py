"""The abstract interfaces that plugin authors subclass, one per registry kind.

Shape legend: ``B`` batch, ``T`` time steps, ``N`` tokens, ``J`` joints, ``F`` = 5 fingertips,
``D`` = 48 values of the hand action contract, ``C`` action chunk length.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from metis_core.components import Component
from metis_core.episode import Episode

__all__ = [
    "ActionHead",
    "Backbone",
    "DatasetSource",
    "Embodiment",
    "IKResult",
    "KinematicsBackend",
    "Tokenizer",
]


class Tokenizer(Component, abc.ABC):
    """Turns windows of contract actions into discrete tokens and back.

    Registry kind ``tokenizers``, entry-point group ``metis.tokenizers``.
    """

    kind: ClassVar[str] = "tokenizers"

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct token ids the tokenizer emits (ids are ``0 .. vocab_size-1``)."""

    @property
    @abc.abstractmethod
    def tokens_per_window(self) -> int | None:
        """Tokens per window if fixed (e.g. 40 for ``motion_rvq``), ``None`` if it varies."""

    @abc.abstractmethod
    def encode(
        self, actions: torch.Tensor, hand_mask: torch.Tensor | None = None
    ) -> torch.Tensor | list[list[int]]:
        """Encode windows of actions.

        Args:
            actions: ``(B, T, D)``.
            hand_mask: ``(B, 2)`` or ``(B, T, 2)`` bool presence; all present if omitted.

        Returns:
            ``(B, N)`` int64 codes for fixed-length tokenizers, else one list of ids per window.
        """

    @abc.abstractmethod
    def decode(
        self, codes: torch.Tensor | list[list[int]], start: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode codes back to ``(B, T, D)`` actions.

        Args:
            codes: What :meth:`encode` returned.
            start: ``(B, D)`` state at the window's first frame, for tokenizers that code
                motion relative to it (at inference: the current proprio state).
        """


class Backbone(Component, torch.nn.Module, abc.ABC):
    """A vision-language model that maps images and token ids to hidden states.

    Registry kind ``backbones``, entry-point group ``metis.backbones``.
    """

    kind: ClassVar[str] = "backbones"

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of the hidden states the backbone returns."""

    @abc.abstractmethod
    def forward(
        self,
        *,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run the model.

        Args:
            pixel_values: ``(B, 3, H, W)`` images.
            input_ids: ``(B, N)`` token ids.
            attention_mask: ``(B, N)``.
        """


class ActionHead(Component, torch.nn.Module, abc.ABC):
    """Turns backbone hidden states (and the proprio state) into a chunk of continuous actions.

    Registry kind ``action_heads``, entry-point group ``metis.action_heads``.
    """

    kind: ClassVar[str] = "action_heads"

    @abc.abstractmethod
    def forward(
        self, hidden_states: torch.Tensor, proprio: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """Predict actions.

        Args:
            hidden_states: ``(B, N, hidden)`` states of the tokens the head attends to.
            proprio: ``(B, D)`` current hand state.

        Returns:
            ``(B, C, D)`` action chunk.
        """


@dataclass
class IKResult:
    """Result of inverse kinematics.

    Args:
        joints: ``(..., J)`` joint values within the limits.
        fingertip_error: ``(..., F)`` distance in metres between the target fingertips and the
            forward kinematics of ``joints``.
        iterations: Iterations the solver ran.
    """

    joints: torch.Tensor
    fingertip_error: torch.Tensor
    iterations: int = 0


@runtime_checkable
class KinematicsBackend(Protocol):
    """Anything that maps joint values to fingertip positions (e.g. a pytorch-kinematics chain)."""

    def __call__(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` joints → ``(..., F, 3)`` fingertips in the contract wrist frame."""
        ...


class Embodiment(Component, abc.ABC):
    """A hand: its joints and limits, and kinematics between joints and contract fingertips.

    One instance describes one side (``config.side`` is ``"left"`` or ``"right"``).
    Fingertips are in the contract's wrist frame (see :mod:`metis_core.frames`); each robot
    embodiment states the fixed transform from its base link to that frame.

    Registry kind ``embodiments``, entry-point group ``metis.embodiments``.
    """

    kind: ClassVar[str] = "embodiments"
    #: Whether the "joints" are human hand keypoints (MANO, Manus) rather than robot joints.
    is_human: ClassVar[bool] = False
    #: The contract's fingertip order.
    fingertip_names: ClassVar[tuple[str, ...]] = ("thumb", "index", "middle", "ring", "little")

    @property
    @abc.abstractmethod
    def joint_names(self) -> tuple[str, ...]:
        """Names of the ``J`` actuated joints, in the order of joint vectors."""

    @property
    @abc.abstractmethod
    def joint_limits(self) -> torch.Tensor:
        """``(J, 2)`` lower and upper limit of each actuated joint (radians or metres)."""

    @abc.abstractmethod
    def forward_kinematics(self, joints: torch.Tensor) -> torch.Tensor:
        """``(..., J)`` joints → ``(..., F, 3)`` fingertips in the wrist frame (batched, differentiable)."""

    @abc.abstractmethod
    def inverse_kinematics(
        self, fingertips: torch.Tensor, *, initial_joints: torch.Tensor | None = None
    ) -> IKResult:
        """``(..., F, 3)`` fingertips in the wrist frame → joints within the limits.

        Args:
            fingertips: Targets.
            initial_joints: ``(..., J)`` warm start (e.g. the previous frame's solution).
        """

    @property
    def num_joints(self) -> int:
        """``J``."""
        return len(self.joint_names)

    def sample_joints(
        self, count: int, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Random plausible joint values, for tests and benchmarks.

        The default draws uniformly inside :attr:`joint_limits`; hands whose limits are only a
        sanity bound (keypoint hands) draw realistic hand poses instead.

        Args:
            count: Number of configurations.
            generator: Random generator (for reproducibility).

        Returns:
            ``(count, J)`` float64.
        """
        limits = self.joint_limits.double()
        u = torch.rand(count, self.num_joints, generator=generator, dtype=torch.float64)
        return limits[:, 0] + u * (limits[:, 1] - limits[:, 0])

    def mirror_joints(self, joints: torch.Tensor) -> torch.Tensor:
        """Joint values that make the other side's hand the mirror image of this one.

        Robot joint values mean the same on both sides, so the default returns ``joints``
        unchanged; keypoint hands (whose "joints" are positions) reflect them. The conformance
        suite checks ``other.forward_kinematics(self.mirror_joints(q))`` equals this hand's
        fingertips with x negated.

        Args:
            joints: ``(..., J)``.

        Returns:
            ``(..., J)``.
        """
        return joints

    @property
    def side(self) -> str:
        """``"left"`` or ``"right"``."""
        return str(getattr(self.config, "side", "right"))

    def check_joints(
        self, joints: torch.Tensor, *, strict: bool = True, tolerance: float = 1e-6
    ) -> torch.Tensor:
        """Validate joint values: type, shape ``(..., J)``, finiteness and (if strict) limits.

        Returns:
            The joints as a floating tensor.

        Raises:
            ValueError: Naming the joint and the violated limit.
        """
        if not isinstance(joints, torch.Tensor):
            raise ValueError(
                f"{self.name}: expected joints as a torch.Tensor, got {type(joints).__name__}"
            )
        if joints.dim() == 0 or joints.shape[-1] != self.num_joints:
            raise ValueError(
                f"{self.name}: expected joints of shape (..., {self.num_joints}) for joints "
                f"{list(self.joint_names)}, got {tuple(joints.shape)}"
            )
        if not joints.is_floating_point():
            raise ValueError(f"{self.name}: expected floating-point joints, got {joints.dtype}")
        if not bool(torch.isfinite(joints).all()):
            raise ValueError(f"{self.name}: joints contain NaN or infinity")
        if strict:
            limits = self.joint_limits.to(joints)
            below = joints < limits[:, 0] - tolerance
            above = joints > limits[:, 1] + tolerance
            if bool((below | above).any()):
                bad = (below | above).nonzero()[0].tolist()
                j = bad[-1]
                raise ValueError(
                    f"{self.name}: joint {self.joint_names[j]!r} = {joints[tuple(bad)].item():.6g} "
                    f"at index {tuple(bad)} is outside its limits [{limits[j, 0].item():.6g}, "
                    f"{limits[j, 1].item():.6g}]"
                )
        return joints


class DatasetSource(Component, abc.ABC):
    """Reads one source's published on-disk layout and yields episodes in the contract.

    Registry kind ``datasets``, entry-point group ``metis.datasets``.

    Attributes:
        human: Whether the source records human hands (vs robot hands).
    """

    kind: ClassVar[str] = "datasets"
    human: ClassVar[bool] = True

    @abc.abstractmethod
    def check_layout(self, raw_dir: Path) -> None:
        """Raise ``FileNotFoundError``/``ValueError`` naming the missing or unexpected file or key."""

    @abc.abstractmethod
    def iter_episodes(self, raw_dir: Path) -> Iterator[Episode]:
        """Yield the source's episodes converted to the contract."""
