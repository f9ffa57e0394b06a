"""Configuration of the METIS policy: which parts (by registry name) and how they fit."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from metis_core.config import ComponentConfig
from metis_core.normalization import NormMode

__all__ = ["VOCABULARY_FIELDS", "MetisConfig"]

_PROMPT = "What action should the robot take to {instruction}?"
_SUBTASK = " Current subtask: {subtask}."
# The authors' prompt (AureleoPKU/Metis `PurePromptBuilder`, VLA_FACTS §1(a)): the human turn
# "What action should the robot take to {lang}?" wrapped as "In: {msg}\nOut: ", with their
# pre-training's reasoning clause inside the human turn.
# Note: the template keeps the trailing space of "Out: ". A LLaMA (sentencepiece) tokenizer
# encodes it as the lone "▁" (id 29871), which is what their training sequence "Out: <BOA>"
# holds before the control token and exactly the token their `predict_latent_action` appends to
# "Out:" when it is missing; the prompt is therefore identical at training and inference, and
# no tokenizer-specific id is appended here (a byte-level tokenizer encodes the space as itself).
_RELEASE_PROMPT = "In: What action should the robot take to {instruction}?{subtask}\nOut: "
_RELEASE_SUBTASK = " Here is my previous reasoning: {subtask}."
#: Fields of ``metis_tokenizers.vocabulary.VocabularySpec`` a config may set (the sizes come
#: from the dynamics tokenizers).
VOCABULARY_FIELDS = (
    "visual_format",
    "motion_format",
    "begin_reasoning",
    "begin_dynamics",
    "end_dynamics",
    "token_order",
)


@dataclass(frozen=True, kw_only=True)
class MetisConfig(ComponentConfig):
    """A METIS policy composed from registered parts (DESIGN §8).

    Build the named ones with :meth:`tiny` (CPU), :meth:`paper` (DINOv2-L + SigLIP-SO400M +
    LLaMA-2 7B, chunk 30) and :meth:`metis_release` (the authors' released checkpoints).

    Args:
        backbone: Registry name of the backbone (``"prismatic"``, ``"hf_vlm"``).
        backbone_config: Fields of the backbone's config.
        action_head: Registry name of the action head (``"map_decoder"``).
        action_head_config: Fields of the head's config (``input_dim`` and ``chunk_len`` are
            filled in from the backbone and ``chunk_len``).
        motion_tokenizer: Registry name of the motion tokenizer (``"motion_rvq"``, 40 codes).
        motion_tokenizer_config: Its config fields (used when no trained tokenizer is given).
        visual_tokenizer: Registry name of the visual-dynamics tokenizer (``"visual_dynamics_vq"``).
        visual_tokenizer_config: Its config fields.
        embodiment: Registry name of a hand whose IK turns predicted chunks into joint
            commands, or ``None``.
        text_tokenizer: Local directory of the language model's tokenizer, or ``None`` for the
            built-in byte-level tokenizer (tiny configs).
        chunk_len: ``C``, actions per chunk (30 = 1 s at 30 Hz).
        action_loss_weight: ``λ`` of ``loss = next-token loss + λ · L1(actions)``.
        norm_mode: Normalisation of proprio and actions (applied automatically, stored).
        prompt_template: The prompt, with ``{instruction}`` and optionally ``{subtask}`` (where
            the filled ``subtask_template`` goes; without it, it is appended at the end).
        subtask_template: Added to the prompt while a subtask is remembered, with ``{subtask}``.
        max_subtask_tokens: Longest reasoning segment (then ``[BOD]`` is forced).
        pad_to_multiple_of: The LM's embedding rows are padded to a multiple of this.
        image_states: Which positions the head's visual pooling reads: ``"image"`` (the image
            tokens) or ``"metis_release"`` (positions ``[0, P)``: BOS + P-1 patches, as the
            authors' decoder was trained).
        lowercase_instruction: Lower-case the instruction in the prompt (as the authors do).
        dynamics_tokens: ``False`` builds the paper's Table 5 ablation without motion-aware
            dynamics: the sequence holds placeholder tokens where the 44 codes would be, they are
            no next-token targets (the action L1 is the only action signal), and the action head
            reads their hidden states; inference feeds the placeholders instead of generating.
        actions_from: Where predicted actions come from. ``"head"``: the action head (METIS).
            ``"motion_tokens"``: the generated motion codes, decoded by the motion tokenizer from
            the current state and resampled from its 1 s window to ``chunk_len`` steps at
            ``control_hz``; with a per-value ``binning`` motion tokenizer this is the binned-action
            VLA baseline (RT-2 / OpenVLA style). The head is then not used for predictions;
            train it with ``action_loss_weight = 0``.
        control_hz: Rate of the predicted chunk (30 Hz: the contract's rate), for
            ``actions_from="motion_tokens"``.
        vocabulary: Token names, order and end marker of the dynamics vocabulary (fields of
            ``VocabularySpec`` named in :data:`VOCABULARY_FIELDS`; empty: METIS's own
            ``<vis_i>``, ``<mot_j>``, ``[BOA]``, ``[BOD]``, ``[EOD]``).
    """

    backbone: str = "prismatic"
    backbone_config: dict[str, Any] = field(default_factory=dict)
    action_head: str = "map_decoder"
    action_head_config: dict[str, Any] = field(default_factory=dict)
    motion_tokenizer: str = "motion_rvq"
    motion_tokenizer_config: dict[str, Any] = field(default_factory=dict)
    visual_tokenizer: str = "visual_dynamics_vq"
    visual_tokenizer_config: dict[str, Any] = field(default_factory=dict)
    embodiment: str | None = None
    text_tokenizer: str | None = None
    chunk_len: int = 30
    action_loss_weight: float = 1.0
    norm_mode: str = NormMode.Q01_Q99.value
    prompt_template: str = _PROMPT
    subtask_template: str = _SUBTASK
    max_subtask_tokens: int = 48
    pad_to_multiple_of: int = 64
    image_states: Literal["image", "metis_release"] = "image"
    lowercase_instruction: bool = True
    vocabulary: dict[str, Any] = field(default_factory=dict)
    dynamics_tokens: bool = True
    actions_from: Literal["head", "motion_tokens"] = "head"
    control_hz: float = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        NormMode.parse(self.norm_mode)
        if not 1 <= self.chunk_len <= 1024:
            raise ValueError(f"chunk_len must be in [1, 1024], got {self.chunk_len}")
        if self.actions_from not in ("head", "motion_tokens"):
            raise ValueError(f"actions_from must be 'head' or 'motion_tokens', got {self.actions_from!r}")  # fmt: skip
        if self.actions_from == "motion_tokens" and not self.dynamics_tokens:
            raise ValueError("actions_from='motion_tokens' decodes the generated motion codes; it needs dynamics_tokens=True")  # fmt: skip
        if not self.control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {self.control_hz}")
        if not self.action_loss_weight >= 0:
            raise ValueError(f"action_loss_weight must be >= 0, got {self.action_loss_weight}")
        if "{instruction}" not in self.prompt_template:
            raise ValueError(f"prompt_template must contain '{{instruction}}', got {self.prompt_template!r}")  # fmt: skip
        try:
            self.prompt_template.format(instruction="", subtask="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt_template may hold only {{instruction}} and {{subtask}}, got {self.prompt_template!r}") from err  # fmt: skip
        unknown = sorted(set(self.vocabulary) - set(VOCABULARY_FIELDS))
        if unknown:
            raise ValueError(f"vocabulary: unknown fields {unknown}; expected some of {list(VOCABULARY_FIELDS)}")  # fmt: skip
        if "{subtask}" not in self.subtask_template:
            raise ValueError(f"subtask_template must contain '{{subtask}}', got {self.subtask_template!r}")  # fmt: skip
        if not 1 <= self.max_subtask_tokens <= 1024:
            raise ValueError(f"max_subtask_tokens must be in [1, 1024], got {self.max_subtask_tokens}")  # fmt: skip
        if not 1 <= self.pad_to_multiple_of <= 4096:
            raise ValueError(f"pad_to_multiple_of must be in [1, 4096], got {self.pad_to_multiple_of}")  # fmt: skip
        head_chunk = self.action_head_config.get("chunk_len")
        if head_chunk is not None and int(head_chunk) != self.chunk_len:
            raise ValueError(
                f"action_head_config.chunk_len = {head_chunk} differs from chunk_len = {self.chunk_len}"
            )

    @classmethod
    def tiny(cls, **overrides: Any) -> MetisConfig:
        """A few-layer Prismatic + small tokenizers: trains on a laptop CPU."""
        from metis_core.vla.backbones.prismatic.configuration_prismatic import PrismaticConfig

        motion = {
            "hidden_dim": 64,
            "latent_dim": 64,
            "codebook_size": 512,
            "attention_layers": 1,
            "num_conv_blocks": 1,
        }
        values: dict[str, Any] = {
            "backbone": "prismatic",
            "backbone_config": PrismaticConfig.from_preset("tiny").to_dict(),
            "action_head_config": {"hidden_dim": 64, "num_heads": 4, "mlp_dim": 128},
            "motion_tokenizer_config": motion,
            "visual_tokenizer_config": {
                "feature_dim": 32,
                "num_patches": 16,
                "hidden_dim": 32,
                "num_heads": 2,
                "encoder_blocks": 1,
                "decoder_layers": 1,
                "codebook_dim": 32,
                "motion": motion,
            },
            # byte-level text tokens: room for the synthetic source's longest subtask (41 bytes)
            "max_subtask_tokens": 64,
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def paper(cls, **overrides: Any) -> MetisConfig:
        """The paper's policy: Prismatic DINOv2-L/14-reg4 + SigLIP-SO400M/14 @224 + LLaMA-2 7B,
        the authors' MAP decoder at chunk 30, motion_rvq (40 codes of 512) + visual_dynamics_vq
        (4 codes of 16). Give ``text_tokenizer`` (a local LLaMA-2 tokenizer directory) to build it
        with the real vocabulary."""
        from metis_core.vla.backbones.prismatic.configuration_prismatic import PrismaticConfig

        values: dict[str, Any] = {
            "backbone": "prismatic",
            "backbone_config": PrismaticConfig.from_preset("paper").to_dict(),
            "action_head_config": {},
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def metis_release(cls, *, tiny: bool = False, **overrides: Any) -> MetisConfig:
        """The authors' released checkpoints (AureleoPKU/Metis; VLA_FACTS §1).

        Their vocabulary (``<BOA>`` starts the dynamics, ``<BOR>`` the reasoning, ``<DYN_i>``,
        ``<DEX_j>``, the step ends with the eos ``</s>``), their prompt (``In: What action
        should the robot take to {instruction}?``, a newline, then ``Out:`` and a space) with
        the lower-cased instruction, chunk 32, their visual slice (the decoder's visual pooling reads positions
        ``[0, P)``: ``<bos>`` + the first P-1 patches) and min/max normalisation (what their
        server applies). Load their directories with
        :func:`metis_core.vla.release.load_metis_release`.

        Args:
            tiny: Take the sizes (backbone, action head, dynamics tokenizers) of :meth:`tiny`
                instead of :meth:`paper`, for tests and CPU runs of the release layout.
            **overrides: Other fields.
        """
        from metis_core._optional import require

        vocabulary = require(
            "metis_tokenizers.vocabulary", install="metis-tokenizers", feature="the METIS policy"
        )
        spec = vocabulary.VocabularySpec.metis_release()
        values: dict[str, Any] = {
            "chunk_len": 32,
            "prompt_template": _RELEASE_PROMPT,
            "subtask_template": _RELEASE_SUBTASK,
            "image_states": "metis_release",
            "lowercase_instruction": True,
            "norm_mode": NormMode.MIN_MAX.value,
            "pad_to_multiple_of": 64,
            # JSON-ready (token_order as a list), so that a saved config compares equal.
            "vocabulary": json.loads(json.dumps({n: getattr(spec, n) for n in VOCABULARY_FIELDS})),
        }
        values.update(overrides)
        return cls.tiny(**values) if tiny else cls.paper(**values)

    def with_backbone_config(self, backbone_config: dict[str, Any]) -> MetisConfig:
        """A copy holding another backbone config (e.g. after the vocabulary was resized)."""
        return self.replace(backbone_config=copy.deepcopy(backbone_config))
