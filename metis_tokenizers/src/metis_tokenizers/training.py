"""Training the motion tokenizer: progress bar, periodic checkpoints, honest resume, seeds.

A run directory holds, once finished, a loadable tokenizer (``config.json`` +
``model.safetensors``), ``training_log.jsonl`` (one JSON record per logging step, with codebook
health per level) and ``checkpoint/`` (the last checkpoint: model, optimiser, random states and
step).

* **Resume**: starting again with the same directory continues from the checkpoint, but only
  with the same model config, optimisation settings (``steps``, ``max_minutes``, ``threads``,
  ``log_every`` and ``checkpoint_every`` may change) and the same data (a SHA-256 fingerprint);
  anything else is refused with a ``ValueError`` that lists what differs. With a step-based
  schedule the resumed run reproduces the uninterrupted one exactly. The log stays continuous:
  records after the checkpoint's step (written by the interrupted run) are dropped on resume,
  and ``resume=False`` starts a new log.
* **Atomicity**: ``checkpoint`` and the final tokenizer are each switched in one atomic step:
  every save goes to a new version directory under ``.checkpoint.versions/`` (or
  ``.final.versions/``), and a symlink (``checkpoint``, ``.final``) is replaced with
  ``os.replace``; ``config.json`` and ``model.safetensors`` are fixed links into ``.final``. A
  run killed at any point leaves the previous complete copy in place, and a stranded copy
  (e.g. from an older version's two-rename switch) is recovered when the run starts again.
* **Threads**: by default a small number of torch threads is chosen from the idle cores
  (:func:`choose_threads`), since small models lose badly from oversubscription.
* **Schedule**: linear warm-up, then cosine decay to 5 %; with ``max_minutes`` the schedule
  follows the larger of step and elapsed-time progress, so a time-limited run anneals.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from metis_core.components import CONFIG_NAME, WEIGHTS_NAME
from metis_core.io import atomic_write, load_safetensors, read_json, save_safetensors, write_json
from metis_core.threads import ThreadChoice, choose_threads
from metis_tokenizers.motion_generator import MotionWindows
from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig

__all__ = [
    "CodebookHealth",
    "ThreadChoice",
    "TrainConfig",
    "TrainResult",
    "choose_threads",
    "codebook_health",
    "train_motion_rvq",
]

CHECKPOINT_DIR = "checkpoint"
FINAL_DIR = ".final"
LOG_NAME = "training_log.jsonl"
COMPLETE_MARKER = "COMPLETE"
#: Steps a time-limited run may take at most (the clock decides where it stops).
UNLIMITED_STEPS = 10_000_000
#: Settings that may change between a run and its resume.
RESUMABLE_CHANGES = ("steps", "max_minutes", "threads", "log_every", "checkpoint_every")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation settings (the defaults are the recipe of the README's benchmark figures).

    Args:
        steps: Optimiser steps; ``None``: 2000, or unlimited when ``max_minutes`` is given.
        batch_size: Windows per step.
        learning_rate: Peak AdamW learning rate (linear warm-up, cosine decay to 5 %).
        warmup_steps: Warm-up steps; ``None``: 5 % of ``steps``, at most 100.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip.
        seed: Seeds the model initialisation, batch order, k-means and dead-code sampling.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        log_every: Steps between log records.
        max_minutes: Stop early (and save) after this much wall-clock time; ``None``: no limit.
        threads: torch threads; ``None``: :func:`choose_threads` picks (and says so).
        schedule_by_time: Drive the learning-rate schedule by the larger of step progress and
            elapsed fraction of ``max_minutes``, so that a time-limited run still anneals.
            ``None``: whenever ``max_minutes`` is given. Resuming such a run is not bit-exact.
        part_weights: Loss weights of the wrist position, wrist rotation and fingertip values
            (applied to the normalised squared errors).
    """

    steps: int | None = None
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    max_minutes: float | None = None
    threads: int | None = None
    schedule_by_time: bool | None = None
    part_weights: tuple[float, float, float] = (2.0, 2.0, 1.0)

    def __post_init__(self) -> None:
        if len(self.part_weights) != 3 or any(w < 0 for w in self.part_weights):
            raise ValueError(
                "part_weights: expected 3 non-negative weights (wrist position, wrist rotation, "
                f"fingertips), got {self.part_weights}"
            )
        if sum(self.part_weights) <= 0:
            raise ValueError(f"part_weights: at least one must be > 0, got {self.part_weights}")
        for name in ("batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if (self.warmup_steps is not None and self.warmup_steps < 0) or self.checkpoint_every < 0:
            raise ValueError("warmup_steps and checkpoint_every must be >= 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes must be > 0, got {self.max_minutes}")
        if self.schedule_by_time and self.max_minutes is None:
            raise ValueError("schedule_by_time needs max_minutes")

    @property
    def total_steps(self) -> int:
        """``steps``, or its default (2000; unlimited with ``max_minutes``)."""
        if self.steps is not None:
            return self.steps
        return UNLIMITED_STEPS if self.max_minutes is not None else 2000

    @property
    def warmup(self) -> int:
        """``warmup_steps``, or 5 % of the steps, at most 100 (at least 1)."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(1, min(100, self.total_steps // 20))

    @property
    def by_time(self) -> bool:
        """Whether the schedule follows elapsed time too."""
        if self.schedule_by_time is not None:
            return self.schedule_by_time
        return self.max_minutes is not None


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
        threads: torch threads used.
    """

    tokenizer: MotionRVQ
    steps: int
    final_loss: float
    seconds: float
    log: list[dict[str, Any]] = field(default_factory=list)
    threads: int = 1


def _learning_rate(config: TrainConfig, step: int, elapsed_fraction: float = 0.0) -> float:
    warmup = config.warmup
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.total_steps - warmup)
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


# -- run directory: one atomic switch per save, recovery of stranded copies ---------------


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _complete(version: Path) -> bool:
    return (version / COMPLETE_MARKER).is_file()


def _versions(run: Path, name: str) -> Path:
    return run / f".{name.lstrip('.')}.versions"


def _switch_link(run: Path, name: str, target: Path) -> None:
    """Point ``run/name`` at ``target`` (inside ``run``) in one ``os.replace``."""
    link = run / name
    temporary = run / f".{name.lstrip('.')}.link-{os.getpid()}-{time.monotonic_ns()}"
    os.symlink(os.path.relpath(target, run), temporary)
    if link.is_dir() and not link.is_symlink():
        # An older layout's real directory: move it aside into the versions (recoverable).
        os.replace(link, _versions(run, name) / f"legacy-{time.time_ns()}")
    os.replace(temporary, link)
    _fsync_directory(run)


def _save_version(run: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Build a new version of ``run/name`` with ``fill`` and switch the link to it atomically."""
    versions = _versions(run, name)
    versions.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="tmp-", dir=versions))
    try:
        fill(staging)
        with atomic_write(staging / COMPLETE_MARKER, "w") as handle:
            handle.write("complete\n")
        final = versions / f"v{time.time_ns()}"
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _switch_link(run, name, final)
    for other in versions.iterdir():
        if other != final:
            shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink()
    return final


def recover_run_directory(run: str | os.PathLike[str]) -> list[str]:
    """Make ``checkpoint`` and the final tokenizer of a run point at complete copies.

    A run killed mid-save leaves the previous complete version in place; this repairs what
    older layouts could leave: a ``checkpoint`` that vanished between two renames (its copy
    stranded in ``.checkpoint.*.old/old``), or a link to a version that is gone.

    Returns:
        One line per repair made (empty if none was needed).
    """
    run = Path(run)
    repairs: list[str] = []
    for name in (CHECKPOINT_DIR, FINAL_DIR):
        link = run / name
        versions = _versions(run, name)
        if link.is_dir() and ((link.is_symlink() and _complete(link)) or not link.is_symlink()):
            continue
        candidates = (
            sorted(v for v in versions.glob("v*") if _complete(v)) if versions.is_dir() else []
        )
        candidates += sorted(v for v in versions.glob("legacy-*") if (v / "trainer_state.json").is_file()) if versions.is_dir() else []  # fmt: skip
        if name == CHECKPOINT_DIR:
            # metis_core.io.atomic_directory moves the old copy to .checkpoint.XXXX.old/old
            # before moving the new one in; a kill in between strands it there.
            candidates += [
                stranded
                for stranded in sorted(run.glob(f".{name}.*.old/old"))
                if (stranded / "trainer_state.json").is_file()
            ]
        if not candidates:
            continue

        def step_of(version: Path) -> int:
            state = version / "trainer_state.json"
            return int(read_json(state).get("step", -1)) if state.is_file() else -1

        best = max(candidates, key=step_of) if name == CHECKPOINT_DIR else candidates[-1]
        if not str(best.resolve()).startswith(str(versions.resolve())):
            versions.mkdir(parents=True, exist_ok=True)
            moved = versions / f"legacy-{time.time_ns()}"
            os.replace(best, moved)
            best = moved
        if not _complete(best):
            (best / COMPLETE_MARKER).write_text("complete (recovered)\n")
        if link.is_symlink() or not link.exists():
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        _switch_link(run, name, best)
        repairs.append(f"{name}: recovered the stranded copy {best.relative_to(run)}")
    return repairs


def _save_checkpoint(
    directory: Path,
    model: MotionRVQ,
    optimizer: torch.optim.Optimizer,
    batch_generator: torch.Generator,
    step: int,
    config: TrainConfig,
    fingerprint: dict[str, Any],
) -> None:
    tensors, groups = _flatten_optimizer(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = batch_generator.get_state()

    def fill(staging: Path) -> None:
        model.save_pretrained(staging / "model")
        save_safetensors(staging / "trainer_state.safetensors", tensors)
        write_json(
            staging / "trainer_state.json",
            {
                "step": step,
                "param_groups": groups,
                "train_config": asdict(config),
                "model_config": model.config.to_dict(type_name=model.name),
                "data": fingerprint,
            },
        )

    _save_version(directory, CHECKPOINT_DIR, fill)


def _save_final(model: MotionRVQ, run: Path) -> None:
    """Save the tokenizer into the run directory in one atomic switch.

    ``config.json`` and ``model.safetensors`` are links into ``.final``, which is switched to
    the new version with one ``os.replace``: a reader never sees one file new and one old.
    """

    def fill(staging: Path) -> None:
        model.save_pretrained(staging, overwrite=True)

    _save_version(run, FINAL_DIR, fill)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        link = run / name
        wanted = f"{FINAL_DIR}/{name}"
        if link.is_symlink() and os.readlink(link) == wanted:
            continue
        temporary = run / f".{name}.link-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        os.symlink(wanted, temporary)
        os.replace(temporary, link)
    _fsync_directory(run)


def _windows_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor, float | None]:
    if isinstance(data, MotionWindows):
        return data.actions.float(), data.hand_mask.bool(), data.window_seconds
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return torch.as_tensor(data[0]).float(), torch.as_tensor(data[1]).bool(), None
    actions = torch.as_tensor(data).float()
    return actions, torch.ones(actions.shape[0], 2, dtype=torch.bool), None


def data_fingerprint(actions: torch.Tensor, hand_mask: torch.Tensor) -> dict[str, Any]:
    """SHA-256 of the training windows and mask (what a resume must see again)."""
    digest = hashlib.sha256()
    digest.update(str(tuple(actions.shape)).encode())
    digest.update(actions.contiguous().numpy().tobytes())
    digest.update(hand_mask.bool().contiguous().numpy().tobytes())
    return {"windows": int(actions.shape[0]), "sha256": digest.hexdigest()}


def _resume_differences(
    meta: dict[str, Any],
    train_config: TrainConfig,
    model_config: MotionRVQConfig | None,
    saved_config: MotionRVQConfig,
    fingerprint: dict[str, Any],
) -> list[str]:
    differences = []
    saved_train = meta.get("train_config", {})
    now = asdict(train_config)
    for key in now:
        if key in RESUMABLE_CHANGES:
            continue
        before = saved_train.get(key)
        value = list(now[key]) if isinstance(now[key], tuple) else now[key]
        before = list(before) if isinstance(before, tuple) else before
        if before != value:
            differences.append(f"{key}: {before!r} in the checkpoint, {value!r} now")
    if model_config is not None and model_config != saved_config:
        a, b = saved_config.to_dict(), model_config.to_dict()
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                differences.append(f"model {key}: {a.get(key)!r} in the checkpoint, {b.get(key)!r} now")  # fmt: skip
    saved_data = meta.get("data")
    if saved_data != fingerprint:
        differences.append(
            f"data: {saved_data} in the checkpoint, {fingerprint} now (other windows)"
        )
    return differences


def _read_log(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict) and int(record.get("step", 0)) <= up_to_step:
                    records.append(record)
    return records


def _rewrite_log(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_write(path, "w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # an ordinary log file, not the temporary file's 0600


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
        resume: Continue from ``out_dir/checkpoint`` if present (same config and data only);
            ``False`` starts over: a new log, and the old checkpoint is replaced.
        progress: Show a tqdm progress bar (and the thread choice).

    Returns:
        :class:`TrainResult`; the tokenizer is also saved in ``out_dir``.

    Raises:
        ValueError: For a resume whose configuration or data differ from the checkpoint's
            (listing what differs), or windows whose duration differs from the tokenizer's.
    """
    train_config = train_config or TrainConfig()
    actions, hand_mask, window_seconds = _windows_tensors(data)
    wanted_seconds = (model_config or MotionRVQConfig()).window_seconds
    if window_seconds is not None and abs(window_seconds - wanted_seconds) > 1e-6:
        raise ValueError(
            f"the windows span {window_seconds:g} s, but the tokenizer codes windows of "
            f"{wanted_seconds:g} s (window_seconds); cut the data with that duration or set "
            "window_seconds in the model config"
        )
    run = Path(out_dir)
    run.mkdir(parents=True, exist_ok=True)
    choice = choose_threads(train_config.threads)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(choice.threads)
    if progress:
        tqdm.write(f"motion_rvq: using {choice.reason}")
    try:
        return _train(actions, hand_mask, run, model_config, train_config, resume, progress, choice)
    finally:
        torch.set_num_threads(threads_before)


def _train(
    actions: torch.Tensor,
    hand_mask: torch.Tensor,
    run: Path,
    model_config: MotionRVQConfig | None,
    train_config: TrainConfig,
    resume: bool,
    progress: bool,
    choice: ThreadChoice,
) -> TrainResult:
    began = time.monotonic()
    repairs = recover_run_directory(run)
    if progress:
        for line in repairs:
            tqdm.write(f"motion_rvq: {line}")
    fingerprint = data_fingerprint(actions, hand_mask)
    checkpoint = run / CHECKPOINT_DIR
    torch.manual_seed(train_config.seed)
    earlier: list[dict[str, Any]] = []
    if resume and (checkpoint / "trainer_state.json").is_file():
        meta = read_json(checkpoint / "trainer_state.json")
        model = MotionRVQ.from_pretrained(checkpoint / "model")
        differences = _resume_differences(
            meta, train_config, model_config, model.config, fingerprint
        )
        if differences:
            raise ValueError(
                f"{checkpoint} holds a run with another configuration or data, so it cannot be "
                "resumed:\n  " + "\n  ".join(differences) + "\nuse a new out_dir, or "
                "resume=False (--no-resume) to start over there"
            )
        state = load_safetensors(checkpoint / "trainer_state.safetensors")
        start_step = int(meta["step"])
        earlier = _read_log(run / LOG_NAME, start_step)
    else:
        if not resume:
            # Starting over: the old checkpoint must not be resumed later against the new log.
            if checkpoint.is_symlink() or checkpoint.is_file():
                checkpoint.unlink()
            elif checkpoint.is_dir():
                shutil.rmtree(checkpoint)
            shutil.rmtree(_versions(run, CHECKPOINT_DIR), ignore_errors=True)
        model = MotionRVQ(model_config or MotionRVQConfig())
        model.fit_normalization(actions, hand_mask)
        meta, state, start_step = None, None, 0
    # A continuous log: what the checkpoint's run logged up to its step, then this run.
    _rewrite_log(run / LOG_NAME, earlier)
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
    log: list[dict[str, Any]] = []
    recent_losses: list[float] = []
    recent_codes: list[torch.Tensor] = []
    replacements = 0
    step = start_step
    total = train_config.total_steps
    bar = tqdm(
        total=None if total == UNLIMITED_STEPS else total,
        initial=start_step,
        disable=not progress,
        desc="motion_rvq",
    )
    log_file = open(run / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
    try:
        while step < total:
            elapsed_fraction = 0.0
            if train_config.max_minutes is not None:
                elapsed_fraction = (time.monotonic() - began) / (60.0 * train_config.max_minutes)
                if elapsed_fraction >= 1.0:
                    break
                if not train_config.by_time:
                    elapsed_fraction = 0.0
            index = torch.randint(
                0, actions.shape[0], (train_config.batch_size,), generator=batch_generator
            )
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(train_config, step, elapsed_fraction)
            if bool(codebook.initted) and threshold > 0:
                replacements += int((codebook.cluster_size < threshold).sum())
            output = model.reconstruct(actions[index], hand_mask[index], update_codebook=True)
            loss = reconstruction_loss(output, train_config.part_weights)
            optimizer.zero_grad(set_to_none=True)
            (loss + output.commit_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip)
            optimizer.step()
            step += 1
            recent_losses.append(float(loss.detach()))
            codes = output.codes.detach()[output.present]
            # Levels dropped by quantize dropout are -1: left out of the health statistics.
            recent_codes.append(codes[(codes >= 0).all(-1).all(-1)])
            bar.update(1)
            if step % train_config.log_every == 0 or step == total:
                health = codebook_health(torch.cat(recent_codes), model.config.codebook_size)
                record = {
                    "step": step,
                    "loss": sum(recent_losses) / len(recent_losses),
                    "lr": optimizer.param_groups[0]["lr"],
                    "dead_code_replacements": replacements,
                    "threads": choice.threads,
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
                _save_checkpoint(
                    run, model, optimizer, batch_generator, step, train_config, fingerprint
                )
    finally:
        bar.close()
        log_file.close()
    if step > start_step or not (checkpoint / "trainer_state.json").is_file():
        _save_checkpoint(run, model, optimizer, batch_generator, step, train_config, fingerprint)
    model.eval()
    _save_final(model, run)
    if recent_losses:
        final = sum(recent_losses) / len(recent_losses)
    elif log:
        final = log[-1]["loss"]
    else:
        previous = earlier[-1]["loss"] if earlier else float("nan")
        final = float(previous)
    return TrainResult(
        tokenizer=model,
        steps=step,
        final_loss=float(final),
        seconds=time.monotonic() - began,
        log=log,
        threads=choice.threads,
    )
