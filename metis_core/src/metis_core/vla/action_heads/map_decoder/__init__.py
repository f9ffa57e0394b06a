"""The MAP action decoder (``map_decoder``)."""

from metis_core.vla.action_heads.map_decoder.configuration_map_decoder import MAPDecoderConfig
from metis_core.vla.action_heads.map_decoder.modeling_map_decoder import MAPBlock, MAPDecoder

__all__ = ["MAPBlock", "MAPDecoder", "MAPDecoderConfig"]
