"""Every registered tokenizer passes the shipped conformance suite."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from helpers_tokenizers import SMALL, trained

from metis_core.interfaces import Tokenizer
from metis_core.testing import TokenizerConformance


class TestMotionRVQConformance(TokenizerConformance):
    component_name = "motion_rvq"
    config_overrides = SMALL

    def prepare(self, tokenizer: Tokenizer, actions: torch.Tensor) -> Tokenizer:
        return trained()


class TestBinningConformance(TokenizerConformance):
    component_name = "binning"


class TestDCTBPEConformance(TokenizerConformance):
    component_name = "dct_bpe"
    config_overrides: ClassVar[dict[str, Any]] = {"scale": 4.0, "vocab_size": 256}
