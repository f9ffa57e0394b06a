"""The paper configuration built on the meta device has the published parameter counts."""

from __future__ import annotations

import pytest
import torch

from metis_core.vla.action_heads.map_decoder import MAPDecoder, MAPDecoderConfig
from metis_core.vla.backbones.prismatic import PrismaticBackbone, PrismaticConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LLAMA2_VOCAB = 32000
#: `<PAD>` plus the METIS tokens: 16 visual + 512 motion codes + [BOA], [BOD], [EOD].
METIS_ADDED = 1 + 16 + 512 + 3


@pytest.fixture(scope="module")
def paper_backbone() -> PrismaticBackbone:
    with torch.device("meta"):
        return PrismaticBackbone(PrismaticConfig.from_preset("paper"))


def test_paper_config_counts_with_the_metis_vocabulary(paper_backbone: PrismaticBackbone) -> None:
    rows = paper_backbone.resize_vocabulary(LLAMA2_VOCAB + METIS_ADDED, pad_to_multiple_of=64)
    assert rows == 32576
    counts = paper_backbone.parameter_counts()
    assert counts["llm"] == 6_743_134_208
    assert counts["projector"] == 71_385_600
    assert abs(counts["dino"] - 303_230_976) <= 2048  # HF keeps a mask token and a class position
    assert counts["siglip"] == 427_680_704
    assert counts["siglip"] - counts["siglip_head"] == 412_442_352
    with torch.device("meta"):
        head = MAPDecoder(MAPDecoderConfig(input_dim=4096, chunk_len=30))
    assert sum(p.numel() for p in head.parameters()) == 14_360_992
    assert abs(counts["total"] - 7_545_431_488) / 7_545_431_488 < 1e-3
    assert all(p.device.type == "meta" for p in paper_backbone.parameters())


def test_paper_config_with_openvla_vocabulary_matches_openvla_7b() -> None:
    with torch.device("meta"):
        backbone = PrismaticBackbone(PrismaticConfig.from_preset("paper"))
    rows = backbone.resize_vocabulary(LLAMA2_VOCAB + 1, pad_to_multiple_of=64)
    assert rows == 32064
    total = backbone.parameter_counts()["total"]
    assert abs(total - 7_541_237_184) / 7_541_237_184 < 1e-3


def test_release_decoder_at_chunk_32() -> None:
    with torch.device("meta"):
        head = MAPDecoder(MAPDecoderConfig(input_dim=4096, chunk_len=32))
    assert sum(p.numel() for p in head.parameters()) == 14_459_392
