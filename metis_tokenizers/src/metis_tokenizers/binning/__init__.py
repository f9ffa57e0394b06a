"""Uniform binning baseline tokenizer (registry name ``binning``)."""

from metis_tokenizers.binning.configuration_binning import BinningConfig
from metis_tokenizers.binning.modeling_binning import Binning

__all__ = ["Binning", "BinningConfig"]
