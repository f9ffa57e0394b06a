"""The built-in backbone and action head pass the shipped conformance suites."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from metis_core.testing import ActionHeadConformance, BackboneConformance
from metis_core.vla.backbones.prismatic import PrismaticConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fields(config) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "type"}


class TestPrismaticConformance(BackboneConformance):
    component_name = "prismatic"
    config_overrides: ClassVar[dict[str, Any]] = _fields(PrismaticConfig.from_preset("tiny"))


class TestPrismaticSiglipOnlyConformance(BackboneConformance):
    component_name = "prismatic"
    config_overrides: ClassVar[dict[str, Any]] = {
        **_fields(PrismaticConfig.from_preset("tiny")),
        "dino": None,
    }


class TestMAPDecoderConformance(ActionHeadConformance):
    component_name = "map_decoder"
    config_overrides: ClassVar[dict[str, Any]] = {"input_dim": 32, "hidden_dim": 32, "num_heads": 4, "mlp_dim": 64, "chunk_len": 8}  # fmt: skip
