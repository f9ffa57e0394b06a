"""METIS tokenizers: residual-VQ motion tokens and baselines behind one interface.

Built-ins (registry ``metis_core.registry.TOKENIZERS``, entry-point group ``metis.tokenizers``):
``motion_rvq`` (the METIS motion tokenizer), ``binning`` (RT-2/OpenVLA) and ``dct_bpe`` (FAST-style).
"""

from metis_tokenizers.binning import Binning, BinningConfig
from metis_tokenizers.dct_bpe import DCTBPE, DCTBPEConfig
from metis_tokenizers.motion_generator import MotionWindows, generate_motion_windows
from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig

__version__ = "0.1.0"

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
