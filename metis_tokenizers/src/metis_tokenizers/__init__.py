"""METIS tokenizers: residual-VQ motion tokens and baselines behind one interface.

Built-ins (registry ``metis_core.registry.TOKENIZERS``, entry-point group ``metis.tokenizers``):
``motion_rvq`` (the METIS motion tokenizer), ``binning`` (RT-2/OpenVLA) and ``dct_bpe`` (FAST-style).

The names below are imported on first use (PEP 562), so that importing the package — as the
``metis`` command line does to find this package's plugin hooks — does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Binning": "metis_tokenizers.binning",
    "BinningConfig": "metis_tokenizers.binning",
    "DCTBPE": "metis_tokenizers.dct_bpe",
    "DCTBPEConfig": "metis_tokenizers.dct_bpe",
    "MotionRVQ": "metis_tokenizers.motion_rvq",
    "MotionRVQConfig": "metis_tokenizers.motion_rvq",
    "MotionWindows": "metis_tokenizers.motion_generator",
    "generate_motion_windows": "metis_tokenizers.motion_generator",
}

__all__ = [
    "DCTBPE",
    "Binning",
    "BinningConfig",
    "DCTBPEConfig",
    "MotionRVQ",
    "MotionRVQConfig",
    "MotionWindows",
    "__version__",
    "generate_motion_windows",
]

if TYPE_CHECKING:  # pragma: no cover
    from metis_tokenizers.binning import Binning, BinningConfig
    from metis_tokenizers.dct_bpe import DCTBPE, DCTBPEConfig
    from metis_tokenizers.motion_generator import MotionWindows, generate_motion_windows
    from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'metis_tokenizers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
