"""The Inspire RH56DFX hand (as mounted on the Unitree G1/H1)."""

from metis_embodiments.inspire.embodiment_inspire import (
    UNITREE_COMMAND_ORDER,
    InspireConfig,
    InspireHand,
)

__all__ = ["UNITREE_COMMAND_ORDER", "InspireConfig", "InspireHand"]
