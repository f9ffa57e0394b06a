"""Residual-VQ motion tokenizer (registry name ``motion_rvq``)."""

from metis_tokenizers.motion_rvq.configuration_motion_rvq import MotionRVQConfig
from metis_tokenizers.motion_rvq.modeling_motion_rvq import MotionRVQ

__all__ = ["MotionRVQ", "MotionRVQConfig"]
