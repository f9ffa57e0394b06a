"""The dynamics vocabulary: code tokens and control tokens in a Hugging Face tokenizer.

METIS extends the language model's vocabulary with one special token per code of the visual
(``<vis_i>``, 16) and motion (``<mot_j>``, 512) codebooks and with control tokens (METIS §4.3;
DESIGN §8). One policy step is the sequence::

    <image tokens> <instruction> [BOA] <subtask text> [BOD] <4 visual codes> <40 motion codes> [EOD]

The reasoning segment ``[BOA] <subtask text>`` appears only when the subtask changes; otherwise
the model emits ``[BOD]`` right after the instruction. ``[EOD]`` (end of dynamics) is the end
marker. Image tokens are inserted by the backbone as embeddings, so they are not part of the
token ids built here.

:class:`DynamicsVocabulary` adds the tokens to any Hugging Face tokenizer (``transformers`` fast
or slow tokenizers; anything with ``add_tokens``, ``get_vocab``, ``encode`` and ``decode``), maps
codes to token ids and back, builds training sequences with their label mask, parses generated
sequences, and constrains generation with a ``transformers`` ``LogitsProcessor`` so that after
``[BOD]`` a model can only emit 4 visual codes, then 40 motion codes, then ``[EOD]``.

:meth:`VocabularySpec.metis_release` reproduces the authors' released layout instead: ``<BOR>``
(reasoning), ``<BOA>`` (dynamics), ``<DYN_i>``, ``<DEX_j>`` added in that order, and the
tokenizer's eos ``</s>`` as the end marker (see ``docs/deploy/release.md``).

``transformers`` is imported only by :meth:`DynamicsVocabulary.logits_processor` and
:meth:`DynamicsVocabulary.from_pretrained` (``pip install 'metis-tokenizers[vision]'``).

Shape legend: ``B`` sequences, ``L`` tokens, ``V`` model vocabulary (logits), ``Q_v`` visual
tokens per step (4), ``Q_m`` motion tokens per step (40).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from metis_core._optional import require
from metis_core.io import atomic_directory, read_json, write_json

__all__ = [
    "IGNORE_INDEX",
    "TOKEN_GROUPS",
    "VOCABULARY_NAME",
    "DynamicsLogitsProcessor",
    "DynamicsSequence",
    "DynamicsVocabulary",
    "ParsedDynamics",
    "VocabularySpec",
]

#: Label of positions that are not trained (the convention of ``torch.nn.CrossEntropyLoss``).
IGNORE_INDEX = -100
#: File that :meth:`DynamicsVocabulary.save_pretrained` writes next to the tokenizer files.
VOCABULARY_NAME = "dynamics_vocabulary.json"
_FORMAT_VERSION = 1
_INSTALL = "metis-tokenizers[vision]"


#: The groups of added tokens, in the default order (codes first, then the control tokens).
TOKEN_GROUPS = ("visual", "motion", "begin_reasoning", "begin_dynamics", "end_dynamics")


@dataclass(frozen=True, kw_only=True)
class VocabularySpec:
    """Sizes and token names of the dynamics vocabulary (defaults: METIS appendix B).

    :meth:`metis_release` gives the layout of the authors' released checkpoints instead.

    Args:
        visual_codes: Codes of the visual-dynamics codebook (``|C_v| = 16``).
        visual_tokens: Visual tokens per step (``V = 4``).
        motion_codes: Codes of the shared motion codebook (``|C_m| = 512``).
        motion_tokens: Motion tokens per step (``R = 40``: 2 hands × 10 steps × 2 levels).
        visual_format: Token text of visual code ``i``.
        motion_format: Token text of motion code ``j``.
        begin_reasoning: Starts the subtask (reasoning) segment.
        begin_dynamics: Starts the dynamics tokens.
        end_dynamics: Ends the step, or ``None`` for the tokenizer's own eos token (nothing is
            added for it; the authors' release ends the step with the LLaMA ``</s>``).
        token_order: In which order the groups of :data:`TOKEN_GROUPS` are added to the
            tokenizer (this decides their ids); ``"end_dynamics"`` is left out when
            ``end_dynamics`` is ``None``. Default: visual codes, motion codes, then the control
            tokens.
    """

    visual_codes: int = 16
    visual_tokens: int = 4
    motion_codes: int = 512
    motion_tokens: int = 40
    visual_format: str = "<vis_{}>"
    motion_format: str = "<mot_{}>"
    begin_reasoning: str = "[BOA]"
    begin_dynamics: str = "[BOD]"
    end_dynamics: str | None = "[EOD]"
    token_order: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("visual_codes", "visual_tokens", "motion_codes", "motion_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("visual_format", "motion_format"):
            value = getattr(self, name)
            if not isinstance(value, str) or value.count("{}") != 1:
                raise ValueError(f"{name} must be a string with one '{{}}' for the code, got {value!r}")  # fmt: skip
        controls = self.control_tokens
        if not all(isinstance(c, str) and c.strip() == c and c for c in controls) or (
            self.end_dynamics is None and len(controls) != 2
        ):
            raise ValueError(f"control tokens must be non-empty strings without surrounding spaces (end_dynamics may be None: the eos), got {(self.begin_reasoning, self.begin_dynamics, self.end_dynamics)}")  # fmt: skip
        if len(set(controls)) != len(controls):
            raise ValueError(f"control tokens must differ, got {controls}")
        if self.visual_format == self.motion_format:
            raise ValueError("visual_format and motion_format must differ")
        groups = tuple(g for g in TOKEN_GROUPS if g != "end_dynamics" or self.end_dynamics is not None)  # fmt: skip
        order = groups if self.token_order is None else self.token_order
        if isinstance(order, str) or not isinstance(order, Sequence):
            raise ValueError(f"token_order must be a sequence of {list(groups)}, got {order!r}")
        order = tuple(order)
        if sorted(order) != sorted(groups):
            hint = " (end_dynamics is None: the eos is not added)" if self.end_dynamics is None else ""  # fmt: skip
            raise ValueError(f"token_order must name each of {list(groups)} once, got {list(order)}{hint}")  # fmt: skip
        # JSON gives a list; store a tuple so that specs compare equal after a round trip.
        object.__setattr__(self, "token_order", order)

    @classmethod
    def metis_release(cls, **overrides: Any) -> VocabularySpec:
        """The vocabulary of the authors' released checkpoints (AureleoPKU/Metis).

        ``<BOA>`` starts the *dynamics* and ``<BOR>`` the *reasoning* (the names are swapped
        with respect to the paper's [BOA]/[BOD]); ``<DYN_i>`` are the 16 visual codes and
        ``<DEX_j>`` the 512 motion codes; there is no end-of-dynamics token: the step ends with
        the tokenizer's eos (``</s>``). They are added in the order ``<BOA>``, ``<BOR>``,
        ``<DYN_0..15>``, ``<DEX_0..511>``: after LLaMA-2's 32000 tokens and ``<PAD>`` (32000)
        that is ``<BOA>`` = 32001, ``<BOR>`` = 32002, ``<DYN_i>`` = 32003 + i,
        ``<DEX_j>`` = 32019 + j.

        Args:
            **overrides: Other fields (e.g. sizes).
        """
        values: dict[str, Any] = {
            "visual_format": "<DYN_{}>",
            "motion_format": "<DEX_{}>",
            "begin_reasoning": "<BOR>",
            "begin_dynamics": "<BOA>",
            "end_dynamics": None,
            "token_order": ("begin_dynamics", "begin_reasoning", "visual", "motion"),
        }
        values.update(overrides)
        return cls(**values)

    @property
    def dynamics_tokens(self) -> int:
        """Code tokens per step (``Q_v + Q_m``; 44 by default)."""
        return self.visual_tokens + self.motion_tokens

    @property
    def control_tokens(self) -> tuple[str, ...]:
        """``(begin_reasoning, begin_dynamics, end_dynamics)``; without the end marker when it
        is the tokenizer's eos (``end_dynamics=None``)."""
        ends = () if self.end_dynamics is None else (self.end_dynamics,)
        return (self.begin_reasoning, self.begin_dynamics, *ends)

    def _group(self, name: str) -> list[str]:
        if name == "visual":
            return [self.visual_format.format(i) for i in range(self.visual_codes)]
        if name == "motion":
            return [self.motion_format.format(j) for j in range(self.motion_codes)]
        return [getattr(self, name)]

    def token_strings(self) -> list[str]:
        """All added tokens, in :attr:`token_order` (default: visual codes, motion codes, then
        the control tokens). The eos end marker (``end_dynamics=None``) is not among them."""
        assert self.token_order is not None  # set by __post_init__
        return [token for group in self.token_order for token in self._group(group)]

    @classmethod
    def from_tokenizers(cls, visual: Any, motion: Any, **kwargs: Any) -> VocabularySpec:
        """Sizes read from a visual and a motion tokenizer (``vocab_size``, ``tokens_per_window``).

        Args:
            visual: E.g. a :class:`~metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq.VisualDynamicsVQ`.
            motion: E.g. a :class:`~metis_tokenizers.motion_rvq.modeling_motion_rvq.MotionRVQ`.
            **kwargs: Other fields (token names).
        """
        return cls(
            visual_codes=int(visual.vocab_size),
            visual_tokens=int(visual.tokens_per_window),
            motion_codes=int(motion.vocab_size),
            motion_tokens=int(motion.tokens_per_window),
            **kwargs,
        )


@dataclass
class DynamicsSequence:
    """One training sequence (text part; the backbone prepends the image tokens).

    Attributes:
        input_ids: ``(L,)`` int64 token ids.
        labels: ``(L,)`` int64: the ids where the model is trained, :data:`IGNORE_INDEX` on the
            prompt (instruction). Pass as ``labels`` to a causal LM (it shifts them itself).
        prompt_length: Tokens of the prompt (bos + instruction).
        dynamics_start: Position of the first code token (the one after ``[BOD]``).
        num_dynamics: Code tokens (44 by default), at ``dynamics_start : dynamics_start + num_dynamics``.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    prompt_length: int
    dynamics_start: int
    num_dynamics: int

    @property
    def loss_mask(self) -> torch.Tensor:
        """``(L,)`` bool: positions that carry a label."""
        return self.labels != IGNORE_INDEX

    @property
    def dynamics_positions(self) -> torch.Tensor:
        """``(Q_v + Q_m,)`` positions of the code tokens (what the action head pools over)."""
        return torch.arange(self.dynamics_start, self.dynamics_start + self.num_dynamics)


@dataclass
class ParsedDynamics:
    """The content of a (generated or built) step.

    Attributes:
        visual_codes: ``(Q_v,)`` int64.
        motion_codes: ``(Q_m,)`` int64.
        subtask: The reasoning text between ``[BOA]`` and ``[BOD]``, or ``None`` if the step
            did not reason.
        complete: Whether the end marker followed the codes.
    """

    visual_codes: torch.Tensor
    motion_codes: torch.Tensor
    subtask: str | None
    complete: bool


def _as_int_tensor(values: Any, what: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        tensor = values
    elif isinstance(values, (list, tuple)) and len(values) == 0:
        tensor = torch.zeros(0, dtype=torch.long)  # an empty list has no dtype to judge
    elif isinstance(values, (str, bytes)) or values is None:
        raise ValueError(f"{what}: expected integer token ids, got {type(values).__name__}")
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"{what}: expected integers, got {type(values).__name__}") from err
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"{what}: expected integers, got dtype {tensor.dtype}")
    return tensor.long()


class DynamicsVocabulary:
    """Code and control tokens added to a Hugging Face tokenizer, and the maps between them.

    Build one with :meth:`add_to` (adds missing tokens; idempotent) or :meth:`from_pretrained`.
    After adding tokens, resize the language model's embeddings to ``len(tokenizer)``
    (``model.resize_token_embeddings(len(vocab.tokenizer))``).

    Args:
        tokenizer: A tokenizer that already holds every token of ``spec``.
        spec: Sizes and names (default: METIS).

    Raises:
        ValueError: If the tokenizer lacks some of the tokens or is not a tokenizer (or has
            no eos when the spec ends the step with it).

    Example:
        >>> vocab = DynamicsVocabulary.add_to(tokenizer)
        >>> seq = vocab.build_sequence("put the red cube on the left", visual, motion,
        ...                            subtask="grasp the red cube")
        >>> parsed = vocab.parse(seq.input_ids)          # same codes and subtask text
        >>> out = model.generate(prompt, **vocab.generation_kwargs(), max_new_tokens=128)
    """

    def __init__(self, tokenizer: Any, spec: VocabularySpec | None = None) -> None:
        self.spec = spec or VocabularySpec()
        _check_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        names = self.spec.token_strings()
        missing = [name for name in names if name not in vocab]
        if missing:
            raise ValueError(
                f"the tokenizer lacks {len(missing)} dynamics tokens (e.g. {missing[:3]}); build "
                "the vocabulary with DynamicsVocabulary.add_to(tokenizer)"
            )
        s = self.spec
        if s.end_dynamics is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            if eos is None:
                raise ValueError(
                    "the spec ends the step with the tokenizer's eos (end_dynamics=None), but "
                    f"{type(tokenizer).__name__} has no eos token"
                )
            self.end_token: str = str(tokenizer.eos_token)
            end_id = int(eos)
        else:
            self.end_token = s.end_dynamics
            end_id = int(vocab[s.end_dynamics])
        self.visual_ids = torch.tensor([vocab[t] for t in s._group("visual")], dtype=torch.long)
        self.motion_ids = torch.tensor([vocab[t] for t in s._group("motion")], dtype=torch.long)
        self.begin_reasoning_id = int(vocab[s.begin_reasoning])
        self.begin_dynamics_id = int(vocab[s.begin_dynamics])
        self.end_dynamics_id = end_id
        #: Every id of the step grammar in a fixed order, whatever order they were added in:
        #: visual codes, motion codes, begin_reasoning, begin_dynamics, the end marker (the
        #: tokenizer's eos when ``end_dynamics`` is ``None``).
        ids = torch.cat(
            [
                self.visual_ids,
                self.motion_ids,
                torch.tensor([self.begin_reasoning_id, self.begin_dynamics_id, end_id]),
            ]
        )
        if len(set(ids.tolist())) != len(ids):
            raise ValueError(
                "the tokenizer maps two dynamics tokens to the same id (or the eos end marker is "
                "one of the added tokens)"
            )
        self.added_ids = ids
        # id -> code lookup tables (-1: not a code of that kind)
        size = int(ids.max()) + 1
        self._visual_code_of = torch.full((size,), -1, dtype=torch.long)
        self._visual_code_of[self.visual_ids] = torch.arange(s.visual_codes)
        self._motion_code_of = torch.full((size,), -1, dtype=torch.long)
        self._motion_code_of[self.motion_ids] = torch.arange(s.motion_codes)
        for name in names:
            token_id = int(vocab[name])
            pieces = tokenizer.encode(name, add_special_tokens=False)
            if list(pieces) != [token_id]:
                raise ValueError(
                    f"the tokenizer splits {name!r} into {list(pieces)} instead of the single id "
                    f"{token_id}; add it as a special token (DynamicsVocabulary.add_to does)"
                )

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def add_to(cls, tokenizer: Any, spec: VocabularySpec | None = None) -> DynamicsVocabulary:
        """Add the missing code and control tokens to ``tokenizer`` (in place) as special tokens.

        Tokens already present keep their ids, so calling it again changes nothing; missing
        ones are added in the spec's :attr:`~VocabularySpec.token_order`.

        Args:
            tokenizer: A Hugging Face tokenizer.
            spec: Sizes and names (default: METIS, 16 + 512 + 3 tokens).

        Returns:
            The vocabulary over the extended tokenizer.
        """
        spec = spec or VocabularySpec()
        _check_tokenizer(tokenizer)
        vocab = tokenizer.get_vocab()
        missing = [name for name in spec.token_strings() if name not in vocab]
        if missing:
            tokenizer.add_tokens(missing, special_tokens=True)
        return cls(tokenizer, spec)

    # -- sizes -------------------------------------------------------------------------------

    @property
    def dynamics_tokens(self) -> int:
        """Code tokens per step (44 by default)."""
        return self.spec.dynamics_tokens

    @property
    def control_tokens(self) -> tuple[str, str, str]:
        """``(begin_reasoning, begin_dynamics, end marker)`` as token texts (the end marker is
        the tokenizer's eos text when the spec's ``end_dynamics`` is ``None``)."""
        return (self.spec.begin_reasoning, self.spec.begin_dynamics, self.end_token)

    def __len__(self) -> int:
        """Size of the extended tokenizer (what the model's embedding must hold)."""
        return len(self.tokenizer)

    # -- codes <-> ids -----------------------------------------------------------------------

    def _codes_to_ids(self, codes: Any, table: torch.Tensor, count: int, what: str) -> torch.Tensor:
        codes = _as_int_tensor(codes, what)
        size = table.shape[0]
        if codes.dim() == 0 or codes.shape[-1] != count:
            raise ValueError(f"{what}: expected shape (..., {count}), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
            raise ValueError(
                f"{what}: codes must be in [0, {size}), got values in [{int(codes.min())}, "
                f"{int(codes.max())}]"
            )
        return table[codes]

    def _ids_to_codes(self, ids: Any, lookup: torch.Tensor, count: int, what: str) -> torch.Tensor:
        ids = _as_int_tensor(ids, what)
        if ids.dim() == 0 or ids.shape[-1] != count:
            raise ValueError(f"{what}: expected shape (..., {count}), got {tuple(ids.shape)}")
        inside = (ids >= 0) & (ids < lookup.shape[0])
        codes = torch.where(inside, lookup[ids.clamp(0, lookup.shape[0] - 1)], -1)
        if bool((codes < 0).any()):
            bad = ids[codes < 0].unique()[:5].tolist()
            raise ValueError(f"{what}: ids {bad} are not {what.split()[0]} code tokens")
        return codes

    def visual_codes_to_ids(self, codes: Any) -> torch.Tensor:
        """``(..., Q_v)`` visual codes in ``[0, visual_codes)`` → token ids (int64)."""
        s = self.spec
        return self._codes_to_ids(codes, self.visual_ids, s.visual_tokens, "visual codes")

    def motion_codes_to_ids(self, codes: Any) -> torch.Tensor:
        """``(..., Q_m)`` motion codes in ``[0, motion_codes)`` → token ids (int64)."""
        s = self.spec
        return self._codes_to_ids(codes, self.motion_ids, s.motion_tokens, "motion codes")

    def ids_to_visual_codes(self, ids: Any) -> torch.Tensor:
        """``(..., Q_v)`` token ids → visual codes.

        Raises:
            ValueError: If an id is not a visual code token.
        """
        s = self.spec
        return self._ids_to_codes(ids, self._visual_code_of, s.visual_tokens, "visual ids")

    def ids_to_motion_codes(self, ids: Any) -> torch.Tensor:
        """``(..., Q_m)`` token ids → motion codes.

        Raises:
            ValueError: If an id is not a motion code token.
        """
        s = self.spec
        return self._ids_to_codes(ids, self._motion_code_of, s.motion_tokens, "motion ids")

    def codes_to_ids(self, visual_codes: Any, motion_codes: Any) -> torch.Tensor:
        """``(..., Q_v)`` and ``(..., Q_m)`` codes → ``(..., Q_v + Q_m)`` ids, visual first."""
        visual = self.visual_codes_to_ids(visual_codes)
        motion = self.motion_codes_to_ids(motion_codes)
        if visual.shape[:-1] != motion.shape[:-1]:
            raise ValueError(
                f"visual and motion codes must share leading dimensions, got "
                f"{tuple(visual.shape)} and {tuple(motion.shape)}"
            )
        return torch.cat([visual, motion], -1)

    def ids_to_codes(self, ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(..., Q_v + Q_m)`` ids → ``(visual_codes, motion_codes)``."""
        ids = _as_int_tensor(ids, "dynamics ids")
        if ids.dim() == 0 or ids.shape[-1] != self.dynamics_tokens:
            raise ValueError(
                f"dynamics ids: expected shape (..., {self.dynamics_tokens}), got "
                f"{tuple(ids.shape)}"
            )
        q = self.spec.visual_tokens
        return self.ids_to_visual_codes(ids[..., :q]), self.ids_to_motion_codes(ids[..., q:])

    # -- sequences ---------------------------------------------------------------------------

    def _text_ids(self, text: Any, what: str, *, special: bool) -> list[int]:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what}: expected non-empty text, got {text!r}")
        for token in self.control_tokens:
            if token in text:
                raise ValueError(f"{what}: must not contain the control token {token!r}: {text!r}")
        ids = list(self.tokenizer.encode(text, add_special_tokens=special))
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if special and eos is not None and len(ids) > 1 and ids[-1] == eos:
            ids = ids[:-1]  # a tokenizer that appends eos: the step continues after the prompt
        added = set(self.added_ids.tolist())
        if any(i in added for i in ids):
            raise ValueError(f"{what}: must not contain dynamics tokens: {text!r}")
        return ids

    def prompt_ids(
        self, instruction: str, *, mode: Literal["decide", "reason", "act"] = "decide"
    ) -> torch.Tensor:
        """The ids that start generation for one step.

        Args:
            instruction: The task instruction.
            mode: ``"decide"``: the model chooses ``[BOA]`` (reason) or ``[BOD]`` (act);
                ``"reason"``: the prompt ends with ``[BOA]`` (the subtask changed);
                ``"act"``: the prompt ends with ``[BOD]`` (generation starts at the codes).

        Returns:
            ``(L,)`` int64.
        """
        ids = self._text_ids(instruction, "instruction", special=True)
        if mode == "reason":
            ids.append(self.begin_reasoning_id)
        elif mode == "act":
            ids.append(self.begin_dynamics_id)
        elif mode != "decide":
            raise ValueError(f"mode must be 'decide', 'reason' or 'act', got {mode!r}")
        return torch.tensor(ids, dtype=torch.long)

    def build_sequence(
        self,
        instruction: str,
        visual_codes: Any,
        motion_codes: Any,
        *,
        subtask: str | None = None,
    ) -> DynamicsSequence:
        """The training sequence of one step and its labels.

        ``bos <instruction> [BOA] <subtask> [BOD] <visual codes> <motion codes> [EOD]`` (without
        the reasoning segment when ``subtask`` is ``None``). Everything from the first control
        token on is trained, so the model also learns whether to reason.

        Args:
            instruction: The task instruction.
            visual_codes: ``(Q_v,)`` codes of the visual-dynamics tokenizer.
            motion_codes: ``(Q_m,)`` codes of the motion tokenizer.
            subtask: The subtask text when the subtask changes at this step, else ``None``.

        Raises:
            ValueError: For codes of the wrong shape or range, empty texts, or texts holding
                control or code tokens.
        """
        visual = _as_int_tensor(visual_codes, "visual codes")
        motion = _as_int_tensor(motion_codes, "motion codes")
        if visual.dim() != 1 or motion.dim() != 1:
            raise ValueError(
                f"build_sequence takes one step: visual codes ({self.spec.visual_tokens},) and "
                f"motion codes ({self.spec.motion_tokens},), got {tuple(visual.shape)} and "
                f"{tuple(motion.shape)}"
            )
        dynamics = self.codes_to_ids(visual, motion).tolist()
        prompt = self._text_ids(instruction, "instruction", special=True)
        target: list[int] = []
        if subtask is not None:
            target += [self.begin_reasoning_id, *self._text_ids(subtask, "subtask", special=False)]
        target.append(self.begin_dynamics_id)
        dynamics_start = len(prompt) + len(target)
        target += [*dynamics, self.end_dynamics_id]
        input_ids = torch.tensor(prompt + target, dtype=torch.long)
        labels = input_ids.clone()
        labels[: len(prompt)] = IGNORE_INDEX
        return DynamicsSequence(
            input_ids=input_ids,
            labels=labels,
            prompt_length=len(prompt),
            dynamics_start=dynamics_start,
            num_dynamics=len(dynamics),
        )

    def collate(
        self, sequences: Sequence[DynamicsSequence], *, pad_to_multiple_of: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Right-pad sequences into a batch.

        Returns:
            ``input_ids (B, L)``, ``attention_mask (B, L)``, ``labels (B, L)`` (padding is
            :data:`IGNORE_INDEX`) and ``dynamics_positions (B, Q_v + Q_m)``.
        """
        if not sequences:
            raise ValueError("collate: no sequences")
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(self.tokenizer, "eos_token_id", None)
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        length = max(int(s.input_ids.shape[0]) for s in sequences)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        batch = len(sequences)
        input_ids = torch.full((batch, length), int(pad), dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            n = int(seq.input_ids.shape[0])
            input_ids[row, :n] = seq.input_ids
            labels[row, :n] = seq.labels
            attention[row, :n] = 1
        positions = torch.stack([s.dynamics_positions for s in sequences])
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "labels": labels,
            "dynamics_positions": positions,
        }

    def parse(self, ids: Any, *, require_end: bool = True) -> ParsedDynamics:
        """Read the codes (and the subtask text) of one step from a token sequence.

        Uses the last ``[BOD]``; the subtask is the text after the ``[BOA]`` before it.

        Args:
            ids: ``(L,)`` ids: a built sequence, or a prompt followed by generated tokens.
            require_end: Also require the end marker right after the codes.

        Raises:
            ValueError: If there is no ``[BOD]``, fewer code tokens than a step has, tokens of
                the wrong kind, or (``require_end``) no end marker after them.
        """
        ids = _as_int_tensor(ids, "ids")
        if ids.dim() != 1:
            raise ValueError(f"ids: expected one sequence (L,), got shape {tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValueError(
                f"ids: the sequence is empty (no {self.spec.begin_dynamics} token); not a "
                "dynamics step"
            )
        values = ids.tolist()
        size = len(self.tokenizer)
        bad = [(i, v) for i, v in enumerate(values) if not 0 <= v < size]
        if bad:
            raise ValueError(
                f"ids: token ids must be in [0, {size}) (the tokenizer's vocabulary), got "
                f"{bad[0][1]} at position {bad[0][0]}"
            )
        bod = [i for i, v in enumerate(values) if v == self.begin_dynamics_id]
        if not bod:
            raise ValueError(f"ids: no {self.spec.begin_dynamics} token; not a dynamics step")
        start = bod[-1] + 1
        codes = ids[start : start + self.dynamics_tokens]
        if codes.shape[0] != self.dynamics_tokens:
            raise ValueError(
                f"ids: {codes.shape[0]} tokens follow {self.spec.begin_dynamics}, expected "
                f"{self.dynamics_tokens} code tokens"
            )
        visual, motion = self.ids_to_codes(codes)
        end = start + self.dynamics_tokens
        complete = end < len(values) and values[end] == self.end_dynamics_id
        if require_end and not complete:
            raise ValueError(
                f"ids: the {self.dynamics_tokens} codes are not followed by {self.end_token}"
            )
        subtask = None
        boa = [i for i, v in enumerate(values[: bod[-1]]) if v == self.begin_reasoning_id]
        if boa:
            text = values[boa[-1] + 1 : bod[-1]]
            added = set(self.added_ids.tolist())
            inside = [i for i, v in enumerate(text) if v in added]
            if inside:
                position = boa[-1] + 1 + inside[0]
                raise ValueError(
                    f"ids: the subtask text between {self.spec.begin_reasoning} and "
                    f"{self.spec.begin_dynamics} holds a dynamics token (id {values[position]} at "
                    f"position {position}); code and control tokens never belong to the text"
                )
            subtask = self.tokenizer.decode(text, skip_special_tokens=False).strip()
        return ParsedDynamics(
            visual_codes=visual, motion_codes=motion, subtask=subtask, complete=complete
        )

    # -- constrained generation --------------------------------------------------------------

    def allowed_ids(self, step: int) -> torch.Tensor:
        """Ids allowed at generation step ``step`` after ``[BOD]`` (0-based).

        Steps ``0 .. Q_v-1``: the visual code ids; ``Q_v .. Q_v+Q_m-1``: the motion code ids;
        ``Q_v+Q_m``: the end marker.

        Raises:
            ValueError: For a step outside ``[0, Q_v + Q_m]``.
        """
        s = self.spec
        if not 0 <= step <= s.dynamics_tokens:
            raise ValueError(f"step must be in [0, {s.dynamics_tokens}], got {step}")
        if step < s.visual_tokens:
            return self.visual_ids.clone()
        if step < s.dynamics_tokens:
            return self.motion_ids.clone()
        return torch.tensor([self.end_dynamics_id])

    def logits_processor(self, *, max_subtask_tokens: int = 64) -> DynamicsLogitsProcessor:
        """A ``transformers.LogitsProcessor`` that enforces the step grammar (see the class).

        Args:
            max_subtask_tokens: After this many reasoning tokens ``[BOD]`` is forced.
        """
        transformers = require("transformers", install=_INSTALL, feature="constrained generation")
        cls = _processor_class(transformers.LogitsProcessor)
        return cls(self, max_subtask_tokens=max_subtask_tokens)

    def generation_kwargs(self, *, max_subtask_tokens: int = 64) -> dict[str, Any]:
        """Keyword arguments for ``model.generate``: the processor, and stop at the end marker."""
        transformers = require("transformers", install=_INSTALL, feature="constrained generation")
        processor = self.logits_processor(max_subtask_tokens=max_subtask_tokens)
        stop = [self.end_dynamics_id]
        eos = getattr(self.tokenizer, "eos_token_id", None)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if eos is not None and int(eos) not in stop:
            stop.append(int(eos))
        return {
            "logits_processor": transformers.LogitsProcessorList([processor]),
            "eos_token_id": stop,
            "pad_token_id": int(pad if pad is not None else (eos if eos is not None else stop[0])),
        }

    # -- save / load -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """What ``dynamics_vocabulary.json`` holds: the spec and every token id."""
        return {
            "type": "dynamics_vocabulary",
            "format_version": _FORMAT_VERSION,
            **asdict(self.spec),
            "visual_ids": self.visual_ids.tolist(),
            "motion_ids": self.motion_ids.tolist(),
            "control_ids": {
                self.spec.begin_reasoning: self.begin_reasoning_id,
                self.spec.begin_dynamics: self.begin_dynamics_id,
                self.end_token: self.end_dynamics_id,
            },
            "tokenizer_size": len(self.tokenizer),
        }

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the extended tokenizer and ``dynamics_vocabulary.json`` to ``directory`` atomically.

        Returns:
            The directory.
        """
        target = Path(directory)
        if not hasattr(self.tokenizer, "save_pretrained"):
            raise ValueError(
                f"{type(self.tokenizer).__name__} cannot be saved (no save_pretrained method)"
            )
        with atomic_directory(target, overwrite=True) as staging:
            self.tokenizer.save_pretrained(str(staging))
            write_json(staging / VOCABULARY_NAME, self.to_dict())
        return target

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], *, tokenizer: Any = None
    ) -> DynamicsVocabulary:
        """Load a vocabulary saved by :meth:`save_pretrained`.

        Args:
            directory: The saved directory.
            tokenizer: Use this tokenizer instead of the one saved in ``directory``; its ids of
                the dynamics tokens must equal the saved ones.

        Raises:
            FileNotFoundError: If ``directory/dynamics_vocabulary.json`` is missing.
            ValueError: If the file is malformed or the tokenizer maps the tokens to other ids.
        """
        path = Path(directory)
        file = path / VOCABULARY_NAME
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} is missing; expected a directory written by "
                "DynamicsVocabulary.save_pretrained"
            )
        data = read_json(file)
        if not isinstance(data, dict) or data.get("type") != "dynamics_vocabulary":
            raise ValueError(f"{file}: not a dynamics vocabulary (expected type 'dynamics_vocabulary')")  # fmt: skip
        if data.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{file}: format_version {data.get('format_version')!r}, this library reads "
                f"{_FORMAT_VERSION}"
            )
        names = {f.name for f in fields(VocabularySpec)}
        try:
            spec = VocabularySpec(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{file}: invalid vocabulary spec: {err}") from err
        if tokenizer is None:
            transformers = require("transformers", install=_INSTALL, feature="loading tokenizers")
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        vocab = cls(tokenizer, spec)
        saved = [*data.get("visual_ids", []), *data.get("motion_ids", [])]
        saved += [data.get("control_ids", {}).get(t) for t in vocab.control_tokens]
        if saved != vocab.added_ids.tolist():
            raise ValueError(
                f"{file}: the tokenizer maps the dynamics tokens to other ids than were saved; "
                "a model trained with the saved ids would read wrong codes"
            )
        return vocab


def _check_tokenizer(tokenizer: Any) -> None:
    needed = ("add_tokens", "get_vocab", "encode", "decode", "__len__")
    lacking = [name for name in needed if not hasattr(tokenizer, name)]
    if lacking:
        raise ValueError(
            f"expected a Hugging Face tokenizer (with {', '.join(needed)}), got "
            f"{type(tokenizer).__name__} lacking {lacking}"
        )


class DynamicsLogitsProcessor:
    """Constrains generation to the step grammar of a :class:`DynamicsVocabulary`.

    Per sequence, the last control token in ``input_ids`` decides what may come next:

    * none yet: ``[BOA]`` (reason) or ``[BOD]`` (act);
    * ``[BOA]``: subtask text (no special, code or control tokens except ``[BOD]``); at least one
      text token, and ``[BOD]`` is forced after ``max_subtask_tokens``;
    * ``[BOD]``: ``Q_v`` visual codes, then ``Q_m`` motion codes, then ``[EOD]``;
    * ``[EOD]``: the tokenizer's eos (or ``[EOD]`` again), so finished rows stay finished
      (when the end marker is the eos itself, as in :meth:`VocabularySpec.metis_release`: the
      eos again).

    Every other logit is set to ``-inf``; the model's logits may be wider than the tokenizer
    (padded embeddings), the extra ids are never allowed. Built by
    :meth:`DynamicsVocabulary.logits_processor`, which makes it a subclass of
    ``transformers.LogitsProcessor`` too.

    Args:
        vocabulary: The vocabulary.
        max_subtask_tokens: Longest reasoning segment.
    """

    def __init__(self, vocabulary: DynamicsVocabulary, *, max_subtask_tokens: int = 64) -> None:
        if max_subtask_tokens < 1:
            raise ValueError(f"max_subtask_tokens must be >= 1, got {max_subtask_tokens}")
        self.vocabulary = vocabulary
        self.max_subtask_tokens = int(max_subtask_tokens)
        v = vocabulary
        self.control_ids = torch.tensor(
            [v.begin_reasoning_id, v.begin_dynamics_id, v.end_dynamics_id]
        )
        self._tables: dict[tuple[int, str], torch.Tensor] = {}

    # state rows of the mask table
    _DECIDE, _REASON_FIRST, _REASON, _FORCE_BOD, _AFTER_END, _STEP0 = range(6)

    def _table(self, width: int, device: torch.device) -> torch.Tensor:
        key = (width, str(device))
        if key in self._tables:
            return self._tables[key]
        v = self.vocabulary
        q = v.spec.dynamics_tokens
        size = len(v.tokenizer)
        if width < size:
            raise ValueError(
                f"the model's logits have {width} entries but the tokenizer has {size} tokens; "
                "resize the embeddings: model.resize_token_embeddings(len(tokenizer))"
            )
        table = torch.zeros(self._STEP0 + q + 1, width, dtype=torch.bool)
        table[self._DECIDE, [v.begin_reasoning_id, v.begin_dynamics_id]] = True
        text = torch.zeros(width, dtype=torch.bool)
        text[:size] = True
        text[v.added_ids] = False
        special = [int(i) for i in getattr(v.tokenizer, "all_special_ids", []) if 0 <= i < width]
        text[special] = False
        table[self._REASON_FIRST] = text
        table[self._REASON] = text
        table[self._REASON, v.begin_dynamics_id] = True
        table[self._FORCE_BOD, v.begin_dynamics_id] = True
        eos = getattr(v.tokenizer, "eos_token_id", None)
        table[self._AFTER_END, v.end_dynamics_id if eos is None else int(eos)] = True
        for step in range(q + 1):
            table[self._STEP0 + step, v.allowed_ids(step)] = True
        self._tables[key] = table.to(device)
        return self._tables[key]

    def states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` ids → ``(B,)`` row of the mask table for the next token."""
        length = input_ids.shape[1]
        control = self.control_ids.to(input_ids.device)
        is_control = torch.isin(input_ids, control)
        positions = torch.arange(length, device=input_ids.device).expand_as(input_ids)
        last = torch.where(is_control, positions, -1).max(1).values
        token = input_ids.gather(1, last.clamp_min(0)[:, None])[:, 0]
        since = length - 1 - last  # tokens after the last control token
        v = self.vocabulary
        q = v.spec.dynamics_tokens
        state = torch.full_like(last, self._DECIDE)
        reasoning = (last >= 0) & (token == v.begin_reasoning_id)
        reason_state = torch.where(
            since == 0,
            self._REASON_FIRST,
            torch.where(since >= self.max_subtask_tokens, self._FORCE_BOD, self._REASON),
        )
        state = torch.where(reasoning, reason_state, state)
        acting = (last >= 0) & (token == v.begin_dynamics_id)
        state = torch.where(acting, self._STEP0 + since.clamp_max(q), state)
        ended = (last >= 0) & (token == v.end_dynamics_id)
        return torch.where(ended, torch.full_like(state, self._AFTER_END), state)

    def state_of(self, last_control: int | None, since: int) -> int:
        """The mask-table row of one sequence from its last control token and the number of
        tokens after it (``last_control=None``: no control token yet).

        The per-sequence, pure-Python equivalent of :meth:`states`, for a decoding loop that
        tracks both numbers as it goes instead of rescanning the ids every step.
        """
        v = self.vocabulary
        if last_control == v.begin_reasoning_id:
            if since == 0:
                return self._REASON_FIRST
            return self._FORCE_BOD if since >= self.max_subtask_tokens else self._REASON
        if last_control == v.begin_dynamics_id:
            return self._STEP0 + min(since, v.spec.dynamics_tokens)
        if last_control == v.end_dynamics_id:
            return self._AFTER_END
        return self._DECIDE

    def mask(self, scores: torch.Tensor, states: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Mask ``scores (B, V)`` given each row's mask-table row (:meth:`state_of`)."""
        table = self._table(scores.shape[1], scores.device)
        return scores.masked_fill(
            ~table[torch.as_tensor(states, device=scores.device)], float("-inf")
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Mask ``scores (B, V)`` given ``input_ids (B, L)``."""
        if input_ids.dim() != 2 or scores.dim() != 2 or input_ids.shape[0] != scores.shape[0]:
            raise ValueError(
                f"expected input_ids (B, L) and scores (B, V), got {tuple(input_ids.shape)} and "
                f"{tuple(scores.shape)}"
            )
        allowed = self._table(scores.shape[1], scores.device)[self.states(input_ids)]
        return scores.masked_fill(~allowed, float("-inf"))


@functools.cache
def _processor_class(base: type) -> type:
    """``DynamicsLogitsProcessor`` that is also a ``transformers.LogitsProcessor``."""
    return type("DynamicsLogitsProcessor", (DynamicsLogitsProcessor, base), {})
