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
    "BackboneOutput",
    "DatasetSource",
    "Embodiment",
    "Env",
    "IKResult",
    "KinematicsBackend",
    "Policy",
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


@dataclass
class BackboneOutput:
    """What a backbone's language model returns for a sequence of embeddings.

    Args:
        logits: ``(B, N, V)`` next-token logits (``V`` may exceed the tokenizer: padded rows).
        hidden_states: ``(B, N, hidden)`` last-layer hidden states (after the final norm).
        cache: The key/value cache to continue from (``None`` unless ``use_cache``).
    """

    logits: torch.Tensor
    hidden_states: torch.Tensor
    cache: Any = None


class Backbone(Component, torch.nn.Module, abc.ABC):
    """A vision-language model: images to embeddings in the language model's space, and a
    causal language model over any sequence of embeddings.

    The METIS policy composes sequences itself (``<bos> <image tokens> <prompt> ...``), so a
    backbone only has to embed images and tokens and run its language model. That keeps the
    image path explicit (the vision towers run once per call, also with a key/value cache) and
    makes teacher forcing and generation see the same hidden states.

    Registry kind ``backbones``, entry-point group ``metis.backbones``. Shape legend: ``P``
    image tokens per image, ``L`` token ids, ``N`` embedded positions.
    """

    kind: ClassVar[str] = "backbones"

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of the hidden states the language model returns."""

    @property
    @abc.abstractmethod
    def num_image_tokens(self) -> int:
        """``P``: embeddings one image becomes."""

    @property
    @abc.abstractmethod
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` the vision towers read."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Rows of the language model's input embedding (padded, so possibly more than the tokenizer has)."""

    @abc.abstractmethod
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 RGB images (any size) → ``pixel_values`` for :meth:`embed_images`."""

    @abc.abstractmethod
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` → ``(B, P, hidden)`` image embeddings in the language model's space."""

    @abc.abstractmethod
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids → ``(B, L, hidden)`` input embeddings."""

    @abc.abstractmethod
    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> BackboneOutput:
        """Run the causal language model over ``(B, N, hidden)`` embeddings.

        Args:
            inputs_embeds: The sequence (or, with ``cache``, its continuation).
            attention_mask: ``(B, N_total)`` 1 for real positions, cached ones included.
            position_ids: ``(B, N)`` positions of ``inputs_embeds`` (default: after the cache).
            cache: What a previous call returned, to continue from.
            use_cache: Return a cache.
        """

    @abc.abstractmethod
    def resize_vocabulary(self, size: int, *, pad_to_multiple_of: int = 64) -> int:
        """Grow the input and output embeddings to hold ``size`` tokens.

        New rows are set to the mean of the old rows (as METIS and Prismatic do), not sampled.

        Returns:
            The new number of rows (``size`` rounded up to ``pad_to_multiple_of``).
        """

    def forward(
        self,
        *,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BackboneOutput:
        """Images inserted after the first token of ``input_ids``, then the language model.

        Args:
            pixel_values: What :meth:`preprocess` returned, for ``B`` images.
            input_ids: ``(B, L)`` ids starting with ``<bos>``.
            attention_mask: ``(B, L)``; the image positions are always attended.

        Returns:
            A :class:`BackboneOutput` over ``N = L + P`` positions.
        """
        images = self.embed_images(pixel_values)
        tokens = self.embed_tokens(input_ids)
        embeds = torch.cat([tokens[:, :1], images.to(tokens.dtype), tokens[:, 1:]], 1)
        mask = None
        if attention_mask is not None:
            ones = attention_mask.new_ones(attention_mask.shape[0], images.shape[1])
            mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], 1)
        return self.run_language_model(embeds, attention_mask=mask, **kwargs)


class ActionHead(Component, torch.nn.Module, abc.ABC):
    """Turns backbone hidden states (and the proprio state) into a chunk of continuous actions.

    Registry kind ``action_heads``, entry-point group ``metis.action_heads``.
    """

    kind: ClassVar[str] = "action_heads"

    @property
    @abc.abstractmethod
    def chunk_len(self) -> int:
        """``C``: actions per predicted chunk."""

    @abc.abstractmethod
    def forward(
        self,
        hidden_states: torch.Tensor,
        proprio: torch.Tensor,
        *,
        image_states: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Predict actions.

        Args:
            hidden_states: ``(B, N, hidden)`` last-layer states of the tokens the head reads
                (METIS: the 44 dynamics tokens, at the positions where they are inputs).
            proprio: ``(B, D)`` current hand state (normalised).
            image_states: ``(B, P, hidden)`` last-layer states at the image positions.

        Returns:
            ``(B, C, D)`` action chunk (normalised).
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


@runtime_checkable
class Policy(Protocol):
    """Anything that turns an observation into a chunk of contract actions.

    ``metis_core.vla.MetisPolicy`` sessions, a client of a remote ``POST /act`` server and the
    simulator's scripted or replay policies all satisfy it, so an evaluator can drive any of them.
    """

    def predict_action(self, images: Any, instruction: str, state: Any) -> Any:
        """Predict the next action chunk.

        Args:
            images: ``(H, W, 3)`` uint8 RGB ego image, or ``(B, H, W, 3)`` for a batch.
            instruction: The task's language instruction.
            state: ``(D,)`` (or ``(B, D)``) current hand state in the contract.

        Returns:
            Either a ``(C, D)`` (or ``(B, C, D)``) float32 array/tensor, or an object whose
            ``actions`` attribute is one (e.g. :class:`metis_core.vla.modeling_metis.ActionPrediction`).
        """
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

    @property
    def fingertip_mask(self) -> torch.Tensor:
        """``(F,)`` bool: which contract fingertips (thumb .. little) the hand has.

        All five by default. A hand without a finger (LEAP Hand, Allegro: no little finger)
        returns False there; its forward kinematics reports that fingertip as zeros, its inverse
        kinematics ignores that target, and datasets recorded on it mask those values (see
        :func:`metis_core.contract.fingertip_value_mask`).
        """
        return torch.ones(len(self.fingertip_names), dtype=torch.bool)

    @property
    def present_fingertips(self) -> tuple[str, ...]:
        """Names of the fingertips the hand has, in contract order."""
        mask = self.fingertip_mask.tolist()
        return tuple(n for n, m in zip(self.fingertip_names, mask, strict=True) if m)

    def sanity_problems(self) -> list[str]:
        """Findings of the embodiment's model checks (empty when sound).

        Robot hands built from a URDF check that no wrist or arm joints remain, that the open
        hand's fingertips lie forward of the wrist and that the calibration is a proper
        rotation; the conformance suite asserts this list is empty.
        """
        return []

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
        """Both hands' IK. The default is one call per hand; a hand class may solve the two in
        one batch (URDF hands whose left is the mirrored right do), which a control loop that
        solves a two-hand chunk per step benefits from.

        Args:
            left: The left hand.
            right: The right hand.
            left_fingertips: ``(..., F, 3)`` left targets in the left wrist frame.
            right_fingertips: ``(..., F, 3)`` right targets.
            left_initial: Warm start of the left hand (as for :meth:`inverse_kinematics`).
            right_initial: Warm start of the right hand.

        Returns:
            ``(left_result, right_result)``.
        """
        return (
            left.inverse_kinematics(left_fingertips, initial_joints=left_initial),
            right.inverse_kinematics(right_fingertips, initial_joints=right_initial),
        )

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


class Env(Component, abc.ABC):
    """A simulated task: a Gymnasium-style environment observed and driven in the contract.

    Observations hold the ego image and the 48-D state in the ego camera frame; actions are
    48-D contract targets (see ``metis_sim``). Subclasses usually also derive from
    ``gymnasium.Env``; this base only fixes what the registry and the evaluators rely on.

    Registry kind ``envs``, entry-point group ``metis.envs``.
    """

    kind: ClassVar[str] = "envs"

    @abc.abstractmethod
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        """Start an episode; return ``(observation, info)``."""

    @abc.abstractmethod
    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Apply one ``(D,)`` contract action; return ``(obs, reward, terminated, truncated, info)``."""

    @property
    @abc.abstractmethod
    def instruction(self) -> str:
        """The language instruction of the current episode."""
