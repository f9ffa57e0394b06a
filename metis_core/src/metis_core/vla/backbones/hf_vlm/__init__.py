"""The ``hf_vlm`` backbone: a ``transformers`` image-text-to-text model (Idefics3, SmolVLM, Qwen2-VL)."""

from metis_core.vla.backbones.hf_vlm.configuration_hf_vlm import HF_VLM_FAMILIES, HFVLMConfig
from metis_core.vla.backbones.hf_vlm.modeling_hf_vlm import HFVLMBackbone

__all__ = ["HF_VLM_FAMILIES", "HFVLMBackbone", "HFVLMConfig"]
