"""metis-core: the kernel of the METIS toolkit.

Interfaces, registries and plugins, the ``metis-hand-v1`` hand action contract with its
rotation maths, normalisation, and save/load helpers. Importing it stays light (torch, numpy,
pluggy, safetensors, huggingface_hub); the reference VLA lives behind ``metis-core[vla]``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = importlib.metadata.version("metis-core")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

# Names are imported on first access (PEP 562): `import metis_core` and the `metis` tool stay
# light (no torch until a name that needs it is used).
_LAZY = {
    "Component": "metis_core.components",
    "load_component": "metis_core.components",
    "ComponentConfig": "metis_core.config",
    "ACTION_DIM": "metis_core.contract",
    "FINGERS": "metis_core.contract",
    "HAND_CONTRACT": "metis_core.contract",
    "HANDS": "metis_core.contract",
    "LEFT": "metis_core.contract",
    "RIGHT": "metis_core.contract",
    "ContractSpec": "metis_core.contract",
    "HandPoses": "metis_core.contract",
    "apply_hand_mask": "metis_core.contract",
    "check_contract": "metis_core.contract",
    "hand_value_mask": "metis_core.contract",
    "pack_hands": "metis_core.contract",
    "unpack_hands": "metis_core.contract",
    "validate_hand_vector": "metis_core.contract",
    "Episode": "metis_core.episode",
    "Subtask": "metis_core.episode",
    "ComponentConfigError": "metis_core.errors",
    "ContractError": "metis_core.errors",
    "ContractMismatchError": "metis_core.errors",
    "DuplicateComponentError": "metis_core.errors",
    "MetisError": "metis_core.errors",
    "MissingDependencyError": "metis_core.errors",
    "PluginLoadError": "metis_core.errors",
    "UnknownComponentError": "metis_core.errors",
    "from_wrist_frame": "metis_core.frames",
    "to_wrist_frame": "metis_core.frames",
    "wrist_frame_from_keypoints": "metis_core.frames",
    "hookimpl": "metis_core.hookspecs",
    "ActionHead": "metis_core.interfaces",
    "Backbone": "metis_core.interfaces",
    "DatasetSource": "metis_core.interfaces",
    "Embodiment": "metis_core.interfaces",
    "IKResult": "metis_core.interfaces",
    "Tokenizer": "metis_core.interfaces",
    "Normalizer": "metis_core.normalization",
    "NormMode": "metis_core.normalization",
    "NormStats": "metis_core.normalization",
    "compute_stats": "metis_core.normalization",
    "ACTION_HEADS": "metis_core.registry",
    "BACKBONES": "metis_core.registry",
    "DATASET_SOURCES": "metis_core.registry",
    "EMBODIMENTS": "metis_core.registry",
    "REGISTRIES": "metis_core.registry",
    "TOKENIZERS": "metis_core.registry",
    "Registry": "metis_core.registry",
    "resample_hand_vectors": "metis_core.resample",
    "matrix_to_rot6d": "metis_core.rotations",
    "rot6d_to_matrix": "metis_core.rotations",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metis_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:
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
