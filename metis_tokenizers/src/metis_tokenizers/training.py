"""Training the motion tokenizer: progress bar, periodic checkpoints, exact resume, seeds.

A run directory holds, once finished, a loadable tokenizer (``config.json`` +
``model.safetensors``), ``training_log.jsonl`` (one JSON record per logging step, with codebook
health per level) and ``checkpoint/`` (the last checkpoint: model, optimiser, random states and
step). Starting again with the same directory resumes from the checkpoint and reproduces the
uninterrupted run exactly (step-based schedule; a wall-clock limit only decides where to stop).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metis_core.components import CONFIG_NAME, WEIGHTS_NAME
from metis_core.io import (
    atomic_directory,
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from metis_tokenizers.motion_generator import MotionWindows
from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig

__all__ = ["CodebookHealth", "TrainConfig", "TrainResult", "codebook_health", "train_motion_rvq"]

CHECKPOINT_DIR = "checkpoint"
LOG_NAME = "training_log.jsonl"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings.

    Args:
        steps: Optimiser steps.
        batch_size: Windows per step.
        learning_rate: Peak AdamW learning rate (linear warm-up, cosine decay to 5 %).
        warmup_steps: Warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip.
        seed: Seeds the model initialisation, batch order, k-means and dead-code sampling.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        log_every: Steps between log records.
        max_minutes: Stop early (and save) after this much wall-clock time; ``None``: no limit.
        threads: torch threads (``None``: leave as is).
        schedule_by_time: Drive the learning-rate schedule by the larger of step progress and
            elapsed fraction of ``max_minutes``, so that a time-limited run still anneals
            (benchmarks). Resuming such a run is not bit-exact.
        part_weights: Loss weights of the wrist position, wrist rotation and fingertip values
            (applied to the normalised squared errors).
    """

    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    max_minutes: float | None = None
    threads: int | None = None
    schedule_by_time: bool = False
    part_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.part_weights) != 3 or any(w < 0 for w in self.part_weights):
            raise ValueError(
                "part_weights: expected 3 non-negative weights (wrist position, wrist rotation, "
                f"fingertips), got {self.part_weights}"
            )
        for name in ("steps", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0:
            raise ValueError("warmup_steps and checkpoint_every must be >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.schedule_by_time and self.max_minutes is None:
            raise ValueError("schedule_by_time needs max_minutes")


@dataclass
class CodebookHealth:
    """Usage of the shared codebook at one quantiser level.

    Attributes:
        level: Level index (0 = coarsest).
        live_fraction: Fraction of codebook entries used at this level.
        perplexity: ``exp(entropy)`` of the code distribution at this level.
    """

    level: int
    live_fraction: float
    perplexity: float


def codebook_health(codes: torch.Tensor, codebook_size: int) -> list[CodebookHealth]:
    """Codebook health per level from codes ``(..., Q)`` (e.g. ``(B, H, L, Q)``)."""
    flat = codes.reshape(-1, codes.shape[-1])
    out = []
    for level in range(flat.shape[1]):
        counts = torch.bincount(flat[:, level], minlength=codebook_size).double()
        probs = counts / counts.sum().clamp_min(1)
        entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
        out.append(
            CodebookHealth(
                level=level,
                live_fraction=float((counts > 0).double().mean()),
                perplexity=float(entropy.exp()),
            )
        )
    return out


@dataclass
class TrainResult:
    """Outcome of :func:`train_motion_rvq`.

    Attributes:
        tokenizer: The trained tokenizer (eval mode).
        steps: Steps completed.
        final_loss: Mean reconstruction loss over the last logging interval.
        seconds: Wall-clock training time of this call.
        log: The log records written in this call.
    """

    tokenizer: MotionRVQ
    steps: int
    final_loss: float
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)


def _learning_rate(config: TrainConfig, step: int, elapsed_fraction: float = 0.0) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    progress = max(progress, elapsed_fraction)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.learning_rate * (0.05 + 0.95 * cosine)


def reconstruction_loss(
    output: Any, part_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> torch.Tensor:
    """Masked MSE over present hands and frames ``1 .. T-1`` of normalised relative features.

    Args:
        output: A :class:`~metis_tokenizers.motion_rvq.modeling_motion_rvq.MotionRVQOutput`.
        part_weights: Weights of the wrist position (3), wrist rotation (6) and fingertip (15)
            values of each hand; the loss is the weighted mean over the 24 values.
    """
    error = (output.reconstruction[:, :, 1:] - output.target[:, :, 1:]) ** 2
    per_value = error.new_tensor(
        [part_weights[0]] * 3 + [part_weights[1]] * 6 + [part_weights[2]] * 15
    )
    error = error * (per_value / per_value.mean())
    weight = output.present[:, :, None, None].to(error.dtype)
    return (error * weight).sum() / (weight.sum() * error.shape[2] * error.shape[3]).clamp_min(1)


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], Any]:
    state = optimizer.state_dict()
    tensors = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: Any) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": param_groups}


def _save_checkpoint(
    directory: Path,
    model: MotionRVQ,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    step: int,
    config: TrainConfig,
) -> None:
    tensors, groups = _flatten_optimizer(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = batch_generator.get_state()
    with atomic_directory(directory / CHECKPOINT_DIR, overwrite=True) as staging:
        model.save_pretrained(staging / "model")
        save_safetensors(staging / "trainer_state.safetensors", tensors)
        write_json(
            staging / "trainer_state.json",
            {"step": step, "param_groups": groups, "train_config": asdict(config)},
        )


def _save_final(model: MotionRVQ, run: Path) -> None:
    """Save the tokenizer into the run directory without touching its checkpoint and log."""
    staging = run / ".final.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    model.save_pretrained(staging)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        os.replace(staging / name, run / name)
    shutil.rmtree(staging)


def _windows_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, MotionWindows):
        return data.actions, data.hand_mask
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]).float(), torch.as_tensor(data[1]).bool()
    actions = torch.as_tensor(data).float()
    return actions, torch.ones(actions.shape[0], 2, dtype=torch.bool)


def train_motion_rvq(
    data: Any,
    out_dir: str | os.PathLike[str],
    *,
    model_config: MotionRVQConfig | None = None,
    train_config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train a :class:`MotionRVQ` on windows and save it to ``out_dir``.

    Args:
        data: :class:`MotionWindows`, ``(actions, hand_mask)`` or an ``(N, T, 48)`` array.
        out_dir: Run directory (created); resumed from if it holds a checkpoint and ``resume``.
        model_config: Tokenizer sizes (defaults: 40 tokens).
        train_config: Optimisation settings.
        resume: Continue from ``out_dir/checkpoint`` if present.
        progress: Show a tqdm progress bar.

    Returns:
        :class:`TrainResult`; the tokenizer is also saved in ``out_dir``.
    """
    train_config = train_config or TrainConfig()
    actions, hand_mask = _windows_tensors(data)
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    checkpoint = run / CHECKPOINT_DIR
    torch.manual_seed(train_config.seed)
    if resume and (checkpoint / "trainer_state.json").is_file():
        model = MotionRVQ.from_pretrained(checkpoint / "model")
        if model_config is not None and model_config != model.config:
            raise ValueError(
                f"{checkpoint} was trained with another model config; use a new out_dir or "
                "resume=False"
            )
        meta = read_json(checkpoint / "trainer_state.json")
        state = load_safetensors(checkpoint / "trainer_state.safetensors")
        start_step = int(meta["step"])
    else:
        model = MotionRVQ(model_config or MotionRVQConfig())
        model.fit_normalization(actions, hand_mask)
        meta, state, start_step = None, None, 0
    model.train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    batch_generator = torch.Generator().manual_seed(train_config.seed + 1)
    if state is not None and meta is not None:
        optimizer.load_state_dict(_unflatten_optimizer(state, meta["param_groups"]))
        torch.set_rng_state(state["rng.torch"])
        batch_generator.set_state(state["rng.batches"])

    codebook = model.quantizer.layers[0]._codebook
    threshold = model.config.dead_code_threshold
    began = time.monotonic()
    log: list[dict[str, Any]] = []
    recent_losses: list[float] = []
    recent_codes: list[torch.Tensor] = []
    replacements = 0
    step = start_step
    bar = tqdm(
        total=train_config.steps, initial=start_step, disable=not progress, desc="motion_rvq"
    )
    log_file = open(run / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
    try:
        while step < train_config.steps:
            elapsed_fraction = 0.0
            if train_config.max_minutes is not None:
                elapsed_fraction = (time.monotonic() - began) / (60.0 * train_config.max_minutes)
                if elapsed_fraction >= 1.0:
                    break
                if not train_config.schedule_by_time:
                    elapsed_fraction = 0.0
            index = torch.randint(
                0, actions.shape[0], (train_config.batch_size,), generator=batch_generator
            )
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(train_config, step, elapsed_fraction)
            if bool(codebook.initted) and threshold > 0:
                replacements += int((codebook.cluster_size < threshold).sum())
            output = model(actions[index], hand_mask[index])
            loss = reconstruction_loss(output, train_config.part_weights)
            optimizer.zero_grad(set_to_none=True)
            (loss + output.commit_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            step += 1
            recent_losses.append(float(loss.detach()))
            recent_codes.append(output.codes.detach()[output.present])
            bar.update(1)
            if step % train_config.log_every == 0 or step == train_config.steps:
                health = codebook_health(torch.cat(recent_codes), model.config.codebook_size)
                record = {
                    "step": step,
                    "loss": sum(recent_losses) / len(recent_losses),
                    "lr": optimizer.param_groups[0]["lr"],
                    "dead_code_replacements": replacements,
                    "codebook": [asdict(h) for h in health],
                }
                log.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    live="/".join(f"{h.live_fraction:.2f}" for h in health),
                )
                recent_losses, recent_codes, replacements = [], [], 0
            if train_config.checkpoint_every and step % train_config.checkpoint_every == 0:
                _save_checkpoint(run, model, optimizer, batch_generator, step, train_config)
    finally:
        bar.close()
        log_file.close()
    _save_checkpoint(run, model, optimizer, batch_generator, step, train_config)
    model.eval()
    _save_final(model, run)
    final = log[-1]["loss"] if log else (sum(recent_losses) / max(1, len(recent_losses)))
    return TrainResult(
        tokenizer=model,
        steps=step,
        final_loss=float(final),
        seconds=time.monotonic() - began,
        log=log,
    )
