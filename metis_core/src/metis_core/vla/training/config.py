"""Training configuration: recipes are config files, runs change them with ``key=value``.

A :class:`TrainConfig` has five sections (``model``, ``data``, ``optim``, ``lora``, ``run``) and
a ``stage``. The recipes shipped in ``metis_core/vla/training/recipes/`` are plain YAML files:

* ``pretrain`` / ``posttrain`` — the paper's values (DESIGN §9, VLA_FACTS §1(b)): pre-training
  of all parameters with AdamW 2e-5, no weight decay, gradient clipping 1.0 after backward,
  global batch 768, the EgoAtlas mixture with the Table 6 weights, 60k steps under FSDP;
  post-training with LoRA r = 32 on the LM, both vision towers and the projector, the action
  head trained fully in fp32 while the backbone runs in bf16, AdamW 3.5e-4, weight decay 1e-3,
  StepLR ×0.1 at 80 % of the steps, batch 4 per device, chunk 30, proprio history 1.
* ``pretrain_tiny`` / ``posttrain_tiny`` — the same recipes at a size that trains on a CPU.

:func:`load_config` takes a recipe name or a file and dotted overrides
(``optim.lr=1e-4 run.max_steps=200 data.datasets.synthetic=/data/syn``); values are parsed as
YAML scalars, so ``none``/``null``, numbers, booleans and ``[a, b]`` lists work.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from metis_core.config import ComponentConfig, ComponentConfigError

__all__ = [
    "RECIPES",
    "DataSection",
    "ModelSection",
    "OptimSection",
    "RunSection",
    "TrainConfig",
    "apply_overrides",
    "config_differences",
    "config_digest",
    "load_config",
    "parse_override_value",
    "recipe_path",
]

RECIPE_DIR = Path(__file__).parent / "recipes"
#: Names of the shipped recipes (``metis train pretrain_tiny``).
RECIPES = ("pretrain", "posttrain", "pretrain_tiny", "posttrain_tiny")
#: Fields a resumed run may change (they do not alter the loss curve).
RESUMABLE_FIELDS = frozenset(
    {
        "run.log_every",
        "run.checkpoint_every",
        "run.keep_last",
        "run.eval_every",
        "run.eval_samples",
        "run.threads",
        "run.num_workers",
        "run.output_dir",
        "run.tensorboard",
        "run.plot",
        "run.progress",
        "data.cache_frames",
    }
)


@dataclass(frozen=True, kw_only=True)
class ModelSection(ComponentConfig):
    """Which policy to train.

    Args:
        preset: The :class:`~metis_core.vla.configuration_metis.MetisConfig` preset of a new
            policy (``tiny``, ``paper``, ``metis_release``, ``metis_release_tiny``).
        config: ``MetisConfig`` fields replacing the preset's.
        init_from: A saved policy (or a training run directory, whose ``final/`` is taken) to
            start from; post-training starts from the pre-trained policy. ``None``: a new policy
            with the preset's random initialisation (the "no pre-training" ablation).
        motion_tokenizer: Directory of the trained motion tokenizer (new policies).
        visual_tokenizer: Directory of the trained visual-dynamics tokenizer run (new policies).
        dynamics_tokens: ``False``: the Table 5 ablation without motion-aware dynamics (action
            loss only; the head reads placeholder positions).
    """

    preset: Literal["tiny", "paper", "metis_release", "metis_release_tiny"] = "tiny"
    config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    motion_tokenizer: str | None = None
    visual_tokenizer: str | None = None
    dynamics_tokens: bool = True


@dataclass(frozen=True, kw_only=True)
class DataSection(ComponentConfig):
    """Which data, and how samples are cut.

    Args:
        datasets: Name → LeRobot dataset root (annotated with ``metis annotate``).
        weights: Name → sampling weight; ``None``: Table 6 by name (one dataset: weight 1).
        sources: ``all`` or ``human`` (human-data-only pre-training, Table 4: only episodes
            whose embodiment is a human hand).
        heldout_fraction: Episodes of every dataset kept out of training for evaluation.
        demo_fraction: Fraction of the remaining training episodes used (Fig. 6).
        split_seed: Seed of the held-out and demonstration-fraction choices.
        reasoning: Train the subtask text where subtask labels exist.
        center_crop: Centre-crop the largest square before resizing (480×640 → 224×224).
        camera: Image key of the datasets (``ego``).
        cache_frames: Decoded (cropped, resized) frames kept in memory. Episodes up to an
            eighth of this long are decoded whole and cached; longer ones frame by frame.
    """

    datasets: dict[str, str] = field(default_factory=dict)
    weights: dict[str, float] | None = None
    sources: Literal["all", "human"] = "all"
    heldout_fraction: float = 0.1
    demo_fraction: float = 1.0
    split_seed: int = 0
    reasoning: bool = True
    center_crop: bool = True
    camera: str = "ego"
    cache_frames: int = 8192

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"data.heldout_fraction must be in [0, 1), got {self.heldout_fraction}")  # fmt: skip
        if not 0.0 < self.demo_fraction <= 1.0:
            raise ValueError(f"data.demo_fraction must be in (0, 1], got {self.demo_fraction}")
        if self.weights is not None:
            bad = {k: v for k, v in self.weights.items() if not float(v) > 0}
            if bad:
                raise ValueError(f"data.weights must be positive, got {bad}")
        if self.cache_frames < 8:
            raise ValueError(f"data.cache_frames must be >= 8, got {self.cache_frames}")


@dataclass(frozen=True, kw_only=True)
class OptimSection(ComponentConfig):
    """AdamW and the learning-rate schedule.

    Args:
        lr: Peak learning rate.
        weight_decay: Decoupled weight decay.
        betas: AdamW betas.
        eps: AdamW epsilon.
        grad_clip: Maximum global gradient norm (clipped after backward), or ``None``.
        schedule: ``constant`` or ``step`` (×``gamma`` once ``step_fraction`` of the steps ran).
        step_fraction: Where the step schedule drops.
        gamma: The drop factor.
        warmup_steps: Linear warm-up from 0.
    """

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    schedule: Literal["constant", "step"] = "constant"
    step_fraction: float = 0.8
    gamma: float = 0.1
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"optim.grad_clip must be > 0 or null, got {self.grad_clip}")
        if not 0.0 < self.step_fraction <= 1.0:
            raise ValueError(f"optim.step_fraction must be in (0, 1], got {self.step_fraction}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"optim.gamma must be in (0, 1], got {self.gamma}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True, kw_only=True)
class RunSection(ComponentConfig):
    """Steps, batches, precision, distribution, logging and checkpoints.

    Args:
        max_steps: Optimiser steps.
        global_batch: Samples per optimiser step, all processes together (``None``:
            ``micro_batch`` × the number of processes, no accumulation).
        micro_batch: Samples per forward pass in one process (gradient accumulation makes up
            the rest: ``global_batch = micro_batch × accumulation × world size``).
        seed: Seed of the initialisation and of the sample stream.
        precision: ``fp32``, or ``bf16``: the backbone runs in bfloat16 autocast (its frozen
            weights are stored in bf16 under LoRA, except under FSDP), the action head and the losses
            in fp32.
        distributed: ``auto`` (DDP under ``torchrun`` with several processes, else none),
            ``none``, ``ddp`` or ``fsdp`` (``torch.distributed.fsdp.fully_shard``).
        threads: Torch threads per process (``None``: half the idle cores, 1 to 4).
        num_workers: Dataloader worker processes (decoding frames).
        log_every: Steps between log records.
        eval_every: Steps between held-out evaluations (0: only at the end).
        eval_samples: Held-out samples per evaluation.
        checkpoint_every: Steps between checkpoints (0: only at the end).
        keep_last: Checkpoints kept.
        overfit_batches: Repeat the first N global batches forever (a sanity check), 0: off.
        output_dir: Run directory (``metis train -o``).
        tensorboard: Also log to TensorBoard when it is installed.
        plot: Write ``curves.png`` at the end.
        progress: Show a progress bar.
    """

    max_steps: int = 1000
    global_batch: int | None = 8
    micro_batch: int = 8
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    threads: int | None = None
    num_workers: int = 0
    log_every: int = 10
    eval_every: int = 0
    eval_samples: int = 64
    checkpoint_every: int = 0
    keep_last: int = 2
    overfit_batches: int = 0
    output_dir: str | None = None
    tensorboard: bool = True
    plot: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_steps", "global_batch", "micro_batch", "log_every", "keep_last"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "eval_samples", "checkpoint_every", "overfit_batches", "num_workers"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"run.threads must be >= 1 or null, got {self.threads}")

    def batch_size(self, world_size: int) -> int:
        """The global batch of a run with ``world_size`` processes."""
        return self.global_batch if self.global_batch is not None else self.micro_batch * world_size

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per process and step, checking that the batch sizes divide."""
        if self.global_batch is None:
            return 1
        per_process, rest = divmod(self.global_batch, world_size)
        if rest:
            raise ValueError(f"run.global_batch = {self.global_batch} does not split over {world_size} processes")  # fmt: skip
        steps, rest = divmod(per_process, self.micro_batch)
        if rest or steps < 1:
            raise ValueError(
                f"run.global_batch = {self.global_batch} over {world_size} process(es) is "
                f"{per_process} per process, not a multiple of run.micro_batch = {self.micro_batch}"
            )
        return steps


@dataclass(frozen=True, kw_only=True)
class TrainConfig(ComponentConfig):
    """A whole training run (see the module docstring).

    Args:
        stage: ``pretrain`` (all parameters) or ``posttrain`` (LoRA + the action head when
            ``lora`` is set, else all parameters).
        model: :class:`ModelSection`.
        data: :class:`DataSection`.
        optim: :class:`OptimSection`.
        lora: Fields of :class:`metis_core.vla.lora.LoraSpec`, or ``None`` for full training.
        run: :class:`RunSection`.
    """

    stage: Literal["pretrain", "posttrain"] = "pretrain"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    lora: dict[str, Any] | None = None
    run: RunSection = field(default_factory=RunSection)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data.datasets:
            raise ValueError("data.datasets is empty: name at least one annotated dataset (data.datasets.NAME=PATH)")  # fmt: skip
        if self.model.init_from is None and (self.model.motion_tokenizer is None or self.model.visual_tokenizer is None):  # fmt: skip
            raise ValueError(
                "a new policy (model.init_from = null) needs the trained dynamics tokenizers: set "
                "model.motion_tokenizer=DIR and model.visual_tokenizer=DIR"
            )


def recipe_path(name: str) -> Path:
    """The file of a shipped recipe."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown recipe {name!r}{hint}; the recipes are {list(RECIPES)}, or give a .yaml/.json file")  # fmt: skip
    return RECIPE_DIR / f"{name}.yaml"


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = _yaml_numbers(yaml.safe_load(text))
    if not isinstance(data, dict):
        raise ComponentConfigError(f"{path}: expected a mapping of config sections, got {type(data).__name__}")  # fmt: skip
    return data


_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml_numbers(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-3`` (an exponent without a dot) as text: make it a number,
    in mappings and lists too."""
    if isinstance(value, str) and _YAML11_FLOAT.match(value):
        return float(value)
    if isinstance(value, dict):
        return {k: _yaml_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_numbers(v) for v in value]
    return value


def parse_override_value(text: str) -> Any:
    """The value of a ``key=value`` override: JSON, else YAML (with ``1e-3`` read as a number)."""
    import yaml

    try:
        # JSON first: YAML 1.1 reads 1e-06 (no dot) as text, also inside a mapping
        return json.loads(text)
    except ValueError:
        pass
    try:
        value = _yaml_numbers(yaml.safe_load(text))
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as text; a number is meant
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                pass
    return value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a config mapping (a copy is returned).

    Keys are checked against the config's fields (free-form mappings — ``model.config``,
    ``data.datasets``, ``data.weights``, ``lora`` — accept new keys).

    Raises:
        ComponentConfigError: For an item without ``=`` or an unknown key (with the close ones).
    """
    out = copy.deepcopy(data)
    free = {("model", "config"), ("data", "datasets"), ("data", "weights"), ("lora",)}
    sections = {f.name: f for f in fields(TrainConfig)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ComponentConfigError(f"override {item!r}: expected key=value (e.g. optim.lr=1e-4)")  # fmt: skip
        parts = key.strip().split(".")
        head = parts[0]
        if head not in sections:
            close = difflib.get_close_matches(head, list(sections), n=1)
            raise ComponentConfigError(
                f"override {item!r}: unknown section {head!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; sections are {list(sections)}"
            )
        if len(parts) >= 2 and head in ("model", "data", "optim", "run"):
            section_cls = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "run": RunSection}[head]  # fmt: skip
            names = [f.name for f in fields(section_cls)]
            if parts[1] not in names:
                close = difflib.get_close_matches(parts[1], names, n=1)
                raise ComponentConfigError(
                    f"override {item!r}: {head} has no field {parts[1]!r}"
                    + (f" (did you mean {close[0]!r}?)" if close else "")
                    + f"; fields are {names}"
                )
            if len(parts) > 2 and tuple(parts[:2]) not in free:
                raise ComponentConfigError(f"override {item!r}: {'.'.join(parts[:2])} is not a mapping")  # fmt: skip
        value = parse_override_value(raw)
        node = out
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise ComponentConfigError(f"override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return out


def load_config(source: str | os.PathLike[str] | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:  # fmt: skip
    """A :class:`TrainConfig` from a recipe name, a YAML/JSON file or a mapping, plus overrides.

    A file may name a recipe to start from with ``base: RECIPE``.
    """
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        text = str(source)
        path = Path(text)
        if path.suffix in (".yaml", ".yml", ".json"):
            if not path.is_file():
                raise FileNotFoundError(f"no such config file: {path}")
            data = _read(path)
        else:
            data = _read(recipe_path(text))
    base = data.pop("base", None)
    if base is not None:
        merged = _read(recipe_path(str(base)))
        merged.pop("base", None)
        data = _deep_merge(merged, data)
    data = apply_overrides(data, list(overrides))
    return TrainConfig.from_dict(data)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("datasets", "weights"):  # fmt: skip
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out  # an empty mapping adds no key: {} and absent are the same
    return {prefix[:-1]: data}


def config_differences(old: TrainConfig | dict[str, Any], new: TrainConfig | dict[str, Any], *, ignore: frozenset[str] = RESUMABLE_FIELDS) -> list[str]:  # fmt: skip
    """``"key: old -> new"`` for every field that differs (except ``ignore``)."""
    a = _flatten(old.to_dict() if isinstance(old, TrainConfig) else old)
    b = _flatten(new.to_dict() if isinstance(new, TrainConfig) else new)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or any(key.startswith(k + ".") for k in ignore):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            out.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return out


def config_digest(config: TrainConfig) -> str:
    """SHA-256 of the fields that shape the loss curve."""
    flat = {k: v for k, v in _flatten(config.to_dict()).items() if k not in RESUMABLE_FIELDS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()
