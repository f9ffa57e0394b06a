"""Visual-dynamics VQ tokenizer (registry name ``visual_dynamics_vq``)."""

from metis_tokenizers.visual_dynamics_vq.configuration_visual_dynamics_vq import (
    VisualDynamicsVQConfig,
)
from metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq import (
    VisualDynamicsVQ,
    VisualDynamicsVQOutput,
    motion_encoder_features,
)

__all__ = [
    "VisualDynamicsVQ",
    "VisualDynamicsVQConfig",
    "VisualDynamicsVQOutput",
    "motion_encoder_features",
]
