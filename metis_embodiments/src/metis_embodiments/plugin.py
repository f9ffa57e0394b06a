"""pluggy hooks of metis-embodiments: the ``metis embodiments`` command group."""

from __future__ import annotations

from typing import Any

from metis_core.hookspecs import hookimpl

__all__ = ["register_commands"]


@hookimpl
def register_commands(cli: Any) -> None:
    """Add ``metis embodiments show NAME --q ... --out hand.png``."""
    import click

    @cli.group(name="embodiments")
    def embodiments() -> None:
        """Inspect hand embodiments."""

    @embodiments.command(name="show")
    @click.argument("name")
    @click.option(
        "--q",
        "joint_values",
        default=None,
        help="Comma-separated joint values (default: the middle of every range).",
    )
    @click.option("--side", type=click.Choice(["right", "left"]), default="right")
    @click.option("--out", "out_path", default=None, help="PNG path (default: NAME_SIDE.png).")
    def show(name: str, joint_values: str | None, side: str, out_path: str | None) -> None:
        """Write a PNG of hand NAME's links and fingertips at joint values --q."""
        import torch

        from metis_core.registry import EMBODIMENTS
        from metis_embodiments.render import render_hand

        hand = EMBODIMENTS.create(name, side=side)
        if joint_values is None:
            joints = hand.joint_limits.double().mean(-1)
        else:
            try:
                values = [float(v) for v in joint_values.replace(" ", "").split(",") if v]
            except ValueError as error:
                raise click.BadParameter(f"--q must be comma-separated numbers: {error}") from None
            if len(values) != hand.num_joints:
                raise click.BadParameter(
                    f"{name} has {hand.num_joints} joints {list(hand.joint_names)}, "
                    f"got {len(values)} values"
                )
            joints = torch.tensor(values, dtype=torch.float64)
        try:
            path = render_hand(hand, joints, out_path or f"{name}_{side}.png")
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
        click.echo(f"wrote {path}")
