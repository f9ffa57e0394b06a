"""pluggy hook implementations of the example plugin."""

from __future__ import annotations

import click

from metis_core import EMBODIMENTS, hookimpl


@hookimpl
def register_commands(cli: click.Group) -> None:
    """Add ``metis paddle-hand``."""

    @cli.command("paddle-hand")
    @click.option("--side", type=click.Choice(["left", "right"]), default="right")
    def paddle_hand(side: str) -> None:
        """Print the paddle hand's fingertips (mm, wrist frame) open and closed."""
        hand = EMBODIMENTS.create("paddle_hand", side=side)
        limits = hand.joint_limits
        for label, joints in (("open", limits[:, 0]), ("closed", limits[:, 1])):
            tips = hand.forward_kinematics(joints) * 1000
            click.echo(f"{label}:")
            for finger, tip in zip(
                ("thumb", "index", "middle", "ring", "little"), tips.tolist(), strict=False
            ):
                click.echo(f"  {finger:<7} x={tip[0]:7.1f} y={tip[1]:7.1f} z={tip[2]:7.1f}")
