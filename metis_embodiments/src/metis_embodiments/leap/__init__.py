"""LEAP Hand (registry name ``leap``): 16 DoF, four fingers."""

from metis_embodiments.leap.embodiment_leap import LEAP_MOTOR_ORDER, LeapConfig, LeapHand

__all__ = ["LEAP_MOTOR_ORDER", "LeapConfig", "LeapHand"]
