"""The ``metis-tokenizers`` command line: train and evaluate tokenizers.

Examples::

    metis-tokenizers generate windows.safetensors --count 20000
    metis-tokenizers train motion_rvq --data windows.safetensors --out runs/rvq --steps 2000
    metis-tokenizers eval runs/rvq --data heldout.safetensors
    metis-tokenizers train visual_dynamics_vq --data lerobot_dir --out runs/vd \
        --motion runs/rvq --features /models/dinov2-large --config '{"frame_gap": 30}'
    metis-tokenizers eval runs/vd --data heldout_lerobot_dir
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from metis_core.components import load_component
from metis_core.registry import TOKENIZERS

__all__ = ["main"]

THREADS_HELP = (
    "torch threads [default: half the idle cores, 1-4, printed at the start; small models "
    "slow down 4-30x when their threads compete with other work]."
)


@click.group()
def main() -> None:
    """Train, evaluate and inspect METIS action tokenizers."""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--count", default=20000, show_default=True, help="Windows to generate.")
@click.option("--window-len", default=16, show_default=True)
@click.option("--split", default="train", show_default=True, help="train, heldout or test.")
@click.option("--seed", default=0, show_default=True)
def generate(path: str, count: int, window_len: int, split: str, seed: int) -> None:
    """Write synthetic manipulation windows to PATH (.npz or .safetensors)."""
    from metis_tokenizers.data import save_windows
    from metis_tokenizers.motion_generator import generate_motion_windows

    windows = generate_motion_windows(count, window_len=window_len, seed=seed, split=split)
    save_windows(path, windows)
    click.echo(f"wrote {count} windows of {window_len} frames to {path}")


@main.command()
@click.argument("name")
@click.option("--data", "data_path", required=True, help="Array file of windows or LeRobot dir.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option(
    "--steps",
    default=None,
    type=int,
    help="Optimiser steps [default: 2000; with --max-minutes, as many as the time allows].",
)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", "learning_rate", default=2e-3, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--warmup-steps",
    default=None,
    type=int,
    help="Linear learning-rate warm-up [default: 5 % of the steps, at most 100].",
)
@click.option("--threads", default=None, type=int, help=THREADS_HELP)
@click.option(
    "--part-weights",
    default="2,2,1",
    show_default=True,
    help="motion_rvq: loss weights of wrist position, wrist rotation and fingertips.",
)
@click.option("--checkpoint-every", default=500, show_default=True)
@click.option(
    "--max-minutes",
    default=None,
    type=float,
    help="Stop (and save) after this long; the learning-rate schedule then follows the clock.",
)
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds a checkpoint.")
@click.option(
    "--config", "config_json", default=None, help="JSON object of tokenizer config fields."
)
@click.option(
    "--motion",
    "motion_dir",
    default=None,
    help="visual_dynamics_vq: directory of the trained motion_rvq whose encoder it reads.",
)
@click.option(
    "--features",
    default="tiny",
    show_default=True,
    help="visual_dynamics_vq: feature extractor: a local DINOv2 directory, a .json DINOv2 "
    "config (random weights) or 'tiny' (random-weight toy model).",
)
@click.option(
    "--stride", default=1, show_default=True, help="visual_dynamics_vq: frames between pairs."
)
@click.option(
    "--feature-cache", default=None, help="visual_dynamics_vq: keep patch features on disk here."
)
def train(
    name: str,
    data_path: str,
    out_dir: str,
    steps: int | None,
    batch_size: int,
    learning_rate: float,
    seed: int,
    warmup_steps: int | None,
    threads: int | None,
    part_weights: str,
    checkpoint_every: int,
    max_minutes: float | None,
    no_resume: bool,
    config_json: str | None,
    motion_dir: str | None,
    features: str,
    stride: int,
    feature_cache: str | None,
) -> None:
    """Train (motion_rvq, visual_dynamics_vq) or fit (binning, dct_bpe) NAME on --data.

    visual_dynamics_vq reads frame pairs from a LeRobot dataset (--data) and needs --motion.
    """
    from metis_tokenizers.data import load_windows

    fields = json.loads(config_json) if config_json else {}
    optimisation = {
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "warmup_steps": warmup_steps,
        "threads": threads,
        "checkpoint_every": checkpoint_every,
        "max_minutes": max_minutes,
    }
    if name == "visual_dynamics_vq":
        from metis_tokenizers.training import TrainConfig
        from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import (
            train_on_dataset,
        )

        vd_result, pairs = train_on_dataset(
            data_path,
            out_dir,
            features=features,
            motion=motion_dir,
            config_fields=fields,
            train_config=TrainConfig(**optimisation),
            stride=stride,
            cache_dir=feature_cache,
            resume=not no_resume,
        )
        click.echo(
            f"trained {name} on {len(pairs)} frame pairs for {vd_result.steps} steps in "
            f"{vd_result.seconds:.0f} s (loss {vd_result.final_loss:.4f}, 'no change' "
            f"{vd_result.final_baseline_loss:.4f}); saved to {out_dir}"
        )
        return
    cls = TOKENIZERS.get(name)
    config = cls.config_class(**fields)
    windows = load_windows(
        data_path,
        window_len=getattr(config, "window_len", None),
        window_seconds=getattr(config, "window_seconds", None),
    )
    if name == "motion_rvq":
        from metis_tokenizers.training import TrainConfig, train_motion_rvq

        try:
            weights = tuple(float(w) for w in part_weights.split(","))
            if len(weights) != 3 or min(weights) < 0:
                raise ValueError
        except ValueError:
            raise click.BadParameter(
                f"expected three comma-separated non-negative numbers, got {part_weights!r}",
                param_hint="--part-weights",
            ) from None

        try:
            result = train_motion_rvq(
                windows,
                out_dir,
                model_config=config,
                train_config=TrainConfig(**optimisation, part_weights=weights),
                resume=not no_resume,
                progress=True,
            )
        except ValueError as err:
            raise click.ClickException(str(err)) from None
        click.echo(
            f"trained {name} for {result.steps} steps in {result.seconds:.0f} s "
            f"(loss {result.final_loss:.4f}); saved to {out_dir}"
        )
        return
    if not hasattr(cls, "fit"):
        raise click.ClickException(f"{name} has no fit method; it cannot be trained here")
    tokenizer = cls(config)
    tokenizer.fit(windows.actions, windows.hand_mask)
    tokenizer.save_pretrained(out_dir)
    click.echo(f"fitted {name} on {windows.actions.shape[0]} windows; saved to {out_dir}")


@main.command(name="eval")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_path", required=True, help="Array file of windows or LeRobot dir.")
@click.option("--plot", "plot_path", default=None, help="PNG path (default DIRECTORY/eval.png).")
@click.option("--json", "json_path", default=None, help="Also write the report as JSON here.")
@click.option(
    "--stride", default=1, show_default=True, help="visual_dynamics_vq: frames between pairs."
)
@click.option("--threads", default=None, type=int, help=THREADS_HELP)
@click.option(
    "--levels",
    default=None,
    type=int,
    help="motion_rvq: decode from the first LEVELS residual levels only (coarse-to-fine).",
)
def evaluate(
    directory: str,
    data_path: str,
    plot_path: str | None,
    json_path: str | None,
    stride: int,
    threads: int | None,
    levels: int | None,
) -> None:
    """Evaluate the tokenizer saved in DIRECTORY on --data windows (or frame pairs)."""
    import torch

    from metis_tokenizers.data import load_windows
    from metis_tokenizers.evaluation import evaluate_tokenizer, plot_reconstruction
    from metis_tokenizers.training import choose_threads

    choice = choose_threads(threads)
    torch.set_num_threads(choice.threads)
    click.echo(f"using {choice.reason}")

    tokenizer = load_component(directory)
    if tokenizer.name == "visual_dynamics_vq":
        from metis_tokenizers.visual_dynamics_vq.evaluation_visual_dynamics_vq import (
            plot_visual_dynamics_report,
        )
        from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import (
            evaluate_on_dataset,
        )

        vd_report = evaluate_on_dataset(directory, data_path, stride=stride)
        vd_plot = Path(plot_path) if plot_path else Path(directory) / "eval.png"
        plot_visual_dynamics_report(vd_report, vd_plot, title=f"visual_dynamics_vq: {data_path}")
        click.echo(vd_report.summary() + f"\nplot                     {vd_plot}")
        if json_path:
            Path(json_path).write_text(json.dumps(vd_report.to_dict(), indent=2))
        return
    windows = load_windows(
        data_path,
        window_len=getattr(tokenizer.config, "window_len", None),
        window_seconds=getattr(tokenizer.config, "window_seconds", None),
    )
    report = evaluate_tokenizer(tokenizer, windows, levels=levels)
    lines = [
        f"tokenizer            {report.tokenizer}",
        f"windows              {report.windows}",
        f"tokens per window    {report.tokens_per_window:.1f} "
        f"({'fixed' if report.fixed_length else f'{report.tokens_min}-{report.tokens_max}'})",
        f"wrist position       {report.wrist_position_mm:.2f} mm",
        f"wrist rotation       {report.wrist_rotation_deg:.2f} deg",
        f"fingertips           {report.fingertip_mm:.2f} mm",
        f"normalised MSE       {report.nmse:.4f}",
    ]
    for size in report.encode_ms:
        lines.append(
            f"encode / decode      {report.encode_ms[size]:.2f} / {report.decode_ms[size]:.2f} ms "
            f"at batch {size}"
        )
    for level in report.codebook:
        lines.append(
            f"codebook level {int(level['level'])}     {100 * level['live_fraction']:.1f} % live, "
            f"perplexity {level['perplexity']:.1f}"
        )
    first = windows.actions[:1]
    codes = tokenizer.encode(first, windows.hand_mask[:1])
    decoded = tokenizer.decode(codes, first[:, 0])
    target = Path(plot_path) if plot_path else Path(directory) / "eval.png"
    plot_reconstruction(first[0], decoded[0], target, title=f"{report.tokenizer}: window 0")
    lines.append(f"plot                 {target}")
    click.echo("\n".join(lines))
    if json_path:
        Path(json_path).write_text(json.dumps(report.to_dict(), indent=2))


@main.command(name="list")
def list_tokenizers() -> None:
    """List the registered tokenizers."""
    for name in TOKENIZERS.names():
        click.echo(name)


if __name__ == "__main__":  # pragma: no cover
    main()
