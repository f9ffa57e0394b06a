"""``metis annotate DATASET --motion DIR --visual DIR``: store the dynamics codes of every frame."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["annotate_command"]


@click.command("annotate")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--motion", "motion_dir", required=True, type=click.Path(path_type=Path), help="Trained motion_rvq tokenizer directory.")  # fmt: skip
@click.option("--visual", "visual_dir", required=True, type=click.Path(path_type=Path), help="Trained visual_dynamics_vq run directory (with its feature_extractor/).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(1, None), default=64, show_default=True, help="Frames per tokenizer call.")  # fmt: skip
@click.option("--workers", type=click.IntRange(0, 256), default=0, show_default=True, help="Worker processes decoding videos (0: decode in this process).")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="torch threads [default: half the idle cores, 1-4].")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Recompute codes stored with other tokenizers.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def annotate_command(
    dataset: Path,
    motion_dir: Path,
    visual_dir: Path,
    batch_size: int,
    workers: int,
    threads: int | None,
    overwrite: bool,
    no_progress: bool,
) -> None:
    """Compute the dynamics codes (visual then motion) of every frame of DATASET and store them.

    Atomic and resumable: re-run the same command after a kill to continue. A dataset already
    annotated with the same tokenizers is left as it is.
    """
    import torch

    from metis_core.errors import MetisError
    from metis_core.threads import choose_threads
    from metis_core.vla.annotate import annotate_dataset, load_annotation_tokenizers

    choice = choose_threads(threads, hint="--threads")
    torch.set_num_threads(choice.threads)
    click.echo(f"metis annotate: using {choice.reason}")
    if not dataset.is_dir():
        raise click.ClickException(f"DATASET {dataset}: no such directory (expected a LeRobot v3.0 dataset)")  # fmt: skip
    try:
        motion, visual, extractor = load_annotation_tokenizers(motion_dir, visual_dir)
        report: dict = {}
        annotate_dataset(
            dataset,
            motion_tokenizer=motion,
            visual_tokenizer=visual,
            feature_extractor=extractor,
            batch_size=batch_size,
            workers=workers,
            overwrite=overwrite,
            progress=not no_progress,
            report=report,
        )
    except (OSError, ValueError, RuntimeError, LookupError, MetisError) as err:
        raise click.ClickException(str(err)) from None
    seconds, computed = report["seconds"], report["frames_computed"]
    if computed == 0 and report["frames"]:
        click.echo(f"metis annotate: {dataset}: no frames to compute: it holds the dynamics codes of these tokenizers ({report['frames']} frames; {seconds:.1f} s)")  # fmt: skip
        return
    rate = computed / seconds if seconds > 0 else float("inf")
    click.echo(f"metis annotate: {dataset}: annotated {computed} frames ({report['episodes_computed']} episodes; {report['frames']} in the dataset) in {seconds:.1f} s, {rate:.1f} frames/s")  # fmt: skip
