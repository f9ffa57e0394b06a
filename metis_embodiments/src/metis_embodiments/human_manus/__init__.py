"""Human hands as the 25 keypoints Manus gloves report."""

from metis_embodiments.human_manus.embodiment_human_manus import HumanManusConfig, HumanManusHand

__all__ = ["HumanManusConfig", "HumanManusHand"]
