"""The SharpaWave 22-DoF hand."""

from metis_embodiments.sharpawave.embodiment_sharpawave import (
    SHARPAWAVE_JOINT_ORDER,
    SharpaWaveConfig,
    SharpaWaveHand,
)

__all__ = ["SHARPAWAVE_JOINT_ORDER", "SharpaWaveConfig", "SharpaWaveHand"]
