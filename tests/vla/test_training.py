"""Training: recipes, data splits, the loop's exactness (accumulation, DDP, FSDP, SIGKILL resume),
refusals, LoRA post-training and the ablation switches — on tiny annotated synthetic data."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from helpers_training import overrides, tokenizers_for_training, training_datasets

from metis_core.config import ComponentConfigError
from metis_core.vla.training import ResumeMismatchError, Trainer, learning_rate, load_config
from metis_core.vla.training.data import split_episodes

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") != "eval"]


def small(dataset: str = "pretrain", **extra: object) -> list[str]:
    base = {"run.log_every": 1, "run.checkpoint_every": 0, "data.heldout_fraction": 0, "run.plot": "false", "run.global_batch": 8, "run.micro_batch": 4}  # fmt: skip
    return overrides(dataset, **{**base, **extra})


def cli(args: list[str], **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "metis_core.vla.training.cli", *args], env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)  # fmt: skip


# -- recipes and config --------------------------------------------------------------------


def test_recipes_hold_the_paper_values() -> None:
    need = ["data.datasets.egodex=/nowhere", "model.motion_tokenizer=/m", "model.visual_tokenizer=/v"]  # fmt: skip
    pre = load_config("pretrain", need)
    assert (pre.stage, pre.optim.lr, pre.optim.weight_decay, pre.optim.grad_clip) == ("pretrain", 2e-5, 0.0, 1.0)  # fmt: skip
    assert (pre.run.global_batch, pre.run.max_steps, pre.run.distributed, pre.optim.schedule) == (768, 60000, "fsdp", "constant")  # fmt: skip
    assert pre.data.weights is None
    assert pre.lora is None
    assert pre.data.reasoning
    post = load_config("posttrain", ["data.datasets.g1=/nowhere", "model.init_from=/pre"])
    assert post.lora["r"] == 32
    assert post.lora["components"] == ["llm", "dino", "siglip", "projector"]
    assert (post.optim.lr, post.optim.weight_decay, post.optim.schedule, post.optim.step_fraction, post.optim.gamma) == (3.5e-4, 1e-3, "step", 0.8, 0.1)  # fmt: skip
    assert (post.run.micro_batch, post.run.global_batch, post.run.precision) == (4, None, "bf16")
    assert post.run.batch_size(8) == 32
    from metis_core.vla.configuration_metis import MetisConfig

    assert MetisConfig.paper().chunk_len == 30


def test_learning_rate_schedule() -> None:
    need = ["data.datasets.d=/x", "model.init_from=/p", "run.max_steps=100", "optim.warmup_steps=4"]
    config = load_config("posttrain_tiny", need)
    lrs = [learning_rate(config, s) for s in range(100)]
    peak = config.optim.lr
    assert lrs[:4] == pytest.approx([peak / 4, peak / 2, 3 * peak / 4, peak])
    assert lrs[79] == pytest.approx(peak)
    assert lrs[80] == pytest.approx(0.1 * peak)
    assert max(lrs[80:]) == pytest.approx(0.1 * peak)
    assert min(lrs[4:80]) == pytest.approx(peak)


def test_overrides_are_checked() -> None:
    need = ["data.datasets.d=/x", "model.init_from=/p"]
    with pytest.raises(ComponentConfigError, match="did you mean 'lr'"):
        load_config("posttrain_tiny", [*need, "optim.lrr=1e-3"])
    with pytest.raises(ComponentConfigError, match="expected key=value"):
        load_config("posttrain_tiny", [*need, "optim.lr"])
    with pytest.raises(ComponentConfigError, match="unknown section"):
        load_config("posttrain_tiny", [*need, "optimizer.lr=1"])
    with pytest.raises(ValueError, match="did you mean 'pretrain_tiny'"):
        load_config("pretrain_tin", need)
    with pytest.raises(ValueError, match="data.datasets is empty"):
        load_config("posttrain_tiny", ["model.init_from=/p"])
    with pytest.raises(ValueError, match="needs the trained dynamics tokenizers"):
        load_config("pretrain_tiny", ["data.datasets.d=/x"])
    config = load_config("posttrain_tiny", [*need, "optim.lr=5e-4", "lora.r=8", "data.weights.d=2"])
    assert (config.optim.lr, config.lora["r"], config.data.weights) == (5e-4, 8, {"d": 2.0})
    # a mapping value (JSON or YAML) keeps its numbers, 1e-06 included (YAML 1.1 reads it as text)
    config = load_config("posttrain_tiny", [*need, 'model.config={"action_loss_weight": 1e-06}', "data.weights={d: 1e-3}"])  # fmt: skip
    assert config.model.config == {"action_loss_weight": 1e-06}
    assert config.data.weights == {"d": 1e-3}


def test_episode_splits_are_disjoint_nested_and_seeded() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        count = int(rng.integers(2, 60))
        held = float(rng.uniform(0, 0.5))
        small_fraction = float(rng.uniform(0.05, 1.0))
        seed = int(rng.integers(0, 1000))
        full = split_episodes(count, heldout_fraction=held, demo_fraction=1.0, seed=seed, salt=1)
        part = split_episodes(count, heldout_fraction=held, demo_fraction=small_fraction, seed=seed, salt=1)  # fmt: skip
        assert not set(full.train) & set(full.heldout)
        assert sorted(full.train + full.heldout + full.excluded) == list(range(count))
        assert full.heldout == part.heldout
        assert set(part.train) <= set(full.train)
        assert len(part.train) == max(1, math.ceil(small_fraction * len(full.train) - 1e-9))
        if held > 0:
            assert 1 <= len(full.heldout) < count
        assert split_episodes(count, heldout_fraction=held, demo_fraction=1.0, seed=seed, salt=1) == full  # fmt: skip


# -- the loop ------------------------------------------------------------------------------


def test_a_tiny_policy_overfits_one_batch(tmp_path: Path) -> None:
    config = load_config("pretrain_tiny", small("downstream", **{"run.max_steps": 200, "run.overfit_batches": 1, "run.global_batch": 8, "run.micro_batch": 8, "optim.lr": 1e-3, "run.log_every": 1, "run.plot": "true"}))  # fmt: skip
    Trainer(config, tmp_path / "run").run()
    records = metrics(tmp_path / "run")
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first, last = records[0]["action_loss"], min(r["action_loss"] for r in records[-10:])
    assert first / last >= 10.0, (first, last)
    assert records[-1]["token_loss"] < 0.5 * records[0]["token_loss"]
    assert records[-1]["code_accuracy"] > 0.5


def test_gradient_accumulation_matches_one_micro_batch(tmp_path: Path) -> None:
    runs = {}
    for micro in (8, 4, 2):
        config = load_config("pretrain_tiny", small(**{"run.max_steps": 3, "run.micro_batch": micro}))  # fmt: skip
        Trainer(config, tmp_path / f"m{micro}").run()
        runs[micro] = metrics(tmp_path / f"m{micro}")
    for micro in (4, 2):
        for a, b in zip(runs[8], runs[micro], strict=True):
            for key in ("loss", "token_loss", "action_loss", "grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (micro, key)
    # dataloader workers build the same samples: the same curve, bit for bit
    config = load_config("pretrain_tiny", small(**{"run.max_steps": 3, "run.micro_batch": 4, "run.num_workers": 2}))  # fmt: skip
    Trainer(config, tmp_path / "workers").run()
    for a, b in zip(runs[4], metrics(tmp_path / "workers"), strict=True):
        for key in ("loss", "token_loss", "action_loss", "grad_norm"):
            assert b[key] == a[key], key


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_two_processes_match_one(tmp_path: Path, mode: str) -> None:
    args = small(**{"run.max_steps": 3})
    one = load_config("pretrain_tiny", args)
    Trainer(one, tmp_path / "one").run()
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "metis_core.vla.training.cli", "pretrain_tiny", "-o", str(tmp_path / mode), *args, f"run.distributed={mode}"], env=ENV, cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reference, distributed = metrics(tmp_path / "one"), metrics(tmp_path / mode)
    assert len(distributed) == 3
    for a, b in zip(reference, distributed, strict=True):
        for key in ("loss", "token_loss", "action_loss", "grad_norm", "code_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (mode, key, a, b)
    # the exported policies agree too
    from metis_core.vla.modeling_metis import MetisPolicy

    pa, pb = MetisPolicy.from_pretrained(tmp_path / "one" / "final"), MetisPolicy.from_pretrained(tmp_path / mode / "final")  # fmt: skip
    worst = max(float((x.double() - y.double()).abs().max()) for x, y in zip(pa.state_dict().values(), pb.state_dict().values(), strict=True))  # fmt: skip
    assert worst < 1e-5


def test_sigkill_mid_run_then_resume_gives_the_same_curve(tmp_path: Path) -> None:
    args = small(**{"run.max_steps": 8, "run.checkpoint_every": 3, "run.keep_last": 2})
    reference = cli(["pretrain_tiny", "-o", str(tmp_path / "reference"), *args])
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]
    victim = cli(["pretrain_tiny", "-o", str(tmp_path / "killed"), *args])
    log = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.exists() and any(json.loads(line)["step"] >= 4 for line in log.read_text().splitlines() if line.strip()):  # fmt: skip
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    checkpoints = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir() if not p.name.startswith("."))  # fmt: skip
    assert checkpoints
    assert checkpoints[-1] in ("step-00000003", "step-00000006")
    assert not (tmp_path / "killed" / "final").exists()
    resumed = cli(["pretrain_tiny", "-o", str(tmp_path / "killed"), *args])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed at step" in out
    a, b = metrics(tmp_path / "reference"), metrics(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 9))
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "token_loss", "action_loss", "grad_norm", "code_accuracy", "lr"):
            assert x[key] == y[key], (key, x, y)  # exactly, not approximately
    kept = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert kept == ["step-00000006", "step-00000008"]


def test_resume_refuses_another_config_or_other_data(tmp_path: Path) -> None:
    args = small(**{"run.max_steps": 2, "run.checkpoint_every": 1})
    Trainer(load_config("pretrain_tiny", args), tmp_path / "run").run()
    with pytest.raises(ResumeMismatchError, match=r"optim.lr: 0.001 -> 0.002"):
        Trainer(load_config("pretrain_tiny", [*args, "optim.lr=2e-3"]), tmp_path / "run").run()
    other = [a.replace(str(training_datasets()["pretrain"]), str(training_datasets()["downstream"])) for a in args]  # fmt: skip
    with pytest.raises(ResumeMismatchError, match="config|data"):
        Trainer(load_config("pretrain_tiny", other), tmp_path / "run").run()
    # logging fields may change: the run resumes (and has nothing left to do)
    result = Trainer(load_config("pretrain_tiny", [*args, "run.log_every=5"]), tmp_path / "run").run()  # fmt: skip
    assert result.resumed_from == 2


def test_codes_of_other_tokenizers_are_refused(tmp_path: Path) -> None:
    from metis_core.interfaces import Tokenizer
    from metis_core.vla.annotate import AnnotationMismatchError

    motion_dir, _ = tokenizers_for_training()
    other = Tokenizer.from_pretrained(motion_dir)
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)
    other.save_pretrained(tmp_path / "other_motion")
    args = [a if not a.startswith("model.motion_tokenizer=") else f"model.motion_tokenizer={tmp_path / 'other_motion'}" for a in small(**{"run.max_steps": 1})]  # fmt: skip
    with pytest.raises(AnnotationMismatchError, match="motion"):
        Trainer(load_config("pretrain_tiny", args), tmp_path / "run").run()


# -- post-training and ablations -----------------------------------------------------------


def test_lora_post_training_after_pre_training(tmp_path: Path) -> None:
    from metis_core.vla.lora import load_policy
    from metis_core.vla.modeling_metis import MetisPolicy

    Trainer(load_config("pretrain_tiny", small(**{"run.max_steps": 4})), tmp_path / "pre").run()
    post_args = [a for a in small("downstream", **{"run.max_steps": 6, "data.heldout_fraction": 0.25, "run.eval_samples": 8, "optim.lr": 5e-3}) if not a.startswith("model.")]  # fmt: skip
    trainer = Trainer(load_config("posttrain_tiny", [*post_args, f"model.init_from={tmp_path / 'pre'}"]), tmp_path / "post")  # fmt: skip
    result = trainer.run()
    report = trainer.lora_report.to_dict()
    trainable = set(trainer.trainable_names)
    assert all(("lora_" in n) or n.startswith("action_head.") for n in trainable)
    assert {n for n in trainable if n.startswith("action_head.")} == {f"action_head.{n}" for n, _ in trainer.policy.action_head.named_parameters()}  # fmt: skip
    for component in ("llm", "dino", "siglip", "projector"):
        assert report["components"][component]["modules"] > 0, component
    assert result.evaluation["fingertip_mm"] > 0
    assert "subtask_accuracy" in result.evaluation
    # the frozen base is the pre-trained policy, bit for bit; merged and adapter actions agree
    pre = MetisPolicy.from_pretrained(tmp_path / "pre" / "final")
    unmerged = load_policy(result.adapter)
    merged = MetisPolicy.from_pretrained(result.export)
    base_now = {n.replace(".base_layer", ""): p for n, p in unmerged.backbone.named_parameters() if "lora_" not in n}  # fmt: skip
    for name, param in pre.backbone.named_parameters():
        assert torch.equal(base_now[name], param), name
    sample = trainer.data.heldout(8)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(20):
        s = sample[int(rng.integers(len(sample)))]
        state = s.state + rng.normal(0, 0.01, 48).astype(np.float32)
        a = unmerged.predict_action(s.image, s.instruction, state, reason=False, unnorm_key="downstream").actions  # fmt: skip
        b = merged.predict_action(s.image, s.instruction, state, reason=False, unnorm_key="downstream").actions  # fmt: skip
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst < 1e-4, worst


def test_the_no_dynamics_ablation_trains_and_acts(tmp_path: Path) -> None:
    from metis_core.vla.modeling_metis import MetisPolicy

    trainer = Trainer(load_config("pretrain_tiny", small(**{"run.max_steps": 3, "model.dynamics_tokens": "false"})), tmp_path / "run")  # fmt: skip
    result = trainer.run()
    policy = MetisPolicy.from_pretrained(result.export)
    assert policy.config.dynamics_tokens is False
    samples = [trainer.data.sample(i) for i in range(8)]
    batch = policy.collate(samples)
    v = policy.vocabulary
    codes = v.added_ids[: v.spec.visual_codes + v.spec.motion_codes]
    assert not torch.isin(batch.input_ids, codes).any()
    trained = batch.labels[batch.labels != -100]
    assert not torch.isin(trained, codes).any()
    assert len(trained) >= len(samples)
    assert bool(batch.has_codes.all())
    s = samples[0]
    prediction = policy.predict_action(s.image, s.instruction, s.state, reason=False)
    assert prediction.actions.shape == (30, 48)
    assert np.isfinite(prediction.actions).all()
    assert prediction.motion_codes.size == 0
    reasoned = policy.predict_action(s.image, s.instruction, s.state, reason=True)
    assert reasoned.reasoned
    assert reasoned.actions.shape == (30, 48)
    assert result.final_metrics["code_accuracy"] == 0.0


def test_human_only_sources_and_demo_fraction(tmp_path: Path) -> None:
    from metis_core.vla.training.config import DataSection
    from metis_core.vla.training.data import TrainingData

    motion_dir, visual_dir = tokenizers_for_training()
    from metis_core.interfaces import Tokenizer

    motion, visual = Tokenizer.from_pretrained(motion_dir), Tokenizer.from_pretrained(visual_dir)
    root = training_datasets()["pretrain"]
    kwargs = {"seed": 0, "chunk_len": 30, "image_size": 224, "norm_mode": "q01_q99", "motion_tokenizer": motion, "visual_tokenizer": visual}  # fmt: skip
    full = TrainingData(DataSection(datasets={"p": str(root)}, heldout_fraction=0.25), **kwargs)
    half = TrainingData(DataSection(datasets={"p": str(root)}, heldout_fraction=0.25, demo_fraction=0.5), **kwargs)  # fmt: skip
    human = TrainingData(DataSection(datasets={"p": str(root)}, heldout_fraction=0.25, sources="human"), **kwargs)  # fmt: skip
    assert len(full.splits[0].heldout) == 6
    assert len(full.splits[0].train) == 18
    assert len(half.splits[0].train) == 9
    assert set(half.splits[0].train) <= set(full.splits[0].train)
    assert human.splits[0] == full.splits[0]  # every synthetic episode is a human hand
    train_rows = set()
    for e in half.splits[0].train:
        record = half.datasets[0].episodes[e]
        train_rows |= set(range(record["from"], record["to"]))
    drawn = {half.mixture.locate(g)[1] for g in range(2000)}
    assert drawn <= train_rows
    assert len(drawn) > 0.9 * len(train_rows)


def test_bf16_post_training_keeps_the_head_in_fp32(tmp_path: Path) -> None:
    post = [*small("downstream", **{"run.max_steps": 2, "run.precision": "bf16"})]
    seen: list[dict] = []
    dtypes: dict[str, set] = {}

    class Recorder:
        def on_log(self, trainer: Trainer, record: dict) -> None:
            seen.append(record)
            policy = trainer.policy
            dtypes["frozen"] = {p.dtype for p in policy.backbone.parameters() if not p.requires_grad}  # fmt: skip
            dtypes["trained"] = {p.dtype for p in policy.parameters() if p.requires_grad}
            dtypes["head"] = {p.dtype for p in policy.action_head.parameters()}

        def on_train_end(self, trainer: Trainer, result: object) -> None:
            seen.append({"end": True})

    trainer = Trainer(load_config("posttrain_tiny", post), tmp_path / "run", callbacks=[Recorder()])
    result = trainer.run()
    assert dtypes == {"frozen": {torch.bfloat16}, "trained": {torch.float32}, "head": {torch.float32}}  # fmt: skip
    assert all(math.isfinite(r["loss"]) for r in seen if "loss" in r)
    assert [r["step"] for r in seen if "loss" in r] == [1, 2]
    assert seen[-1] == {"end": True}
    assert (result.adapter / "adapter_model.safetensors").is_file()
    from metis_core.vla.modeling_metis import MetisPolicy

    merged = MetisPolicy.from_pretrained(result.export)
    assert {p.dtype for p in merged.parameters()} == {torch.float32}


def test_a_subtask_longer_than_generation_allows_is_refused() -> None:
    from helpers_vla import annotated_samples, tiny_policy

    policy = tiny_policy(max_subtask_tokens=8)
    reasoning = [s for s in annotated_samples() if s.subtask is not None]
    assert reasoning
    with pytest.raises(ValueError, match=r"more than max_subtask_tokens = 8.*model.config.max_subtask_tokens"):  # fmt: skip
        policy.collate(reasoning[:2])
    longest = max(len(s.subtask.encode()) for s in reasoning)
    assert longest <= tiny_policy().config.max_subtask_tokens  # the tiny default fits them
    tiny_policy().collate(reasoning[:2])


def test_frame_by_frame_decoding_gives_the_cached_samples() -> None:
    from metis_core.interfaces import Tokenizer
    from metis_core.vla.training.config import DataSection
    from metis_core.vla.training.data import TrainingData

    motion_dir, visual_dir = tokenizers_for_training()
    kwargs = {"seed": 0, "chunk_len": 30, "image_size": 224, "norm_mode": "q01_q99", "motion_tokenizer": Tokenizer.from_pretrained(motion_dir), "visual_tokenizer": Tokenizer.from_pretrained(visual_dir)}  # fmt: skip
    root = str(training_datasets()["downstream"])
    whole = TrainingData(DataSection(datasets={"d": root}), **kwargs)  # episodes decoded whole
    single = TrainingData(
        DataSection(datasets={"d": root}, cache_frames=8), **kwargs
    )  # frame by frame
    assert single._cached == 0
    for number in range(0, 400, 7):
        a, b = whole.sample(number), single.sample(number)
        assert a.image.shape == (224, 224, 3)
        assert np.array_equal(a.image, b.image)
        assert np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.motion_codes, b.motion_codes)
        assert (a.subtask, a.previous_subtask) == (b.subtask, b.previous_subtask)
    assert single._cached == 0
    assert 0 < whole._cached <= 8192
