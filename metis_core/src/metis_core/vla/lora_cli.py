"""``metis lora``: merge LoRA adapters into a full checkpoint, print what LoRA trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

__all__ = ["lora_command"]

_DTYPES = ("keep", "float32", "bfloat16")


def _probe(policy: Any) -> Any:
    """A deterministic prediction (greedy) on a fixed random image and a zero state."""
    import numpy as np

    height, width = policy.backbone.image_size
    image = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    state = np.zeros(48, dtype=np.float32)
    try:
        key = policy.normalization.resolve_key(None)
    except KeyError:  # several datasets' statistics and no default: any one will do
        key = sorted(policy.normalization.stats)[0]
    return policy.predict_action(image, "pick up the object", state, unnorm_key=key, temperature=0.0)  # fmt: skip


def _shapes_only(checkpoint: Path) -> Any:
    """The backbone and action head a full checkpoint describes, built on the meta device (no
    memory, no weights read), on a bare module: enough for :func:`apply_lora`'s report."""
    import torch
    from torch import nn

    from metis_core.io import read_json
    from metis_core.registry import ACTION_HEADS, BACKBONES
    from metis_core.vla.configuration_metis import MetisConfig
    from metis_core.vla.modeling_metis import CONFIG_FILE

    config_file = checkpoint / CONFIG_FILE
    if not config_file.is_file():
        raise click.ClickException(f"{checkpoint} is neither a METIS checkpoint nor an adapter")
    config = MetisConfig.from_dict(read_json(config_file))
    shell = nn.Module()
    with torch.device("meta"):
        shell.backbone = BACKBONES.get(config.backbone).from_config(dict(config.backbone_config))
        head = {"input_dim": shell.backbone.hidden_size, "chunk_len": config.chunk_len, **config.action_head_config}  # fmt: skip
        shell.action_head = ACTION_HEADS.get(config.action_head).from_config(head)
    return shell


@click.group(name="lora")
def lora_command() -> None:
    """LoRA post-training adapters: merge them, report what is trained."""


@lora_command.command("merge")
@click.argument("adapter_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--base",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Base checkpoint (default: the path the adapter records).",
)
@click.option(
    "--dtype",
    type=click.Choice(_DTYPES),
    default="keep",
    show_default=True,
    help="Backbone dtype of the merged checkpoint (the merge itself is in float32).",
)
@click.option("--probe/--no-probe", default=True, show_default=True, help="Compare one greedy prediction before and after merging.")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace OUT_DIR if it exists.")
def merge_command(
    adapter_dir: Path, out_dir: Path, base: Path | None, dtype: str, probe: bool, overwrite: bool
) -> None:
    """Merge the adapters of ADAPTER_DIR into their base and write a full checkpoint to OUT_DIR."""
    import numpy as np
    import torch

    from metis_core.vla.lora import load_lora_policy, lora_report, merge_lora

    if out_dir.exists() and not overwrite:
        raise click.UsageError(f"{out_dir} exists; pass --overwrite to replace it")
    policy = load_lora_policy(adapter_dir, base=base)
    click.echo(lora_report(policy).table())
    before = _probe(policy) if probe else None
    merge_lora(policy, dtype=None if dtype == "keep" else getattr(torch, dtype))
    after = _probe(policy) if probe else None
    counts = policy.parameter_counts()
    click.echo("merged parameters: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if before is not None and after is not None:
        delta = float(np.abs(before.actions.astype(np.float64) - after.actions).max())
        same = bool(np.array_equal(before.motion_codes, after.motion_codes)) and bool(np.array_equal(before.visual_codes, after.visual_codes))  # fmt: skip
        click.echo(f"probe: max |Δaction| merged vs unmerged = {delta:.3g} (same codes: {same})")
    policy.save_pretrained(out_dir, overwrite=overwrite)
    click.echo(f"wrote {out_dir}")


@lora_command.command("report")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--r", "rank", type=int, default=None, help="LoRA rank (full checkpoints; default 32)."
)
@click.option("--alpha", type=float, default=None, help="lora_alpha (default min(r, 16)).")
@click.option("--components", default=None, help="Comma-separated components (default llm,dino,siglip,projector).")  # fmt: skip
@click.option("--no-lm-head", is_flag=True, help="Leave lm_head out.")
def report_command(
    checkpoint: Path,
    rank: int | None,
    alpha: float | None,
    components: str | None,
    no_lm_head: bool,
) -> None:
    """Print the trainable-parameter table of an adapter (from its lora.json) or of LoRA on a
    full checkpoint (built without loading its weights)."""
    from metis_core.vla.lora import (
        LoraReport,
        LoraSpec,
        apply_lora,
        is_lora_adapter,
        read_lora_meta,
    )

    if is_lora_adapter(checkpoint):
        if rank is not None or alpha is not None or components or no_lm_head:
            raise click.UsageError("options apply to full checkpoints; an adapter has its own spec")
        click.echo(LoraReport.from_dict(read_lora_meta(checkpoint)["report"]).table())
        return
    fields: dict[str, Any] = {"include_lm_head": not no_lm_head}
    if rank is not None:
        fields["r"] = rank
    if alpha is not None:
        fields["alpha"] = alpha
    if components:
        fields["components"] = tuple(c.strip() for c in components.split(",") if c.strip())
    try:
        spec = LoraSpec(**fields)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    policy = _shapes_only(checkpoint)
    try:
        report = apply_lora(policy, spec)
    except ValueError as err:
        raise click.ClickException(str(err)) from err
    click.echo(report.table())
