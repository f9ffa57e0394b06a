"""Configuration of the ``hf_vlm`` backbone: any supported ``transformers`` image-text-to-text model."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from metis_core.config import ComponentConfig

__all__ = ["HF_VLM_FAMILIES", "HFVLMConfig"]

# CLIP's pixel statistics (Qwen2-VL's image processor) and SigLIP's (Idefics3 / SmolVLM).
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_HALF = (0.5, 0.5, 0.5)

#: Supported ``model_type`` values → (how the vision path is read, default pixel mean, std).
HF_VLM_FAMILIES: dict[str, tuple[str, tuple[float, ...], tuple[float, ...]]] = {
    "idefics3": ("idefics3", _HALF, _HALF),
    "smolvlm": ("idefics3", _HALF, _HALF),
    "qwen2_vl": ("qwen2_vl", _CLIP_MEAN, _CLIP_STD),
}

_TINY_TEXT: dict[str, Any] = {
    "vocab_size": 260,  # the byte-level test tokenizer
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": None,
    "tie_word_embeddings": False,
}

#: Few-layer configs of each family (a CPU training step well under a second).
_TINY: dict[str, dict[str, Any]] = {
    "idefics3": {
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 112,
            "patch_size": 14,
        },
        "text_config": {"model_type": "llama", **_TINY_TEXT},
        "scale_factor": 2,  # 8 × 8 patches → 16 image tokens
        "image_token_id": 3,
        "tie_word_embeddings": False,
    },
    "qwen2_vl": {
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,  # the merger's output = the text model's width
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "text_config": {
            **_TINY_TEXT,
            "num_key_value_heads": 2,
            # head_dim 16 → 8 rotary frequencies split over (time, height, width).
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
        },
        "image_token_id": 3,
        "video_token_id": 2,
        "vision_start_token_id": 2,
        "tie_word_embeddings": False,
    },
}
_TINY["smolvlm"] = copy.deepcopy(_TINY["idefics3"])
_TINY_IMAGE_SIZE = {"idefics3": None, "smolvlm": None, "qwen2_vl": 112}


@dataclass(frozen=True, kw_only=True)
class HFVLMConfig(ComponentConfig):
    """A ``transformers`` image-text-to-text model used as the METIS backbone.

    Either built from ``model_type`` + ``model_config`` (random weights, e.g. :meth:`tiny`) or
    loaded from ``pretrained_path``, a local directory written by ``save_pretrained`` (read with
    ``local_files_only=True``; nothing is downloaded).

    Args:
        model_type: ``transformers`` model type: ``"idefics3"``, ``"smolvlm"`` or ``"qwen2_vl"``.
        model_config: Fields for ``AutoConfig.for_model(model_type, **model_config)`` (nested
            ``vision_config`` / ``text_config`` dicts); must be empty with ``pretrained_path``.
        pretrained_path: Local directory with ``config.json`` + weights, or ``None``.
        image_size: Square input size in pixels; ``None`` = the vision config's ``image_size``
            (Idefics3 / SmolVLM). Qwen2-VL needs it (a multiple of ``patch × merge``).
        image_mean: Per-channel pixel mean, or ``None`` for the family's (SigLIP 0.5 for
            Idefics3 / SmolVLM, CLIP's for Qwen2-VL).
        image_std: Per-channel pixel standard deviation, or ``None`` for the family's.
        vocab_rows: Rows of the (resized) embedding, or ``None`` for the model's own; written by
            ``resize_vocabulary`` so that a saved model rebuilds with the right shape.
    """

    model_type: str = "idefics3"
    model_config: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(_TINY["idefics3"]))
    pretrained_path: str | None = None
    image_size: int | None = None
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    vocab_rows: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_type not in HF_VLM_FAMILIES:
            raise ValueError(
                f"hf_vlm: model_type {self.model_type!r} is not supported; expected one of "
                f"{sorted(HF_VLM_FAMILIES)}"
            )
        if self.pretrained_path is not None and self.model_config:
            raise ValueError(
                "hf_vlm: give either pretrained_path (the directory's config.json is used) or "
                "model_config, not both"
            )
        if self.pretrained_path is None and not self.model_config:
            raise ValueError("hf_vlm: model_config is empty and no pretrained_path is given")
        if self.image_size is not None and not 14 <= self.image_size <= 4096:
            raise ValueError(f"hf_vlm: image_size must be in [14, 4096] pixels, got {self.image_size}")  # fmt: skip
        if HF_VLM_FAMILIES[self.model_type][0] == "qwen2_vl" and self.image_size is None:
            raise ValueError("hf_vlm: a Qwen2-VL backbone needs image_size (e.g. 224)")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ValueError(f"hf_vlm: {name} needs 3 values (RGB), got {value!r}")
        if self.image_std is not None and min(self.image_std) <= 0:
            raise ValueError(f"hf_vlm: image_std must be positive, got {self.image_std!r}")
        if self.vocab_rows is not None and self.vocab_rows < 1:
            raise ValueError(f"hf_vlm: vocab_rows must be >= 1, got {self.vocab_rows}")

    @classmethod
    def tiny(cls, model_type: str = "idefics3", **overrides: Any) -> HFVLMConfig:
        """A few-layer model of a family (``"idefics3"``, ``"smolvlm"``, ``"qwen2_vl"``) with
        a 260-token LLaMA-sized-down text model, for tests and CPU runs.

        Raises:
            ValueError: For an unknown family.
        """
        if model_type not in _TINY:
            raise ValueError(f"hf_vlm: no tiny config for {model_type!r}; expected one of {sorted(_TINY)}")  # fmt: skip
        values: dict[str, Any] = {
            "model_type": model_type,
            "model_config": copy.deepcopy(_TINY[model_type]),
            "image_size": _TINY_IMAGE_SIZE[model_type],
        }
        values.update(overrides)
        return cls(**values)

    @property
    def family(self) -> str:
        """How the vision path is read, ``"idefics3"`` or ``"qwen2_vl"``."""
        return HF_VLM_FAMILIES[self.model_type][0]

    @property
    def pixel_mean(self) -> tuple[float, ...]:
        """The pixel mean in use."""
        return self.image_mean if self.image_mean is not None else HF_VLM_FAMILIES[self.model_type][1]  # fmt: skip

    @property
    def pixel_std(self) -> tuple[float, ...]:
        """The pixel standard deviation in use."""
        return self.image_std if self.image_std is not None else HF_VLM_FAMILIES[self.model_type][2]  # fmt: skip
