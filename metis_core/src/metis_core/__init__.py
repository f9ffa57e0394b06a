"""metis-core: the kernel of the METIS toolkit.

Interfaces, registries and plugins, the ``metis-hand-v1`` hand action contract with its
rotation maths, normalisation, and save/load helpers. Importing it stays light (torch, numpy,
pluggy, safetensors, huggingface_hub); the reference VLA lives behind ``metis-core[vla]``.
"""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("metis-core")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

from metis_core.components import Component, load_component
from metis_core.config import ComponentConfig
from metis_core.contract import (
    ACTION_DIM,
    FINGERS,
    HAND_CONTRACT,
    HANDS,
    LEFT,
    RIGHT,
    ContractSpec,
    HandPoses,
    apply_hand_mask,
    check_contract,
    hand_value_mask,
    pack_hands,
    unpack_hands,
    validate_hand_vector,
)
from metis_core.episode import Episode, Subtask
from metis_core.errors import (
    ComponentConfigError,
    ContractError,
    ContractMismatchError,
    DuplicateComponentError,
    MetisError,
    MissingDependencyError,
    PluginLoadError,
    UnknownComponentError,
)
from metis_core.frames import from_wrist_frame, to_wrist_frame, wrist_frame_from_keypoints
from metis_core.hookspecs import hookimpl
from metis_core.interfaces import (
    ActionHead,
    Backbone,
    DatasetSource,
    Embodiment,
    IKResult,
    Tokenizer,
)
from metis_core.normalization import Normalizer, NormMode, NormStats, compute_stats
from metis_core.registry import (
    ACTION_HEADS,
    BACKBONES,
    DATASET_SOURCES,
    EMBODIMENTS,
    REGISTRIES,
    TOKENIZERS,
    Registry,
)
from metis_core.resample import resample_hand_vectors
from metis_core.rotations import matrix_to_rot6d, rot6d_to_matrix

__all__ = [
    "ACTION_DIM",
    "ACTION_HEADS",
    "BACKBONES",
    "DATASET_SOURCES",
    "EMBODIMENTS",
    "FINGERS",
    "HANDS",
    "HAND_CONTRACT",
    "LEFT",
    "REGISTRIES",
    "RIGHT",
    "TOKENIZERS",
    "ActionHead",
    "Backbone",
    "Component",
    "ComponentConfig",
    "ComponentConfigError",
    "ContractError",
    "ContractMismatchError",
    "ContractSpec",
    "DatasetSource",
    "DuplicateComponentError",
    "Embodiment",
    "Episode",
    "HandPoses",
    "IKResult",
    "MetisError",
    "MissingDependencyError",
    "NormMode",
    "NormStats",
    "Normalizer",
    "PluginLoadError",
    "Registry",
    "Subtask",
    "Tokenizer",
    "UnknownComponentError",
    "__version__",
    "apply_hand_mask",
    "check_contract",
    "compute_stats",
    "from_wrist_frame",
    "hand_value_mask",
    "hookimpl",
    "load_component",
    "matrix_to_rot6d",
    "pack_hands",
    "resample_hand_vectors",
    "rot6d_to_matrix",
    "to_wrist_frame",
    "unpack_hands",
    "validate_hand_vector",
    "wrist_frame_from_keypoints",
]
