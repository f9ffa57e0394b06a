"""Example METIS plugin: a 6-DoF tendon-coupled hand."""

from metis_tendon_hand.tendon_hand.embodiment_tendon_hand import TendonHand, TendonHandConfig

__all__ = ["TendonHand", "TendonHandConfig"]
