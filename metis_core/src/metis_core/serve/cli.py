"""``metis serve CHECKPOINT``: serve a saved policy over ``POST /act`` (FastAPI + uvicorn)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

__all__ = ["load_checkpoint", "serve_command"]


def load_checkpoint(
    path: str | Path,
    *,
    preset: str | None = None,
    device: str = "cpu",
    unnorm_key: str | None = None,
) -> Any:
    """A policy from a directory: a ``MetisPolicy.save_pretrained`` one, or the authors'
    release layout (``action_decoder.pt`` beside merged weights) through the ``metis_release``
    preset.

    Args:
        path: The checkpoint directory.
        preset: ``"metis_release"`` to force the release loader; ``None`` to detect it.
        device: Where to put the model.
        unnorm_key: The statistics key of a release checkpoint with several datasets (its
            loader needs it to choose the statistics).

    Raises:
        FileNotFoundError: For a path that is not a directory (it is never sent to a hub).
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such checkpoint directory: {directory}")
    from metis_core.vla import MetisPolicy

    release = None
    try:
        from metis_core.vla import release
    except ImportError:  # pragma: no cover - a build without the release loader
        release = None
    if preset not in (None, "metis_release"):
        raise ValueError(f"--preset must be 'metis_release' or omitted, got {preset!r}")
    if release is not None and (preset == "metis_release" or release.is_metis_release(directory)):
        policy = release.load_metis_release(directory, unnorm_key=unnorm_key)
    elif preset == "metis_release":
        raise RuntimeError("this build of metis-core has no metis_release loader")
    else:
        policy = MetisPolicy.from_pretrained(directory)
    return policy.to(device).eval()


@click.command("serve")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; 0.0.0.0 to be reachable from a robot on the network.")  # fmt: skip
@click.option("--port", default=8777, show_default=True, type=click.IntRange(1, 65535), help="TCP port (the authors' and OpenVLA-OFT's).")  # fmt: skip
@click.option("--embodiment", default=None, help="Hand (registry name) for joint commands in every answer; a request may name one too.")  # fmt: skip
@click.option("--unnorm-key", default=None, help="Statistics key for checkpoints trained on several datasets.")  # fmt: skip
@click.option("--preset", type=click.Choice(["metis_release"]), default=None, help="Force the loader of the authors' release layout (detected otherwise).")  # fmt: skip
@click.option("--device", default="cpu", show_default=True, help="torch device of the model, e.g. cuda.")  # fmt: skip
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="torch threads [default: half the idle cores, 1-4].")  # fmt: skip
@click.option("--legacy-errors", is_flag=True, help="Answer failures as the authors' server does: the string \"error\" with HTTP 200.")  # fmt: skip
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)  # fmt: skip
def serve_command(
    checkpoint: Path,
    host: str,
    port: int,
    embodiment: str | None,
    unnorm_key: str | None,
    preset: str | None,
    device: str,
    threads: int | None,
    legacy_errors: bool,
    log_level: str,
) -> None:
    """Serve the policy in CHECKPOINT at POST /act (json-numpy), with /health and /metrics."""
    import torch

    from metis_core.errors import MetisError
    from metis_core.serve.app import run_server
    from metis_core.serve.service import ServerConfig
    from metis_core.threads import choose_threads

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")  # fmt: skip
    choice = choose_threads(threads, hint="--threads")
    torch.set_num_threads(choice.threads)
    click.echo(f"metis serve: using {choice.reason}")
    try:
        policy = load_checkpoint(checkpoint, preset=preset, device=device, unnorm_key=unnorm_key)
    except (OSError, ValueError, RuntimeError, LookupError, MetisError) as err:
        raise click.ClickException(str(err)) from None
    config = ServerConfig(host=host, port=port, embodiment=embodiment, unnorm_key=unnorm_key, legacy_errors=legacy_errors)  # fmt: skip
    click.echo(f"metis serve: {checkpoint} at http://{host}:{port}/act (GET /health, /metrics)")
    run_server(policy, config, log_level=log_level)
