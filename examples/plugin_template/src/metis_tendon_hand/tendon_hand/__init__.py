"""The ``tendon_hand`` embodiment."""
