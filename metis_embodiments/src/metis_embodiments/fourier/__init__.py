"""The Fourier 6-DoF dexterous hand (as mounted on the Fourier GR1-T1/T2 humanoids)."""

from metis_embodiments.fourier.embodiment_fourier import (
    ACTIONNET_JOINT_ORDER,
    END_LINK_TO_HAND_BASE_M,
    LEFT_BASE_MIRROR,
    FourierConfig,
    FourierHand,
)

__all__ = [
    "ACTIONNET_JOINT_ORDER",
    "END_LINK_TO_HAND_BASE_M",
    "LEFT_BASE_MIRROR",
    "FourierConfig",
    "FourierHand",
]
