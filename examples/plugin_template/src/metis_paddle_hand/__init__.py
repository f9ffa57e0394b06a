"""Example METIS plugin: a minimal 5-DoF hand."""

from metis_paddle_hand.paddle_hand.configuration_paddle_hand import PaddleHandConfig
from metis_paddle_hand.paddle_hand.embodiment_paddle_hand import PaddleHand

__all__ = ["PaddleHand", "PaddleHandConfig"]
