"""The Prismatic backbone (``prismatic``)."""

from metis_core.vla.backbones.prismatic.configuration_prismatic import (
    PRISMATIC_PRESETS,
    PrismaticConfig,
)
from metis_core.vla.backbones.prismatic.modeling_prismatic import (
    FusedMLPProjector,
    PrismaticBackbone,
)
from metis_core.vla.backbones.prismatic.weights_prismatic import (
    KeyMappingError,
    LoadReport,
    load_prismatic_weights,
    prismatic_state_dict,
    save_prismatic_checkpoint,
)

__all__ = [
    "PRISMATIC_PRESETS",
    "FusedMLPProjector",
    "KeyMappingError",
    "LoadReport",
    "PrismaticBackbone",
    "PrismaticConfig",
    "load_prismatic_weights",
    "prismatic_state_dict",
    "save_prismatic_checkpoint",
]
