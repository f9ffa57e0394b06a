"""The METIS vision-language-action policy (``pip install 'metis-core[vla]'``).

Importing this package needs ``transformers`` only when a part is built; the registered parts
(``prismatic`` and ``hf_vlm`` backbones, the ``map_decoder`` action head) are found through the
registries like every other component. :mod:`metis_core.vla.release` loads and writes
checkpoints in the layout of the authors' release.
"""

from metis_core.vla.configuration_metis import MetisConfig
from metis_core.vla.data import PolicyBatch, TrainingSample, samples_from_episode, subtask_at
from metis_core.vla.modeling_metis import (
    ActionPrediction,
    GenerationOutput,
    MetisPolicy,
    PolicyOutput,
    PolicySession,
)
from metis_core.vla.normalization_policy import PolicyNormalization
from metis_core.vla.release import is_metis_release, load_metis_release, save_metis_release

__all__ = [
    "ActionPrediction",
    "GenerationOutput",
    "MetisConfig",
    "MetisPolicy",
    "PolicyBatch",
    "PolicyNormalization",
    "PolicyOutput",
    "PolicySession",
    "TrainingSample",
    "is_metis_release",
    "load_metis_release",
    "samples_from_episode",
    "save_metis_release",
    "subtask_at",
]
