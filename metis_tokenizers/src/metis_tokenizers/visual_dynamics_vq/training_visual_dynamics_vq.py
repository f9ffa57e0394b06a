"""Training the visual-dynamics tokenizer: progress bar, checkpoints, exact resume, seeds.

The loss is the mean squared error between predicted and true patch features of frame ``t+k``
(normalised per channel by statistics fitted on the training frames) plus the VQ commitment
loss; the motion tokenizer inside stays frozen. A run directory holds, once finished, a loadable
tokenizer (``config.json`` + ``model.safetensors``), ``feature_extractor/`` (the extractor the
features came from, so evaluation computes the same features), ``training_log.jsonl`` (loss,
the "no change" baseline on the same batches, code usage and perplexity) and ``checkpoint/``.
Starting again with the same directory resumes from the checkpoint and reproduces the
uninterrupted run exactly.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metis_core.io import (
    load_safetensors,
    read_json,
    save_safetensors,
    write_json,
)
from metis_tokenizers.features import FeatureExtractor
from metis_tokenizers.motion_rvq import MotionRVQ
from metis_tokenizers.training import (
    RESUMABLE_CHANGES,
    TrainConfig,
    _read_log,
    _rewrite_log,
    _save_version,
    recover_run_directory,
)
from metis_tokenizers.training import _save_final as _save_final_atomically
from metis_tokenizers.visual_dynamics_vq.configuration_visual_dynamics_vq import (
    VisualDynamicsVQConfig,
)
from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import FramePairs
from metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq import (
    VisualDynamicsVQ,
    VisualDynamicsVQOutput,
)

__all__ = [
    "EXTRACTOR_DIR",
    "VisualDynamicsTrainResult",
    "code_statistics",
    "prediction_loss",
    "train_visual_dynamics_vq",
]

CHECKPOINT_DIR = "checkpoint"
EXTRACTOR_DIR = "feature_extractor"
LOG_NAME = "training_log.jsonl"


def prediction_loss(output: VisualDynamicsVQOutput) -> torch.Tensor:
    """MSE between predicted and true normalised features of frame ``t+k``."""
    return torch.mean((output.prediction - output.target) ** 2)


def code_statistics(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Usage of a codebook by a set of codes.

    Args:
        codes: Integer codes of any shape.
        codebook_size: Entries of the codebook.

    Returns:
        ``codes_used`` (distinct codes seen), ``usage`` (their fraction of the codebook) and
        ``perplexity`` (``exp`` of the entropy of the code distribution; ``codebook_size`` when
        all codes are equally frequent).
    """
    counts = torch.bincount(codes.reshape(-1).long(), minlength=codebook_size).double()
    probs = counts / counts.sum().clamp_min(1)
    nonzero = probs[probs > 0]
    used = int((counts > 0).sum())
    return {
        "codes_used": used,
        "usage": used / codebook_size,
        "perplexity": float((-(nonzero * nonzero.log()).sum()).exp()),
    }


@dataclass
class VisualDynamicsTrainResult:
    """Outcome of :func:`train_visual_dynamics_vq`.

    Attributes:
        tokenizer: The trained tokenizer (eval mode).
        steps: Steps completed.
        final_loss: Mean prediction loss over the last logging interval.
        final_baseline_loss: The "no change" loss on the same batches.
        seconds: Wall-clock training time of this call.
        log: The log records written in this call.
    """

    tokenizer: VisualDynamicsVQ
    steps: int
    final_loss: float
    final_baseline_loss: float
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)


def _learning_rate(config: TrainConfig, step: int) -> float:
    if step < config.warmup:
        return config.learning_rate * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.total_steps - config.warmup)
    return config.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _save_checkpoint(
    run: Path,
    model: VisualDynamicsVQ,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    step: int,
    config: TrainConfig,
) -> None:
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{key}": torch.as_tensor(value)
        for index, values in state["state"].items()
        for key, value in values.items()
    }
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = batch_generator.get_state()

    def fill(staging: Path) -> None:
        model.save_pretrained(staging / "model")
        save_safetensors(staging / "trainer_state.safetensors", tensors)
        write_json(
            staging / "trainer_state.json",
            {"step": step, "param_groups": state["param_groups"], "train_config": asdict(config)},
        )

    # One atomic switch (see metis_tokenizers.training): a kill never loses the checkpoint.
    _save_version(run, CHECKPOINT_DIR, fill)


def _load_optimizer_state(tensors: dict[str, torch.Tensor], groups: Any) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


def _save_final(model: VisualDynamicsVQ, run: Path) -> None:
    _save_final_atomically(model, run)  # type: ignore[arg-type]


def train_visual_dynamics_vq(
    pairs: FramePairs,
    out_dir: str | os.PathLike[str],
    *,
    model_config: VisualDynamicsVQConfig,
    motion_tokenizer: MotionRVQ | None = None,
    extractor: FeatureExtractor | None = None,
    train_config: TrainConfig | None = None,
    resume: bool = True,
    progress: bool = True,
) -> VisualDynamicsTrainResult:
    """Train a :class:`VisualDynamicsVQ` on frame pairs and save it to ``out_dir``.

    Args:
        pairs: Training pairs (see :func:`~metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq.load_frame_pairs`).
        out_dir: Run directory (created); resumed from if it holds a checkpoint and ``resume``.
        model_config: Tokenizer sizes; ``feature_dim``/``num_patches`` must match the features
            and ``frame_gap`` the pairs.
        motion_tokenizer: The trained motion tokenizer whose encoder supplies motion features
            (required unless ``model_config.motion`` is ``None``).
        extractor: The extractor the features came from; saved into ``out_dir/feature_extractor``.
        train_config: Optimisation settings (:class:`~metis_tokenizers.training.TrainConfig`).
        resume: Continue from ``out_dir/checkpoint`` if present.
        progress: Show a tqdm progress bar.

    Raises:
        ValueError: If the config does not match the pairs, or a needed motion tokenizer is
            missing.
    """
    train_config = train_config or TrainConfig(learning_rate=1e-3, batch_size=64)
    c = model_config
    shape = tuple(pairs.frame_features.shape[1:])
    if shape != (c.num_patches, c.feature_dim):
        raise ValueError(
            f"the pairs' features are {shape} (patches, channels) but the config expects "
            f"({c.num_patches}, {c.feature_dim}); set num_patches/feature_dim from the extractor"
        )
    if pairs.frame_gap != c.frame_gap:
        raise ValueError(
            f"the pairs were built with frame_gap={pairs.frame_gap}, the config says {c.frame_gap}"
        )
    if c.motion is not None and pairs.actions.shape[1] != c.motion.window_len:
        raise ValueError(
            f"the pairs' motion windows have {pairs.actions.shape[1]} frames, the motion "
            f"tokenizer takes {c.motion.window_len}"
        )
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    checkpoint = run / CHECKPOINT_DIR
    recover_run_directory(run)
    torch.manual_seed(train_config.seed)
    meta = state = None
    start_step = 0
    earlier: list[dict[str, Any]] = []
    if resume and (checkpoint / "trainer_state.json").is_file():
        model = VisualDynamicsVQ.from_pretrained(checkpoint / "model")
        if model.config != c:
            raise ValueError(
                f"{checkpoint} was trained with another model config; use a new out_dir or "
                "resume=False"
            )
        meta = read_json(checkpoint / "trainer_state.json")
        saved, now = meta.get("train_config", {}), json.loads(json.dumps(asdict(train_config)))
        differences = [
            f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} now"
            for key, value in now.items()
            if key not in RESUMABLE_CHANGES and saved.get(key) != value
        ]
        if differences:
            raise ValueError(
                f"{checkpoint} holds a run with other settings, so it cannot be resumed:\n  "
                + "\n  ".join(differences)
                + "\nuse a new out_dir, or resume=False to start over there"
            )
        earlier = _read_log(run / LOG_NAME, int(meta["step"]))
        state = load_safetensors(checkpoint / "trainer_state.safetensors")
        start_step = int(meta["step"])
    else:
        model = VisualDynamicsVQ(c)
        if c.motion is not None:
            if motion_tokenizer is None:
                raise ValueError(
                    "training visual_dynamics_vq with motion needs the trained motion tokenizer "
                    "(motion_tokenizer=MotionRVQ.from_pretrained(path)); or set motion=None"
                )
            model.set_motion_tokenizer(motion_tokenizer)
        model.fit_normalization(pairs.frame_features[: min(len(pairs.frame_features), 4096)].float())  # fmt: skip
    if extractor is not None:
        extractor.save_pretrained(run / EXTRACTOR_DIR)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=train_config.learning_rate, weight_decay=train_config.weight_decay
    )
    batch_generator = torch.Generator().manual_seed(train_config.seed + 1)
    if state is not None and meta is not None:
        optimizer.load_state_dict(_load_optimizer_state(state, meta["param_groups"]))
        torch.set_rng_state(state["rng.torch"])
        batch_generator.set_state(state["rng.batches"])

    began = time.monotonic()
    log: list[dict[str, Any]] = []
    losses: list[float] = []
    baselines: list[float] = []
    codes_seen: list[torch.Tensor] = []
    step = start_step
    bar = tqdm(
        total=train_config.total_steps,
        initial=start_step,
        disable=not progress,
        desc="visual_dynamics_vq",
    )
    _rewrite_log(run / LOG_NAME, earlier)  # continuous: nothing past the checkpoint's step
    log_file = open(run / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
    try:
        while step < train_config.total_steps:
            if (
                train_config.max_minutes is not None
                and time.monotonic() - began >= 60.0 * train_config.max_minutes
            ):
                break
            index = torch.randint(0, len(pairs), (train_config.batch_size,), generator=batch_generator)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(train_config, step)
            features_t, features_tk, actions, hand_mask = pairs.batch(index)
            output = model(features_t, features_tk, actions if c.motion else None, hand_mask)
            loss = prediction_loss(output)
            optimizer.zero_grad(set_to_none=True)
            (loss + output.commit_loss).backward()
            torch.nn.utils.clip_grad_norm_(trainable, train_config.grad_clip)
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            baselines.append(float(torch.mean((output.source - output.target) ** 2)))
            codes_seen.append(output.codes.detach())
            bar.update(1)
            if step % train_config.log_every == 0 or step == train_config.total_steps:
                stats = code_statistics(torch.cat(codes_seen), c.codebook_size)
                record = {
                    "step": step,
                    "loss": sum(losses) / len(losses),
                    "baseline_loss": sum(baselines) / len(baselines),
                    "lr": optimizer.param_groups[0]["lr"],
                    **stats,
                }
                log.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(
                    loss=f"{record['loss']:.4f}",
                    baseline=f"{record['baseline_loss']:.4f}",
                    codes=stats["codes_used"],
                )
                losses, baselines, codes_seen = [], [], []
            if train_config.checkpoint_every and step % train_config.checkpoint_every == 0:
                _save_checkpoint(run, model, optimizer, batch_generator, step, train_config)
    finally:
        bar.close()
        log_file.close()
    _save_checkpoint(run, model, optimizer, batch_generator, step, train_config)
    model.eval()
    _save_final(model, run)
    final = log[-1] if log else {"loss": float("nan"), "baseline_loss": float("nan")}
    return VisualDynamicsTrainResult(
        tokenizer=model,
        steps=step,
        final_loss=float(final["loss"]),
        final_baseline_loss=float(final["baseline_loss"]),
        seconds=time.monotonic() - began,
        log=log,
    )
