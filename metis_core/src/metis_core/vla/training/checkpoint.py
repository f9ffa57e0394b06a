"""Training checkpoints: written atomically, kept last-N, resumed exactly.

A checkpoint is one directory ``OUT/checkpoints/step-SSSSSSSS/`` built under a temporary name
and renamed into place when complete (:func:`metis_core.io.atomic_directory`), so a killed run
never leaves a half-written one:

``trainer.json``
    Step, samples seen, the config (and its digest), the data fingerprint, the learning-rate
    schedule's position, world size, the LoRA report and the library version.
``weights.safetensors``
    The trained parameters (full tensors, also under FSDP), by name.
``optimizer.safetensors`` + ``optimizer.json``
    AdamW's state tensors (``NAME::exp_avg`` ...) and its parameter groups, keyed by parameter
    names (``torch.distributed.checkpoint.state_dict`` layout), so they load under another
    sharding.
``rng.safetensors`` + ``rng.json``
    Every process's torch (CPU and CUDA) generator states and Python/NumPy states.
``normalization.json``
    The statistics the run trains with.

Nothing is pickled. :func:`latest_checkpoint` finds the newest complete one.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.io import (
    atomic_directory,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)

__all__ = [
    "CHECKPOINT_DIR",
    "latest_checkpoint",
    "list_checkpoints",
    "optimizer_from_tensors",
    "optimizer_to_tensors",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
    "write_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of the complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and child.is_dir() and (child / "trainer.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Remove all but the newest ``keep_last`` checkpoints (and temporaries of killed writes);
    returns what was removed."""
    removed = []
    found = list_checkpoints(output_dir)
    for _, path in found[: max(len(found) - keep_last, 0)]:
        shutil.rmtree(path)
        removed.append(path)
    root = Path(output_dir) / CHECKPOINT_DIR
    if root.is_dir():
        for child in root.iterdir():
            # atomic_directory's staging names: ".step-XXXXXXXX.<random>.tmp" / ".old"
            if child.name.startswith(".step-") and child.name.endswith((".tmp", ".old")):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
    return removed


# -- optimizer state --------------------------------------------------------------------------


def optimizer_to_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a (full, name-keyed) optimizer state dict into tensors and a JSON structure."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for name, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}::{key}"] = value.detach().cpu()
            else:
                scalars.setdefault(name, {})[key] = value
    structure = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, structure


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], structure: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The inverse of :func:`optimizer_to_tensors`."""
    state: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        name, _, field = key.rpartition("::")
        state.setdefault(name, {})[field] = value
    for name, entry in structure.get("scalars", {}).items():
        state.setdefault(name, {}).update(entry)
    return {"state": state, "param_groups": structure["param_groups"]}


# -- random generators ------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's generator states: tensors (torch) and JSON (Python, NumPy)."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, value in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = value
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)  # noqa: NPY002 - the global state is what is saved
    data = {
        "python": [version, list(internal), gauss],
        "numpy": json.loads(
            json.dumps(
                numpy_state, default=lambda o: o.tolist() if hasattr(o, "tolist") else int(o)
            )
        ),
    }
    return tensors, data


def set_rng_state(tensors: dict[str, torch.Tensor], data: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))  # fmt: skip
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    state = dict(data["numpy"])
    state["state"] = {**state["state"], "key": np.asarray(state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(state)  # noqa: NPY002


# -- writing ----------------------------------------------------------------------------------


def write_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    trainer: dict[str, Any],
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    rng: list[tuple[dict[str, torch.Tensor], dict[str, Any]]],
    normalization: dict[str, Any],
) -> Path:
    """Write one checkpoint atomically (rank 0 only); returns its directory."""
    target = Path(output_dir) / CHECKPOINT_DIR / f"step-{step:08d}"
    opt_tensors, opt_structure = optimizer_to_tensors(optimizer)
    rng_tensors: dict[str, torch.Tensor] = {}
    rng_json: list[dict[str, Any]] = []
    for rank, (tensors, data) in enumerate(rng):
        for key, value in tensors.items():
            rng_tensors[f"rank{rank}.{key}"] = value
        rng_json.append(data)
    with atomic_directory(target, overwrite=True) as staging:
        save_safetensors(staging / "weights.safetensors", weights)
        save_safetensors(staging / "optimizer.safetensors", opt_tensors)
        write_json(staging / "optimizer.json", opt_structure)
        save_safetensors(staging / "rng.safetensors", rng_tensors)
        write_json(staging / "rng.json", rng_json)
        write_json(staging / "normalization.json", normalization)
        write_json(staging / "trainer.json", trainer)  # last: marks the checkpoint complete
    return target


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Everything :func:`write_checkpoint` wrote (weights and optimizer tensors included)."""
    path = Path(path)
    rng_tensors = load_safetensors(path / "rng.safetensors")
    rng_json = read_json(path / "rng.json")
    per_rank = []
    for rank, data in enumerate(rng_json):
        prefix = f"rank{rank}."
        per_rank.append(({k[len(prefix) :]: v for k, v in rng_tensors.items() if k.startswith(prefix)}, data))  # fmt: skip
    return {
        "trainer": read_json(path / "trainer.json"),
        "weights": load_safetensors(path / "weights.safetensors"),
        "optimizer": optimizer_from_tensors(
            load_safetensors(path / "optimizer.safetensors"), read_json(path / "optimizer.json")
        ),
        "rng": per_rank,
        "normalization": read_json(path / "normalization.json"),
    }
