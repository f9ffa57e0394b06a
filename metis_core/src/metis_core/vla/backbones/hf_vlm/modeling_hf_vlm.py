"""The ``hf_vlm`` backbone: a ``transformers`` image-text-to-text model behind the Backbone ABC.

The METIS policy composes its own sequences (``<bos> <image tokens> <prompt> ...``), so this
wrapper only exposes the model's own parts: its vision encoder + connector for
:meth:`~HFVLMBackbone.embed_images` (one embedding per image token, in the text model's space),
its token embedding, and its text model + ``lm_head`` for
:meth:`~HFVLMBackbone.run_language_model`. The model's processor (chat template, image splitting,
placeholder tokens) is not used.

Families:

* Idefics3 / SmolVLM: SigLIP-style encoder → pixel-shuffle connector; ``(S / patch)² / scale²``
  image tokens; pixels normalised with mean = std = 0.5.
* Qwen2-VL: the ViT with 2-D rotary positions + patch merger; ``(S / patch)² / merge²`` tokens;
  CLIP normalisation; the frame is repeated over the temporal patch (as Qwen2-VL does for images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from metis_core.interfaces import Backbone, BackboneOutput
from metis_core.vla._hf import (
    mean_resize_embeddings,
    run_causal_lm,
    transformers_module,
)
from metis_core.vla.backbones.hf_vlm.configuration_hf_vlm import HFVLMConfig
from metis_core.vla.backbones.prismatic.modeling_prismatic import preprocess_uint8_images

__all__ = ["HFVLMBackbone"]


def _single(value: Any) -> int:
    return int(value[0] if isinstance(value, (tuple, list)) else value)


class HFVLMBackbone(Backbone):
    """A ``transformers`` VLM (Idefics3, SmolVLM or Qwen2-VL) as a METIS backbone.

    Submodule: ``model`` (the ``...ForConditionalGeneration``).

    Args:
        config: The model (``HFVLMConfig.tiny()`` for tests, or a local pretrained directory).
    """

    name = "hf_vlm"
    config_class = HFVLMConfig

    def __init__(self, config: HFVLMConfig) -> None:
        super().__init__()
        transformers = transformers_module("the hf_vlm backbone")
        self.config = config
        if config.pretrained_path is not None:
            path = Path(config.pretrained_path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"hf_vlm: pretrained_path {str(path)!r} is not a local model directory (no "
                    "config.json); save the model there first, nothing is downloaded"
                )
            model_config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
            if model_config.model_type != config.model_type:
                raise ValueError(
                    f"hf_vlm: {path} holds a {model_config.model_type!r} model, the config says "
                    f"model_type = {config.model_type!r}"
                )
            self.model = transformers.AutoModelForImageTextToText.from_pretrained(
                str(path), local_files_only=True
            )
        else:
            model_config = transformers.AutoConfig.for_model(
                config.model_type, **config.model_config
            )
            self.model = transformers.AutoModelForImageTextToText.from_config(model_config)
        vision = self.model.config.vision_config
        self._patch = _single(vision.patch_size)
        if config.family == "idefics3":
            native = int(vision.image_size)
            self._merge = int(self.model.config.scale_factor)
            size = config.image_size or native
            if size != native:
                raise ValueError(
                    f"hf_vlm: image_size {size} differs from the vision model's image_size {native}"
                )
        else:
            self._merge = int(vision.spatial_merge_size)
            self._temporal = _single(vision.temporal_patch_size)
            size = int(config.image_size)  # validated by the config
        if size % (self._patch * self._merge):
            raise ValueError(
                f"hf_vlm: image_size {size} is not a multiple of patch × merge = "
                f"{self._patch} × {self._merge}"
            )
        self._size = size
        base_rows = self.vocab_size
        if config.vocab_rows is not None and config.vocab_rows > base_rows:
            mean_resize_embeddings(self.model, config.vocab_rows, pad_to_multiple_of=1)
        mean = torch.tensor(config.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(config.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    # -- parts -------------------------------------------------------------------------------

    @property
    def _inner(self) -> nn.Module:
        return self.model.model

    def _vision_modules(self) -> list[tuple[str, nn.Module]]:
        inner = self._inner
        if self.config.family == "idefics3":
            return [("vision", inner.vision_model), ("connector", inner.connector)]
        return [("vision", inner.visual)]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part: ``vision`` (+ ``connector``), ``llm`` (text model + lm_head),
        and ``total``."""
        counts = {
            name: sum(p.numel() for p in module.parameters())
            for name, module in self._vision_modules()
        }
        total = sum(p.numel() for p in self.parameters())
        counts["llm"] = total - sum(counts.values())
        counts["total"] = total
        return counts

    # -- sizes -------------------------------------------------------------------------------

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def num_image_tokens(self) -> int:
        return (self._size // self._patch) ** 2 // self._merge**2

    @property
    def image_size(self) -> tuple[int, int]:
        return (self._size, self._size)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    # -- images ------------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 → ``(B, 3, S, S)`` normalised with the family's statistics.

        One resized image per row, no image splitting.
        """
        # Note: bicubic resize for every family (Idefics3's own processor uses Lanczos on PIL
        # images and splits large images into tiles; the policy wants one fixed-size view).
        pixels = preprocess_uint8_images(images, self._size).to(self.pixel_mean.device)
        return (pixels - self.pixel_mean) / self.pixel_std

    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, self._size, self._size):
            raise ValueError(
                f"pixel_values: expected (B, 3, {self._size}, {self._size}) from preprocess(), "
                f"got {tuple(pixel_values.shape)}"
            )
        vision = self._vision_modules()[0][1]
        pixels = pixel_values.to(next(vision.parameters()).dtype)
        if self.config.family == "idefics3":
            # The encoder and the connector directly: `get_image_features` drops all-zero images
            # (its padding convention), which would misalign a batch.
            hidden = self._inner.vision_model(pixel_values=pixels).last_hidden_state
            return self._inner.connector(hidden)
        batch = pixels.shape[0]
        grid = self._size // self._patch
        flat = self._qwen_patches(pixels)
        grid_thw = torch.tensor([[1, grid, grid]] * batch, dtype=torch.long, device=pixels.device)
        out = self._inner.get_image_features(pixel_values=flat, image_grid_thw=grid_thw)
        features = getattr(out, "pooler_output", out)
        return torch.stack(list(features))

    def _qwen_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B · g², 3 · T · p²)`` in Qwen2-VL's patch order.

        Patches are listed merge-window by merge-window (each ``m × m`` window row-major, the
        windows row-major), each patch flattened as (channel, time, row, column) with the frame
        repeated over the ``T`` temporal positions.
        """
        b, c, s, _ = pixels.shape
        p, m, t = self._patch, self._merge, self._temporal
        w = s // (p * m)  # merge windows per side
        x = pixels.reshape(b, c, w, m, p, w, m, p)
        # → (b, window_row, window_col, row_in_window, col_in_window, c, p_row, p_col)
        x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)
        x = x.unsqueeze(6).expand(b, w, w, m, m, c, t, p, p)
        return x.reshape(b * (w * m) ** 2, c * t * p * p)

    # -- language model ----------------------------------------------------------------------

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(input_ids)

    def run_language_model(
        self,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
    ) -> BackboneOutput:
        # Note: Qwen2-VL's text model takes (B, N) positions and uses them for all three rotary
        # sections (time, height, width), i.e. the image tokens get sequential 1-D positions
        # instead of the 2-D grid positions its processor would give them. This keeps the
        # Backbone contract (one position per embedding, cache continuation by position) and is
        # exact for text; a pretrained Qwen2-VL sees its image tokens at other positions than
        # in its pre-training, which fine-tuning absorbs.
        logits, hidden, new_cache = run_causal_lm(
            self.model,
            inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
        )
        return BackboneOutput(logits=logits, hidden_states=hidden, cache=new_cache)

    def resize_vocabulary(self, size: int, *, pad_to_multiple_of: int = 64) -> int:
        rows = mean_resize_embeddings(self.model, size, pad_to_multiple_of=pad_to_multiple_of)
        self.config = self.config.replace(vocab_rows=rows)
        return rows
