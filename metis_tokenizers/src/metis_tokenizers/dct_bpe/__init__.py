"""DCT + BPE baseline tokenizer (registry name ``dct_bpe``)."""

from metis_tokenizers.dct_bpe.configuration_dct_bpe import DCTBPEConfig
from metis_tokenizers.dct_bpe.modeling_dct_bpe import DCTBPE

__all__ = ["DCTBPE", "DCTBPEConfig"]
