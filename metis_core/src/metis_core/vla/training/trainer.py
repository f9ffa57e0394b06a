"""The training loop of the METIS policy: one process, or several under ``torchrun``.

``Trainer(config, output_dir).run()`` (what ``metis train`` calls):

1. **Processes.** Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group (NCCL on
   GPUs, gloo on CPUs) and wraps the policy in DDP, or shards it with FSDP
   (``torch.distributed.fsdp.fully_shard`` on every transformer block, then on the policy);
   multi-node runs use torchrun's own flags. There is no launcher of ours.
2. **The policy.** New (the preset, seeded) or loaded from ``model.init_from``; with ``lora``
   set, peft adapters are injected (:mod:`metis_core.vla.lora`) and the trainable set is
   asserted to be exactly the adapters and the action head. Parameters the forward never
   reaches (the towers' last blocks, which Prismatic does not read) are found by one probe
   backward and frozen, so DDP needs no ``find_unused_parameters``.
3. **Each step** takes ``global_batch`` samples of the seeded stream (:mod:`metis_core.vla.training.data`), split over
   processes and micro-batches. The losses are normalised by the counts of the *whole* global
   batch (target tokens, trained action values) — not averaged per micro-batch — so one process
   and N processes with the same global batch compute the same loss and gradient, to float
   rounding. Gradients are clipped after backward; the learning rate is a pure function of the
   step (constant or StepLR-like), so resuming needs only the step.
4. **Logs** (rank 0): ``metrics.jsonl`` (next-token and action losses, learning rate, gradient
   norm, code-token accuracy, samples/s, memory), TensorBoard when installed, a progress bar,
   ``curves.png`` at the end, held-out evaluations (:mod:`metis_core.vla.training.evaluation`).
5. **Checkpoints** (:mod:`metis_core.vla.training.checkpoint`): atomic, keep-last-N, resumed automatically; a resumed
   run refuses a checkpoint of another config or other data and says what differs, and its
   loss curve is identical to an uninterrupted run's.
6. **Exports**: ``final/`` (a policy directory for ``predict_action`` / ``metis serve``); LoRA
   runs also write ``adapter/`` (adapters + action head) and merge into ``final/`` in fp32.

Plugins add callbacks through the ``training_callbacks`` hook (and callers through
``Trainer(callbacks=[...])``); the loop calls, on rank 0, whichever of these methods a callback
has: ``on_train_start(trainer)``, ``on_log(trainer, record)`` (every training and evaluation
record), ``on_checkpoint(trainer, path)`` and ``on_train_end(trainer, result)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from metis_core.io import write_json
from metis_core.threads import choose_threads
from metis_core.vla.training import checkpoint as ckpt
from metis_core.vla.training.config import TrainConfig, config_differences, config_digest

__all__ = ["ResumeMismatchError", "TrainResult", "Trainer", "learning_rate"]

_STRUCTURAL_OVERRIDES_OK = {"action_loss_weight", "max_subtask_tokens", "embodiment"}


class ResumeMismatchError(ValueError):
    """A run directory's checkpoint was written by another config or with other data."""


@dataclass
class TrainResult:
    """What a finished run reports."""

    output_dir: Path
    steps: int
    seconds: float
    final_metrics: dict[str, float]
    evaluation: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    export: Path | None = None
    adapter: Path | None = None


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based)."""
    optim = config.optim
    lr = optim.lr
    if optim.warmup_steps and step < optim.warmup_steps:
        lr *= (step + 1) / optim.warmup_steps
    if optim.schedule == "step" and step >= math.floor(optim.step_fraction * config.run.max_steps):
        lr *= optim.gamma
    return lr


class _Samples(torch.utils.data.Dataset):
    """Global sample number → :class:`~metis_core.vla.data.TrainingSample`."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:  # the stream is endless; the batch sampler decides what is read
        return 2**62

    def __getitem__(self, number: int) -> Any:
        return self.data.sample(int(number))


def _as_list(samples: list[Any]) -> list[Any]:
    return list(samples)


def _memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:  # pragma: no cover - non-POSIX
        return float("nan")


class Trainer:
    """Runs one :class:`TrainConfig` (see the module docstring).

    Args:
        config: The run.
        output_dir: Where logs, checkpoints and exports go (default ``config.run.output_dir``).
        resume: Continue from the newest checkpoint in ``output_dir`` when there is one.
    """

    def __init__(self, config: TrainConfig, output_dir: str | os.PathLike[str] | None = None, *, resume: bool = True, callbacks: list[Any] | None = None) -> None:  # fmt: skip
        self.config = config
        self.callbacks = list(callbacks or [])
        out = output_dir or config.run.output_dir
        if out is None:
            raise ValueError("no output directory: pass -o/--output or set run.output_dir")
        self.output_dir = Path(out)
        self.resume = resume
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self._log_handle: Any = None
        self._tensorboard: Any = None
        self._eval_policy: Any = None

    # -- set-up ------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _callback(self, method: str, *args: Any) -> None:
        if not self.is_main:
            return
        for callback in self.callbacks:
            hook = getattr(callback, method, None)
            if hook is not None:
                hook(self, *args)

    def _print(self, message: str) -> None:
        if self.is_main and self.config.run.progress is not None:
            print(message, flush=True)

    def _init_processes(self) -> None:
        mode = self.config.run.distributed
        self._owns_group = not dist.is_initialized()
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
        if mode == "auto":
            mode = "ddp" if self.world_size > 1 else "none"
        if mode == "none" and self.world_size > 1:
            raise ValueError(f"run.distributed = none, but torchrun started {self.world_size} processes: each would train alone on its share; use run.distributed=ddp or fsdp (or auto)")  # fmt: skip
        if mode in ("ddp", "fsdp") and not dist.is_initialized():
            # one process: a group of one, so DDP/FSDP code paths run unchanged
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 20000))
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1)  # fmt: skip
        self.mode = mode
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")

    def _build_policy(self) -> Any:
        from metis_core.interfaces import Tokenizer
        from metis_core.vla.configuration_metis import MetisConfig
        from metis_core.vla.modeling_metis import MetisPolicy

        model = self.config.model
        torch.manual_seed(self.config.run.seed)
        if model.init_from is not None:
            from metis_core.vla.lora import load_policy

            source = Path(model.init_from)
            if (source / "final").is_dir() and (source / "train_config.json").is_file():
                source = source / "final"
            self.init_source = source
            policy = load_policy(source)
            structural = sorted(set(model.config) - _STRUCTURAL_OVERRIDES_OK)
            if structural:
                raise ValueError(f"model.config may only change {sorted(_STRUCTURAL_OVERRIDES_OK)} of a loaded policy (model.init_from), got {structural}")  # fmt: skip
            policy.config = policy.config.replace(**model.config, dynamics_tokens=model.dynamics_tokens)  # fmt: skip
            if model.motion_tokenizer or model.visual_tokenizer:
                self._print("note: model.motion_tokenizer/visual_tokenizer are ignored; the loaded policy's tokenizers are used")  # fmt: skip
        else:
            self.init_source = None
            presets = {
                "tiny": MetisConfig.tiny,
                "paper": MetisConfig.paper,
                "metis_release": MetisConfig.metis_release,
                "metis_release_tiny": lambda **kw: MetisConfig.metis_release(tiny=True, **kw),
            }
            motion = Tokenizer.from_pretrained(model.motion_tokenizer)
            visual = Tokenizer.from_pretrained(model.visual_tokenizer)
            # The config names the tokenizers it holds (e.g. `binning` for the binned-action baseline).
            names = {"motion_tokenizer": motion.name, "visual_tokenizer": visual.name}
            metis_config = presets[model.preset](**{**names, **model.config, "dynamics_tokens": model.dynamics_tokens})  # fmt: skip
            policy = MetisPolicy(metis_config, motion_tokenizer=motion, visual_tokenizer=visual)
        for tokenizer in (policy.motion_tokenizer, policy.visual_tokenizer):
            if isinstance(
                tokenizer, torch.nn.Module
            ):  # a fitted `binning` tokenizer holds no weights
                tokenizer.eval()
                tokenizer.requires_grad_(False)
        return policy

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train (or continue training) to ``run.max_steps``; returns the summary."""
        started = time.perf_counter()
        cfg = self.config
        self._init_processes()
        threads = choose_threads(cfg.run.threads, hint="run.threads")
        torch.set_num_threads(threads.threads)
        self._print(f"threads: {threads.reason}")
        accumulation = cfg.run.accumulation(self.world_size)
        self.global_batch = cfg.run.batch_size(self.world_size)
        policy = self._build_policy()
        from metis_core.vla.training.data import TrainingData

        image_size = int(policy.backbone.image_size[0])
        data = TrainingData(
            cfg.data,
            seed=cfg.run.seed,
            chunk_len=policy.config.chunk_len,
            image_size=image_size,
            norm_mode=policy.config.norm_mode,
            motion_tokenizer=policy.motion_tokenizer,
            visual_tokenizer=policy.visual_tokenizer,
            dynamics_tokens=policy.config.dynamics_tokens,
        )
        self.data = data
        policy.set_normalization(data.normalization)
        self._print(data.summary())
        self.lora_report = None
        if cfg.lora is not None and self.init_source is None:
            # LoRA on a new policy (the no-pre-training ablation): the adapters need their base
            base = self.output_dir / "base"
            if self.is_main and not base.is_dir():
                policy.save_pretrained(base)
            if dist.is_initialized():
                dist.barrier()
            self.init_source = base
        if cfg.lora is not None:
            from metis_core.vla.lora import LoraSpec, apply_lora

            self.lora_report = apply_lora(policy, LoraSpec.from_dict(cfg.lora))
            self._print(self.lora_report.table())
        else:
            policy.requires_grad_(True)
            for tokenizer in (policy.motion_tokenizer, policy.visual_tokenizer):
                if isinstance(tokenizer, torch.nn.Module):
                    tokenizer.requires_grad_(False)
        policy.to(self.device)
        micro = cfg.run.micro_batch
        per_process = micro * accumulation
        frozen = self._freeze_unused(policy, data, micro)
        if frozen:
            self._print(f"frozen (the forward never reaches them): {len(frozen)} tensors, e.g. {frozen[:3]}")  # fmt: skip
        if cfg.run.precision == "bf16" and cfg.lora is not None and self.mode != "fsdp":
            # the frozen base in bf16 (half the memory); adapters and the action head stay fp32.
            # (FSDP keeps one storage dtype per sharded group: there the base stays fp32 and
            # bf16 is autocast only.)
            for param in policy.backbone.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(torch.bfloat16)
        self.policy = policy
        counts = (sum(p.numel() for p in policy.parameters() if p.requires_grad), sum(p.numel() for p in policy.parameters()))  # fmt: skip
        model = self._wrap(policy)
        # after wrapping: FSDP replaces the parameters by sharded ones
        trainable = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        self.trainable_names = [n for n, _ in trainable]
        self._print(f"trainable: {counts[0]:,} of {counts[1]:,} parameters in {len(trainable)} tensors ({self.mode})")  # fmt: skip
        optimizer = torch.optim.AdamW(
            [p for _, p in trainable],
            lr=cfg.optim.lr,
            betas=tuple(cfg.optim.betas),
            eps=cfg.optim.eps,
            weight_decay=cfg.optim.weight_decay,
        )
        start_step = 0
        resumed_from = None
        if self.resume:
            found = ckpt.latest_checkpoint(self.output_dir)
            if found is not None:
                start_step = self._load(found, optimizer)
                resumed_from = start_step
                self._print(f"resumed from {found} (step {start_step})")
        if self.is_main:
            self._open_logs(start_step)
            write_json(self.output_dir / "train_config.json", cfg.to_dict())
            from metis_core.plugins import get_plugin_manager

            for offered in get_plugin_manager().call_isolated("training_callbacks", config=cfg):
                self.callbacks.extend(offered)
        self._callback("on_train_start")
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
            if cfg.run.precision == "bf16"
            else contextlib.nullcontext()
        )
        self._autocast = autocast
        progress = None
        if self.is_main and cfg.run.progress:
            from tqdm import tqdm

            progress = tqdm(total=cfg.run.max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)  # fmt: skip
        last: dict[str, float] = {}
        evaluation: dict[str, float] = {}
        window_start = time.perf_counter()
        window_samples = 0
        loader = iter(self._loader(data, start_step, per_process))
        for step in range(start_step, cfg.run.max_steps):
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            samples = next(loader)
            batches = [policy.collate(samples[m * micro : (m + 1) * micro]).to(self.device) for m in range(accumulation)]  # fmt: skip
            counts = torch.zeros(2, dtype=torch.float64)
            for b in batches:
                counts[0] += float((b.labels[:, 1:] != -100).sum())
                counts[1] += float((b.action_mask & b.has_codes[:, None, None]).sum())
            if dist.is_initialized():
                dist.all_reduce(counts)
            tokens_total, actions_total = float(counts[0]), max(float(counts[1]), 1.0)
            sums = torch.zeros(5, dtype=torch.float64)
            model.train()
            for m, b in enumerate(batches):
                sync = m == len(batches) - 1
                with self._no_sync(model, sync), autocast:
                    out = model(b)
                loss = (out.token_loss * (out.token_count / max(tokens_total, 1.0)) + policy.config.action_loss_weight * out.action_loss * (out.action_count / actions_total)) * self.world_size  # fmt: skip
                loss.backward()
                sums += torch.tensor([float(out.token_loss.detach()) * out.token_count, float(out.action_loss.detach()) * out.action_count, out.code_correct, out.code_count, len(b)], dtype=torch.float64)  # fmt: skip
            grad_norm = self._clip([p for _, p in trainable])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if dist.is_initialized():
                dist.all_reduce(sums)
            token_loss = float(sums[0]) / max(tokens_total, 1.0)
            action_loss = float(sums[1]) / actions_total
            window_samples += int(sums[4])
            done = step + 1
            last = {
                "step": done,
                "loss": token_loss + policy.config.action_loss_weight * action_loss,
                "token_loss": token_loss,
                "action_loss": action_loss,
                "code_accuracy": float(sums[2]) / max(float(sums[3]), 1.0),
                "lr": lr,
                "grad_norm": grad_norm,
            }
            if done % cfg.run.log_every == 0 or done == cfg.run.max_steps:
                elapsed = time.perf_counter() - window_start
                last["samples_per_s"] = window_samples / max(elapsed, 1e-9)
                last["memory_mb"] = _memory_mb(self.device)
                window_start, window_samples = time.perf_counter(), 0
                self._log(last)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{last['loss']:.4f}", act=f"{action_loss:.4f}", lr=f"{lr:.2e}")  # fmt: skip
            is_last = done == cfg.run.max_steps
            if (cfg.run.eval_every and done % cfg.run.eval_every == 0) or is_last:
                evaluation = self._evaluate(model, done)
            if (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or is_last:
                self._save(done, optimizer)
        if progress is not None:
            progress.close()
        if start_step >= cfg.run.max_steps:
            # a finished run started again: evaluate (and export) what it holds
            evaluation = self._evaluate(model, start_step)
        export, adapter = self._export()
        if self.is_main:
            self._close_logs()
            if cfg.run.plot:
                from metis_core.vla.training.plots import plot_curves

                plot_curves(self.output_dir / "metrics.jsonl", self.output_dir / "curves.png")
        if dist.is_initialized():
            dist.barrier()
        result = TrainResult(
            output_dir=self.output_dir,
            steps=cfg.run.max_steps,
            seconds=time.perf_counter() - started,
            final_metrics=last,
            evaluation=evaluation,
            resumed_from=resumed_from,
            export=export,
            adapter=adapter,
        )
        self._callback("on_train_end", result)
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        return result

    # -- pieces ------------------------------------------------------------------------------

    def _loader(self, data: Any, start_step: int, per_process: int) -> Any:
        """This process's samples of every step from ``start_step`` on, built by
        ``run.num_workers`` dataloader workers (decoding frames ahead of the model)."""
        from torch.utils.data import DataLoader

        cfg = self.config

        def numbers(step: int) -> list[int]:
            batch_index = step % cfg.run.overfit_batches if cfg.run.overfit_batches else step
            first = batch_index * self.global_batch + self.rank * per_process
            return [first + i for i in range(per_process)]

        steps = [numbers(step) for step in range(start_step, cfg.run.max_steps)]
        # Note: workers are spawned, not forked: a fork of a process whose video decoder and
        # torch threads hold locks can deadlock in the child.
        workers = cfg.run.num_workers
        return DataLoader(_Samples(data), batch_sampler=steps, num_workers=workers, collate_fn=_as_list, prefetch_factor=2 if workers else None, multiprocessing_context="spawn" if workers else None, persistent_workers=False)  # fmt: skip

    def _freeze_unused(self, policy: Any, data: Any, micro: int) -> list[str]:
        """One probe forward/backward (same samples on every process): what gets no gradient
        is frozen. Gradients are cleared afterwards; nothing is updated."""
        candidates = [(n, p) for n, p in policy.named_parameters() if p.requires_grad]
        if not candidates:
            raise ValueError("nothing to train: every parameter is frozen")
        batch = policy.collate([data.sample(i) for i in range(min(micro, 2))]).to(self.device)
        policy.train()
        out = policy(batch)
        (out.token_loss + out.action_loss).backward()
        frozen = []
        for name, param in candidates:
            if param.grad is None:
                param.requires_grad_(False)
                frozen.append(name)
            param.grad = None
        if self.config.lora is not None:
            from metis_core.vla.lora import assert_trainable_set

            if frozen:
                raise ValueError(f"LoRA parameters the forward never reaches: {frozen[:5]} ({len(frozen)}); exclude their modules from the adapters")  # fmt: skip
            assert_trainable_set(policy, self.lora_report)
        return frozen

    def _wrap(self, policy: Any) -> Any:
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            return DistributedDataParallel(policy, device_ids=[self.device.index] if self.device.type == "cuda" else None)  # fmt: skip
        if self.mode == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(self.device.type, (dist.get_world_size(),))
            # the frozen dynamics tokenizers stay whole (they are not trained and are used outside forward)
            self._detached = {}
            for name in ("motion_tokenizer", "visual_tokenizer"):
                if name not in policy._modules:
                    self._detached[name] = getattr(policy, name)
                    continue
                module = policy._modules.pop(name)
                self._detached[name] = module
                policy.__dict__[name] = module
            for module in list(policy.backbone.modules()):
                if isinstance(module, torch.nn.ModuleList):
                    for block in module:
                        if any(p.requires_grad for p in block.parameters()) or any(True for _ in block.parameters()):  # fmt: skip
                            fully_shard(block, mesh=mesh)
            fully_shard(policy, mesh=mesh)
            return policy
        return policy

    @staticmethod
    def _no_sync(model: Any, sync: bool) -> Any:
        if sync:
            return contextlib.nullcontext()
        if hasattr(model, "no_sync"):
            return model.no_sync()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(False, recurse=True)

            @contextlib.contextmanager
            def restore() -> Any:
                try:
                    yield
                finally:
                    model.set_requires_gradient_sync(True, recurse=True)

            return restore()
        return contextlib.nullcontext()

    def _clip(self, params: list[torch.Tensor]) -> float:
        clip = self.config.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else float("inf"))
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    # -- state -------------------------------------------------------------------------------

    def _full_state(self, optimizer: Any | None) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:  # fmt: skip
        """Full (gathered) trainable weights and optimizer state; a collective under FSDP."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(self.policy, options=options)
        wanted = set(self.trainable_names)
        weights = {k: v for k, v in model_state.items() if k in wanted}
        missing = wanted - set(weights)
        if missing and self.is_main:
            raise RuntimeError(f"trainable parameters missing from the gathered state: {sorted(missing)[:5]}")  # fmt: skip
        opt_state = get_optimizer_state_dict(self.policy, optimizer, options=options) if optimizer is not None else None  # fmt: skip
        return weights, opt_state

    def _trainer_record(self, step: int) -> dict[str, Any]:
        from metis_core import __version__

        return {
            "step": step,
            "samples": step * self.global_batch,
            "config": self.config.to_dict(),
            "config_sha256": config_digest(self.config),
            "data": self.data.fingerprint(),
            "init_from": str(self.init_source) if self.init_source is not None else None,
            "world_size": self.world_size,
            "distributed": self.mode,
            "schedule": {
                "lr": learning_rate(self.config, max(step - 1, 0)),
                "next_lr": learning_rate(self.config, step),
            },
            "lora": self.lora_report.to_dict() if self.lora_report is not None else None,
            "trainable": self.trainable_names,
            "metis_core_version": __version__,
        }

    def _save(self, step: int, optimizer: Any) -> None:
        weights, opt_state = self._full_state(optimizer)
        rng = [ckpt.rng_state()]
        if dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (ckpt.rng_state()))
            rng = gathered
        if self.is_main:
            path = ckpt.write_checkpoint(
                self.output_dir,
                step,
                trainer=self._trainer_record(step),
                weights=weights,
                optimizer=opt_state,
                rng=rng,
                normalization=self.policy.normalization.to_dict(),
            )
            ckpt.prune_checkpoints(self.output_dir, self.config.run.keep_last)
            self._callback("on_checkpoint", path)
        if dist.is_initialized():
            dist.barrier()

    def _load(self, path: Path, optimizer: Any) -> int:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        state = ckpt.read_checkpoint(path)
        record = state["trainer"]
        differences = config_differences(record["config"], self.config)
        if differences:
            raise ResumeMismatchError(
                f"{self.output_dir} holds a checkpoint ({path.name}) of another config; it "
                "differs in:\n  " + "\n  ".join(differences) + "\nrun it with the same config, "
                "or give a new config another output directory (-o)"
            )
        data_now = self.data.fingerprint()
        changed = [f"{name}: {key} {record['data'].get(name, {}).get(key)!r} -> {value!r}" for name, entry in data_now.items() for key, value in entry.items() if record["data"].get(name, {}).get(key) != value and key != "root"]  # fmt: skip
        changed += [f"{name}: not in the checkpoint's data" for name in data_now if name not in record["data"]]  # fmt: skip
        if changed:
            raise ResumeMismatchError(f"{self.output_dir}: the checkpoint {path.name} was trained on other data:\n  " + "\n  ".join(changed))  # fmt: skip
        if sorted(record["trainable"]) != sorted(self.trainable_names):
            raise ResumeMismatchError(f"{path}: the checkpoint trains other parameters than this run ({len(record['trainable'])} vs {len(self.trainable_names)} tensors)")  # fmt: skip
        if record["world_size"] != self.world_size and self.is_main:
            print(f"note: the checkpoint was written by {record['world_size']} process(es), this run has {self.world_size}: the same global batch, losses equal to float rounding (not bit for bit)", flush=True)  # fmt: skip
        options = StateDictOptions(full_state_dict=True, strict=False)
        weights = state["weights"]
        dtypes = dict(self.policy.named_parameters())
        weights = {k: v.to(dtypes[k].dtype) for k, v in weights.items()}
        set_model_state_dict(self.policy, weights, options=options)
        set_optimizer_state_dict(self.policy, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))  # fmt: skip
        per_rank = state["rng"]
        if len(per_rank) == self.world_size:
            ckpt.set_rng_state(*per_rank[self.rank])
        from metis_core.vla.normalization_policy import PolicyNormalization

        saved_norm = PolicyNormalization.from_dict(state["normalization"])
        if json.dumps(saved_norm.to_dict(), sort_keys=True) != json.dumps(self.policy.normalization.to_dict(), sort_keys=True):  # fmt: skip
            raise ResumeMismatchError(f"{path}: the normalisation statistics differ from the data's")  # fmt: skip
        return int(record["step"])

    # -- logs --------------------------------------------------------------------------------

    def _open_logs(self, start_step: int) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / "metrics.jsonl"
        if path.exists():
            # keep what the resumed checkpoint had seen; drop records of the killed run's tail
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    if record.get("step", 0) <= start_step:
                        kept.append(line)
            from metis_core.io import atomic_write

            with atomic_write(path, "w") as handle:
                handle.write("".join(k + "\n" for k in kept))
        self._log_handle = path.open("a", encoding="utf-8")
        if self.config.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=start_step + 1)  # fmt: skip
            except Exception:
                self._tensorboard = None

    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main or self._log_handle is None:
            return
        clean = {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in record.items()}  # fmt: skip
        self._log_handle.write(json.dumps(clean) + "\n")
        self._log_handle.flush()
        self._callback("on_log", clean)
        if self._tensorboard is not None:
            prefix = "eval/" if record.get("kind") == "eval" else "train/"
            for key, value in clean.items():
                if key not in ("step", "kind") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(prefix + key, value, clean["step"])

    def _close_logs(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    # -- evaluation and export ---------------------------------------------------------------

    def _plain_policy(self) -> Any:
        """A whole, unwrapped policy with the current weights (gathered under FSDP; rank 0
        returns it, others ``None``). Every process must call this."""
        if self.mode != "fsdp":
            return self.policy if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))  # fmt: skip
        if not self.is_main:
            return None
        if self._eval_policy is None:
            from metis_core.vla.modeling_metis import MetisPolicy

            copy = MetisPolicy(
                self.policy.config,
                text_tokenizer=None,
                vocabulary=self.policy.vocabulary,
                motion_tokenizer=self._detached["motion_tokenizer"],
                visual_tokenizer=self._detached["visual_tokenizer"],
                normalization=self.policy.normalization,
            )
            if self.config.lora is not None:
                from metis_core.vla.lora import LoraSpec, apply_lora

                apply_lora(copy, LoraSpec.from_dict(self.config.lora))
            self._eval_policy = copy
        own = dict(self._eval_policy.named_parameters())
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
        self._eval_policy.load_state_dict(state, strict=False)
        return self._eval_policy

    def _evaluate(self, model: Any, step: int) -> dict[str, float]:
        from metis_core.vla.training.evaluation import evaluate_policy

        plain = self._plain_policy()
        metrics: dict[str, float] = {}
        if self.is_main and self.config.data.heldout_fraction > 0:
            samples = self.data.heldout(self.config.run.eval_samples)
            with self._autocast:
                metrics = evaluate_policy(plain, samples, batch_size=self.config.run.micro_batch)
            self._log({"kind": "eval", "step": step, **metrics})
            self._print(f"step {step} held-out: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))  # fmt: skip
        if dist.is_initialized():
            dist.barrier()
        return metrics

    def _export(self) -> tuple[Path | None, Path | None]:
        plain = self._plain_policy()
        final = adapter = None
        if self.is_main:
            final = self.output_dir / "final"
            if self.config.lora is not None:
                from metis_core.vla.lora import merge_lora, save_lora_adapter

                adapter = self.output_dir / "adapter"
                # a bf16 run computed with its frozen base rounded to bf16: that copy differs
                # from the fp32 base by design, so it is not compared against it
                save_lora_adapter(plain, adapter, base=str(self.init_source), verify_base=self.config.run.precision != "bf16")  # fmt: skip
                merged = merge_lora(plain, dtype=torch.float32)  # merged in fp32, saved in fp32
                merged.save_pretrained(final)
            else:
                plain.save_pretrained(final)
        if dist.is_initialized():
            dist.barrier()
        return final, adapter
