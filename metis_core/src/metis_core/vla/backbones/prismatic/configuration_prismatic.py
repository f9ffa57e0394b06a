"""Configuration of the Prismatic backbone (DINOv2 + SigLIP + fused-GELU MLP projector + LLaMA)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from metis_core.config import ComponentConfig

__all__ = ["PRISMATIC_PRESETS", "PrismaticConfig"]

# Sizes of the paper's backbone, `prism-dinosiglip-224px+7b` (Karamcheti et al. 2024; METIS §4.1).
_PAPER: dict[str, Any] = {
    # DINOv2 ViT-L/14 with 4 registers (timm `vit_large_patch14_reg4_dinov2.lvd142m`).
    "dino": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "mlp_ratio": 4,
        "patch_size": 14,
        "image_size": 224,
        "num_register_tokens": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "layerscale_value": 1e-5,
    },
    # SigLIP SO400M/14 at 224 px (timm `vit_so400m_patch14_siglip_224`).
    "siglip": {
        "hidden_size": 1152,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "intermediate_size": 4304,
        "patch_size": 14,
        "image_size": 224,
        # Note: transformers' default is "gelu_pytorch_tanh"; timm and Prismatic use exact GELU.
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    },
    # LLaMA-2 7B.
    "llm": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        # `<PAD>` (id 32000) is added to the tokenizer, then the embedding is resized.
        "pad_token_id": None,
        "tie_word_embeddings": False,
    },
    "image_size": 224,
}

# A few-layer model with the same structure and the same sequence geometry as the paper (224 px,
# 14 px patches: 256 image tokens), for tests and CPU runs (a training step in well under a
# second on one core).
_TINY: dict[str, Any] = {
    "dino": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "image_size": 224,
        "num_register_tokens": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "layerscale_value": 1e-5,
    },
    "siglip": {
        "hidden_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 96,
        "patch_size": 14,
        "image_size": 224,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    },
    "llm": {
        "vocab_size": 260,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": None,
        "tie_word_embeddings": False,
    },
    "image_size": 224,
}

#: The named configurations, ``"paper"`` (7.5 B parameters) and ``"tiny"``.
PRISMATIC_PRESETS: dict[str, dict[str, Any]] = {"paper": _PAPER, "tiny": _TINY}


@dataclass(frozen=True, kw_only=True)
class PrismaticConfig(ComponentConfig):
    """A Prismatic VLM: two vision towers, a projector and a LLaMA-family language model.

    Build a named one with :meth:`from_preset` (``"tiny"`` or ``"paper"``).

    Args:
        dino: ``Dinov2WithRegistersConfig`` fields of the DINOv2 tower, or ``None`` to leave it
            out (a SigLIP-only Prismatic).
        siglip: ``SiglipVisionConfig`` fields of the SigLIP tower, or ``None``.
        llm: ``LlamaConfig`` fields of the language model (``vocab_size`` before the dynamics
            tokens are added; :meth:`PrismaticBackbone.resize_vocabulary` grows it).
        image_size: Square input size of both towers (pixels).
        feature_layer: Which hidden state of each tower feeds the projector (``-2``: the output of
            the second-to-last block, as Prismatic reads them).
        projector_ratio: Width of the projector's first layer as a multiple of the fused vision
            width (4: 2176 → 8704 at paper size).
        vocab_rows: Rows of the (resized) embedding, or ``None`` for ``llm["vocab_size"]``;
            written by ``resize_vocabulary`` so that a saved model rebuilds with the right shape.
    """

    dino: dict[str, Any] | None = field(default_factory=lambda: copy.deepcopy(_TINY["dino"]))
    siglip: dict[str, Any] | None = field(default_factory=lambda: copy.deepcopy(_TINY["siglip"]))
    llm: dict[str, Any] = field(default_factory=lambda: copy.deepcopy(_TINY["llm"]))
    image_size: int = 224
    feature_layer: int = -2
    projector_ratio: int = 4
    vocab_rows: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dino is None and self.siglip is None:
            raise ValueError(
                "a Prismatic backbone needs at least one vision tower (dino or siglip)"
            )
        if self.image_size < 14 or self.image_size > 4096:
            raise ValueError(f"image_size must be in [14, 4096] pixels, got {self.image_size}")
        for name in ("dino", "siglip"):
            tower = getattr(self, name)
            if tower is None:
                continue
            patch = int(tower.get("patch_size", 14))
            if self.image_size % patch:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of the {name} patch size {patch}"
                )
            if int(tower.get("image_size", self.image_size)) != self.image_size:
                raise ValueError(
                    f"{name}.image_size = {tower.get('image_size')} differs from image_size = "
                    f"{self.image_size}; both towers read the same images"
                )
            layers = int(tower.get("num_hidden_layers", 1))
            if not -layers <= self.feature_layer <= layers:
                raise ValueError(
                    f"feature_layer {self.feature_layer} is outside the {layers} layers of {name}"
                )
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if int(self.llm.get(key, 0)) < 1:
                raise ValueError(f"llm.{key} must be a positive integer, got {self.llm.get(key)!r}")
        if int(self.llm["hidden_size"]) > 65536 or int(self.llm["num_hidden_layers"]) > 512:
            raise ValueError(
                "llm sizes are beyond any known model (hidden <= 65536, layers <= 512)"
            )
        if not 1 <= self.projector_ratio <= 64:
            raise ValueError(f"projector_ratio must be in [1, 64], got {self.projector_ratio}")
        if self.vocab_rows is not None and self.vocab_rows < int(self.llm["vocab_size"]):
            raise ValueError(
                f"vocab_rows {self.vocab_rows} is smaller than llm.vocab_size {self.llm['vocab_size']}"
            )

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> PrismaticConfig:
        """A named configuration (``"tiny"`` or ``"paper"``) with some fields replaced.

        Raises:
            ValueError: For an unknown preset name.
        """
        if preset not in PRISMATIC_PRESETS:
            raise ValueError(
                f"unknown Prismatic preset {preset!r}; expected one of {sorted(PRISMATIC_PRESETS)}"
            )
        values = copy.deepcopy(PRISMATIC_PRESETS[preset])
        values.update(overrides)
        return cls(**values)

    @property
    def num_patches(self) -> int:
        """Image tokens per image, ``(image_size / patch)²``."""
        tower = self.dino if self.dino is not None else self.siglip
        assert tower is not None
        return (self.image_size // int(tower.get("patch_size", 14))) ** 2
