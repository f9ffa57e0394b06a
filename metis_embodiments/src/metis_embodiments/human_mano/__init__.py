"""Human hands as 21 MANO/MediaPipe keypoints."""

from metis_embodiments.human_mano.embodiment_human_mano import HumanManoConfig, HumanManoHand

__all__ = ["HumanManoConfig", "HumanManoHand"]
