"""``metis train CONFIG [key=value ...]``: run a training recipe, in one process or under torchrun.

Examples::

    metis train pretrain_tiny -o runs/pre data.datasets.synthetic=data/syn \\
        model.motion_tokenizer=runs/motion model.visual_tokenizer=runs/visual
    metis train posttrain_tiny -o runs/post model.init_from=runs/pre data.datasets.robot=data/robot
    torchrun --nproc_per_node=2 -m metis_core.vla.training.cli pretrain_tiny -o runs/ddp ...
"""

from __future__ import annotations

import json
import sys

import click

__all__ = ["main", "train_command"]


@click.command("train", context_settings={"ignore_unknown_options": True})
@click.argument("config")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("-o", "--output", "output", default=None, help="Run directory (logs, checkpoints, final/); default run.output_dir.")  # fmt: skip
@click.option("--no-resume", is_flag=True, help="Never continue an earlier run: fail if the run directory already holds checkpoints (nothing is overwritten; choose another -o). Default: resume from the newest checkpoint.")  # fmt: skip
@click.option("--print-config", is_flag=True, help="Print the resolved config as JSON and exit.")
def train_command(config: str, overrides: tuple[str, ...], output: str | None, no_resume: bool, print_config: bool) -> None:  # fmt: skip
    """Train the METIS policy with CONFIG (a recipe name: pretrain, posttrain, pretrain_tiny,
    posttrain_tiny; or a .yaml/.json file) changed by key=value OVERRIDES (e.g. optim.lr=1e-4
    run.max_steps=200 data.datasets.NAME=PATH). Under torchrun every process runs this command."""
    from metis_core.config import ComponentConfigError
    from metis_core.vla.training.config import load_config

    try:
        resolved = load_config(config, list(overrides))
    except (ComponentConfigError, ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if print_config:
        click.echo(json.dumps(resolved.to_dict(), indent=2))
        return
    from metis_core.vla.training.trainer import ResumeMismatchError, Trainer

    try:
        trainer = Trainer(resolved, output, resume=not no_resume)
        if no_resume:
            from metis_core.vla.training.checkpoint import latest_checkpoint

            if latest_checkpoint(trainer.output_dir) is not None:
                raise click.ClickException(f"{trainer.output_dir} already holds checkpoints; --no-resume will not overwrite them: choose another -o")  # fmt: skip
        result = trainer.run()
    except ResumeMismatchError as err:
        raise click.ClickException(str(err)) from None
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    if not trainer.is_main:
        return
    if result.resumed_from is not None and result.resumed_from >= result.steps:
        click.echo(f"the run in {result.output_dir} had finished (step {result.steps}): evaluated and exported again")  # fmt: skip
    else:
        metrics = result.final_metrics
        click.echo(
            f"trained {result.steps} steps in {result.seconds:.0f} s"
            + (f" (resumed at step {result.resumed_from})" if result.resumed_from else "")
            + f": loss {metrics.get('loss', float('nan')):.4f} (next-token {metrics.get('token_loss', float('nan')):.4f}, action {metrics.get('action_loss', float('nan')):.4f})"
        )
    if result.evaluation:
        click.echo("held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in result.evaluation.items()))  # fmt: skip
    click.echo(f"policy: {result.export}" + (f"; adapters: {result.adapter}" if result.adapter else ""))  # fmt: skip


def main() -> None:
    """``python -m metis_core.vla.training.cli`` (what torchrun runs)."""
    train_command.main(args=sys.argv[1:], prog_name="metis train")


if __name__ == "__main__":
    main()
