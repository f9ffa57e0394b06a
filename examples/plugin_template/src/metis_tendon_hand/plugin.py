"""pluggy hook implementations of the example plugin."""

from __future__ import annotations

import click

from metis_core import EMBODIMENTS, FINGERS, hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``metis tendon-hand``."""

    @cli.command("tendon-hand")
    @click.option("--side", type=click.Choice(["left", "right"]), default="right")
    def tendon_hand(side: str) -> None:
        """Print the tendon hand's fingertips (mm, wrist frame), open and closed."""
        hand = EMBODIMENTS.create("tendon_hand", side=side)
        limits = hand.joint_limits
        for label, joints in (("open", limits[:, 0]), ("closed", limits[:, 1])):
            tips = hand.forward_kinematics(joints) * 1000
            click.echo(f"{label}:")
            for finger, tip in zip(FINGERS, tips.tolist(), strict=True):
                click.echo(f"  {finger:<7} x={tip[0]:7.1f} y={tip[1]:7.1f} z={tip[2]:7.1f}")
