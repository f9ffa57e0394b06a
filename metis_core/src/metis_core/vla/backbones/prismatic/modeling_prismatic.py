"""The Prismatic backbone: DINOv2 + SigLIP patch features → fused-GELU MLP → LLaMA.

Prismatic (Karamcheti et al. 2024, "Prismatic VLMs"), the VLM of OpenVLA and of METIS: each
image goes through both vision towers, each read at the output of its second-to-last block
(prefix tokens dropped), the patch features are concatenated on channels (DINOv2 first: 1024 +
1152 = 2176 at paper size), and a three-layer MLP with GELUs projects them into the language
model's embedding space, one embedding per patch (256 at 224 px). Everything is built from
``transformers`` configs, so the ``tiny`` preset runs on a CPU and the ``paper`` preset builds
on the meta device with the published parameter counts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metis_core.interfaces import Backbone, BackboneOutput
from metis_core.vla._hf import (
    mean_resize_embeddings,
    run_causal_lm,
    transformers_module,
)
from metis_core.vla.backbones.prismatic.configuration_prismatic import PrismaticConfig

__all__ = ["FusedMLPProjector", "PrismaticBackbone", "preprocess_uint8_images"]

# Pixel normalisation of each tower (Prismatic's `dinosiglip` image transform).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


def preprocess_uint8_images(images: Any, size: int | tuple[int, int]) -> torch.Tensor:
    """Check ``(B, H, W, 3)`` (or one ``(H, W, 3)``) uint8 RGB images and resize them.

    Args:
        images: uint8 array or tensor, channels last.
        size: Target ``(H, W)`` (or one int for a square).

    Returns:
        ``(B, 3, H, W)`` float32 in ``[0, 1]``, resized bicubically ("resize-naive", as
        Prismatic) and clamped.

    Raises:
        ValueError: For another dtype, rank or channel count, or an empty batch.
    """
    if not isinstance(images, torch.Tensor):
        try:
            import numpy as np

            array = np.asarray(images)
        except Exception as err:  # pragma: no cover - numpy converts anything array-like
            raise ValueError(
                f"images: expected a uint8 array, got {type(images).__name__}"
            ) from err
        if array.dtype != np.uint8:
            raise ValueError(f"images: expected uint8 RGB values, got dtype {array.dtype}")
        images = torch.from_numpy(np.ascontiguousarray(array))
    if images.dtype != torch.uint8:
        raise ValueError(f"images: expected uint8 RGB values, got dtype {images.dtype}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images: expected (B, H, W, 3) or (H, W, 3) uint8 RGB, got shape {tuple(images.shape)}"
        )
    if images.shape[0] == 0 or images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(f"images: empty batch or image, shape {tuple(images.shape)}")
    target = (size, size) if isinstance(size, int) else tuple(size)
    pixels = images.permute(0, 3, 1, 2).float() / 255.0
    if tuple(pixels.shape[-2:]) != target:
        pixels = F.interpolate(pixels, size=target, mode="bicubic", align_corners=False)
    return pixels.clamp_(0.0, 1.0)


class FusedMLPProjector(nn.Module):
    """``Linear(C, r·C) → GELU → Linear(r·C, H) → GELU → Linear(H, H)`` (Prismatic's
    ``fused-gelu-mlp``; 2176 → 8704 → 4096 → 4096 at paper size).

    Args:
        vision_dim: Fused patch-feature width ``C``.
        llm_dim: Language model width ``H``.
        ratio: ``r``.
    """

    def __init__(self, vision_dim: int, llm_dim: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(vision_dim, ratio * vision_dim)
        self.fc2 = nn.Linear(ratio * vision_dim, llm_dim)
        self.fc3 = nn.Linear(llm_dim, llm_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, P, C)`` → ``(B, P, H)``."""
        return self.fc3(F.gelu(self.fc2(F.gelu(self.fc1(features)))))


class PrismaticBackbone(Backbone):
    """DINOv2 (with registers) + SigLIP → fused-GELU MLP projector → LLaMA-family causal LM.

    Submodules (their names are the checkpoint key prefixes): ``dino``
    (``Dinov2WithRegistersModel``), ``siglip`` (``SiglipVisionModel``), ``projector``
    (:class:`FusedMLPProjector`), ``llm`` (``LlamaForCausalLM``).

    Args:
        config: Sizes; ``PrismaticConfig.from_preset("tiny" | "paper")`` for the named ones.
            Build the paper size without memory inside ``with torch.device("meta"):``.
    """

    name = "prismatic"
    config_class = PrismaticConfig

    def __init__(self, config: PrismaticConfig) -> None:
        super().__init__()
        transformers = transformers_module("the Prismatic backbone")
        self.config = config
        self.dino = None
        self.siglip = None
        widths = []
        if config.dino is not None:
            dino_config = transformers.Dinov2WithRegistersConfig(**config.dino)
            self.dino = transformers.Dinov2WithRegistersModel(dino_config)
            widths.append(int(dino_config.hidden_size))
        if config.siglip is not None:
            siglip_config = transformers.SiglipVisionConfig(**config.siglip)
            self.siglip = transformers.SiglipVisionModel(siglip_config)
            widths.append(int(siglip_config.hidden_size))
        llm_config = transformers.LlamaConfig(**config.llm)
        self.llm = transformers.LlamaForCausalLM(llm_config)
        self.projector = FusedMLPProjector(
            sum(widths), int(llm_config.hidden_size), config.projector_ratio
        )
        self._num_registers = int(config.dino.get("num_register_tokens", 0)) if config.dino else 0
        if config.vocab_rows is not None and config.vocab_rows > int(llm_config.vocab_size):
            mean_resize_embeddings(self.llm, config.vocab_rows, pad_to_multiple_of=1)
        norms = []
        if self.dino is not None:
            norms.append((IMAGENET_MEAN, IMAGENET_STD))
        if self.siglip is not None:
            norms.append((SIGLIP_MEAN, SIGLIP_STD))
        mean = torch.tensor([m for pair in norms for m in pair[0]], dtype=torch.float32)
        std = torch.tensor([s for pair in norms for s in pair[1]], dtype=torch.float32)
        self.register_buffer("pixel_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", std.view(1, -1, 1, 1), persistent=False)

    # -- sizes -------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.llm.config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return self.config.num_patches

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.config.image_size, self.config.image_size)

    @property
    def vocab_size(self) -> int:
        return int(self.llm.get_input_embeddings().weight.shape[0])

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: ``dino``, ``siglip``, ``projector``, ``llm`` and ``total``."""
        counts = {
            name: sum(p.numel() for p in module.parameters())
            for name, module in (
                ("dino", self.dino),
                ("siglip", self.siglip),
                ("projector", self.projector),
                ("llm", self.llm),
            )
            if module is not None
        }
        if self.siglip is not None:
            head = getattr(self.siglip, "head", None) or getattr(
                getattr(self.siglip, "vision_model", None), "head", None
            )
            if head is not None:
                counts["siglip_head"] = sum(p.numel() for p in head.parameters())
        counts["total"] = sum(v for k, v in counts.items() if k != "siglip_head")
        return counts

    # -- images ------------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 → ``(B, 3·towers, S, S)``: each tower's normalisation stacked."""
        pixels = preprocess_uint8_images(images, self.config.image_size)
        towers = self.pixel_mean.shape[1] // 3
        stacked = pixels.repeat(1, towers, 1, 1).to(self.pixel_mean.device)
        return (stacked - self.pixel_mean) / self.pixel_std

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        towers = int(self.pixel_mean.shape[1])
        if pixel_values.dim() != 4 or pixel_values.shape[1] != towers:
            raise ValueError(
                f"pixel_values: expected (B, {towers}, {self.config.image_size}, "
                f"{self.config.image_size}) from preprocess(), got {tuple(pixel_values.shape)}"
            )
        layer = self.config.feature_layer
        features = []
        offset = 0
        if self.dino is not None:
            dtype = self.dino.embeddings.patch_embeddings.projection.weight.dtype
            out = self.dino(pixel_values=pixel_values[:, :3].to(dtype), output_hidden_states=True)
            features.append(out.hidden_states[layer][:, 1 + self._num_registers :])
            offset = 3
        if self.siglip is not None:
            dtype = next(self.siglip.parameters()).dtype
            pixels = pixel_values[:, offset : offset + 3].to(dtype)
            out = self.siglip(pixel_values=pixels, output_hidden_states=True)
            features.append(out.hidden_states[layer])
        fused = torch.cat([f.to(features[0].dtype) for f in features], dim=-1)
        return self.projector(fused.to(self.projector.fc1.weight.dtype))

    # -- language model ----------------------------------------------------------------------

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)

    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> BackboneOutput:
        logits, hidden, new_cache = run_causal_lm(
            self.llm,
            inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        return BackboneOutput(logits=logits, hidden_states=hidden, cache=new_cache)

    def resize_vocabulary(self, size: int, *, pad_to_multiple_of: int = 64) -> int:
        rows = mean_resize_embeddings(self.llm, size, pad_to_multiple_of=pad_to_multiple_of)
        self.config = self.config.replace(vocab_rows=rows)
        return rows
