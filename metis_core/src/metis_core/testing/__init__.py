"""Conformance test suites that every built-in and third-party component passes.

Use them by subclassing in a pytest module (pytest is needed; it is not a runtime dependency)::

    from metis_core.testing import EmbodimentConformance

    class TestMyHand(EmbodimentConformance):
        component_name = "my_hand"
"""

from metis_core.testing.action_head import ActionHeadConformance
from metis_core.testing.backbone import BackboneConformance
from metis_core.testing.component import ComponentConformance
from metis_core.testing.embodiment import EmbodimentConformance
from metis_core.testing.tokenizer import TokenizerConformance

__all__ = [
    "ActionHeadConformance",
    "BackboneConformance",
    "ComponentConformance",
    "EmbodimentConformance",
    "TokenizerConformance",
]
