"""The ``paddle_hand`` embodiment."""
