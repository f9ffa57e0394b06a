"""LoRA post-training adapters on the tiny policy: targets, trainable set, adapter checkpoints,
fp32 merges and the CLI."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import helpers_vla as h
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from metis_core.vla import MetisPolicy
from metis_core.vla.lora import (
    ACTION_HEAD_FILE,
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    LORA_FILE,
    BaseMismatchError,
    LoraSpec,
    apply_lora,
    assert_trainable_set,
    base_state_dict,
    load_lora_policy,
    load_policy,
    lora_report,
    merge_lora,
    read_lora_meta,
    save_lora_adapter,
)
from metis_core.vla.lora_cli import lora_command

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

R = 32
LR = 1e-2  # Adam moves each adapter entry by ~lr per step: the adapters clearly change the outputs


def _obs(index: int = 0, frame: int = 0):
    episode = h.episodes()[index]
    return episode.images["ego"][frame], episode.instruction, episode.state[frame]


def _probe_samples(count: int, seed: int = 1) -> list:
    """``count`` training samples with random images and perturbed states."""
    rng = np.random.default_rng(seed)
    samples = h.annotated_samples()
    picked = [samples[i] for i in rng.choice(len(samples), size=count, replace=False)]
    return [
        dataclasses.replace(
            s,
            image=rng.integers(0, 256, size=s.image.shape, dtype=np.uint8),
            state=(s.state + rng.normal(0, 0.01, size=s.state.shape)).astype(s.state.dtype),
        )
        for s in picked
    ]


@torch.no_grad()
def _forward(policy: MetisPolicy, samples: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced normalised actions ``(N, C, D)`` and per-batch losses."""
    policy.eval()
    actions, losses = [], []
    for start in range(0, len(samples), 8):
        out = policy(policy.collate(samples[start : start + 8]))
        actions.append(out.actions.float())
        losses.append(out.loss.float())
    return torch.cat(actions), torch.stack(losses)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A saved base, a LoRA'd copy trained a few steps and its adapter directory."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lora")
    base = h.tiny_policy(seed=0)
    base.save_pretrained(root / "base")
    probes = _probe_samples(24)
    base_actions, base_losses = _forward(base, probes)
    base_predictions = [base.predict_action(*_obs(1, f)).actions for f in (0, 20)]
    policy = MetisPolicy.from_pretrained(root / "base")
    report = apply_lora(policy, LoraSpec(r=R))
    init_actions, init_losses = _forward(policy, probes)
    init_predictions = [policy.predict_action(*_obs(1, f)).actions for f in (0, 20)]
    frozen_before = {k: v.clone() for k, v in base_state_dict(policy).items()}
    head_before = {k: v.clone() for k, v in policy.action_head.state_dict().items()}
    losses = h.train(policy, 12, lr=LR)
    save_lora_adapter(policy, root / "adapter", base=root / "base")
    return {
        "root": root,
        "policy": policy,
        "report": report,
        "probes": probes,
        "base": (base_actions, base_losses, base_predictions),
        "init": (init_actions, init_losses, init_predictions),
        "frozen_before": frozen_before,
        "head_before": head_before,
        "losses": losses,
    }


def test_outputs_are_unchanged_at_init(world) -> None:
    base_actions, base_losses, base_predictions = world["base"]
    init_actions, init_losses, init_predictions = world["init"]
    assert torch.equal(base_actions, init_actions)
    assert torch.equal(base_losses, init_losses)
    for a, b in zip(base_predictions, init_predictions, strict=True):
        assert np.array_equal(a, b)


def test_targets_counts_and_trainable_set(world) -> None:
    policy, report = world["policy"], world["report"]
    assert report.spec.lora_alpha == 16.0
    modules = {name: c.modules for name, c in report.components.items()}
    # tiny config: LLaMA 2 layers × 7 + lm_head; each tower 2 blocks, of which block 1 (past
    # feature_layer = -2) is left out; SigLIP's pooling head (3 Linear) too; projector fc1-3
    assert modules == {"llm": 15, "dino": 6, "siglip": 6, "projector": 3}
    assert "llm.lm_head" in report.components["llm"].targets
    for tower, blocks in (("dino", "dino.encoder.layer."), ("siglip", "siglip.encoder.layers.")):
        targets = report.components[tower].targets
        assert all(t.startswith(blocks + "0.") for t in targets), targets
        excluded = [name for name, _ in report.components[tower].excluded]
        assert sum(name.startswith(blocks + "1.") for name in excluded) == 6
    assert {n for n, _ in report.components["siglip"].excluded if ".head." in n} == {
        "siglip.head.attention.out_proj",
        "siglip.head.mlp.fc1",
        "siglip.head.mlp.fc2",
    }
    total_lora = 0
    for component in report.components.values():
        expected = 0
        for target in component.targets:
            layer = policy.backbone.get_submodule(target).base_layer
            assert isinstance(layer, nn.Linear)
            expected += R * (layer.in_features + layer.out_features)
        assert component.lora_parameters == expected > 0, component.name
        total_lora += expected
    head = sum(p.numel() for p in policy.action_head.parameters())
    assert report.action_head_parameters == head
    assert report.trainable_parameters == total_lora + head
    all_params = sum(p.numel() for p in policy.backbone.parameters()) + head
    assert report.total_parameters == all_params
    assert report.trainable_fraction == pytest.approx((total_lora + head) / all_params)
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    targets = {f"backbone.{t}" for t in report.targets}
    lora = {f"{t}.lora_{ab}.default.weight" for t in targets for ab in "AB"}
    heads = {f"action_head.{n}" for n, _ in policy.action_head.named_parameters()}
    assert trainable == lora | heads
    assert_trainable_set(policy, report)
    table = report.table()
    for name in ("llm", "dino", "siglip", "projector", "action head", "trainable"):
        assert name in table
    assert report.to_dict()["components"]["dino"]["modules"] == 6


def test_every_lora_parameter_gets_a_gradient(world) -> None:
    """No unused adapter (DDP without find_unused_parameters would fail); after training B ≠ 0,
    so A gets a gradient too."""
    policy = world["policy"]
    policy.train()
    policy.zero_grad()
    policy(policy.collate(h.annotated_samples()[:4])).loss.backward()
    no_grad = [
        n
        for n, p in policy.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    policy.zero_grad()
    policy.eval()
    assert no_grad == []


def test_trainable_set_check_names_offenders(world) -> None:
    policy = world["policy"]
    param = policy.backbone.projector.fc1.base_layer.weight
    param.requires_grad_(True)
    try:
        with pytest.raises(ValueError, match=r"backbone\.projector\.fc1\.base_layer\.weight"):
            assert_trainable_set(policy)
    finally:
        param.requires_grad_(False)


def test_requested_components_must_match_modules() -> None:
    policy = h.tiny_policy(seed=1)
    with pytest.raises(ValueError, match=r"\['vision'\].*dino.*siglip"):
        apply_lora(policy, LoraSpec(components=("llm", "vision")))
    policy.backbone.projector = nn.Sequential(nn.GELU())  # a part without any Linear
    with pytest.raises(ValueError, match="'projector' matched no nn.Linear"):
        apply_lora(policy, LoraSpec())
    assert not any("lora" in n for n, _ in policy.named_parameters())  # nothing injected
    for bad in ({"r": 0}, {"alpha": -1.0}, {"dropout": 1.0}, {"init": "pissa"}, {"components": ()}, {"components": ("llm", "llm")}):  # fmt: skip
        with pytest.raises(ValueError, match="must|repeated"):
            LoraSpec(**bad)
    spec = LoraSpec(r=8, include_lm_head=False)
    assert LoraSpec.from_dict(spec.to_dict()) == spec
    assert spec.lora_alpha == 8.0
    apply_lora(policy, LoraSpec(components=("llm",), include_lm_head=False))
    assert "llm.lm_head" not in lora_report(policy).targets
    with pytest.raises(ValueError, match="already carries adapters"):
        apply_lora(policy, LoraSpec(components=("llm",)))


def test_training_moves_only_lora_and_the_head(world) -> None:
    policy = world["policy"]
    assert all(np.isfinite(world["losses"]))
    after = base_state_dict(policy)
    assert after.keys() == world["frozen_before"].keys()
    moved = [k for k, v in world["frozen_before"].items() if not torch.equal(v, after[k])]
    assert moved == []
    head = policy.action_head.state_dict()
    assert any(not torch.equal(v, head[k]) for k, v in world["head_before"].items())
    b_norm = sum(float(p.abs().sum()) for n, p in policy.named_parameters() if ".lora_B." in n)
    assert b_norm > 0


def test_adapter_save_load_gives_identical_actions_and_losses(world) -> None:
    root, policy = world["root"], world["policy"]
    adapter = root / "adapter"
    files = sorted(p.name for p in adapter.iterdir())
    assert files == sorted([ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, ACTION_HEAD_FILE, LORA_FILE, "config.json", "motion_tokenizer", "normalization.json", "tokenizer", "visual_tokenizer"])  # fmt: skip
    meta = read_lora_meta(adapter)
    assert meta["base"]["path"] == str((root / "base").resolve())
    assert meta["base"]["fingerprint"].startswith("sha256:")
    assert meta["report"]["trainable_parameters"] == world["report"].trainable_parameters
    loaded = load_lora_policy(adapter)
    for index, frame in ((0, 0), (1, 10), (2, 30)):
        a = policy.predict_action(*_obs(index, frame), temperature=0.0)
        b = loaded.predict_action(*_obs(index, frame), temperature=0.0)
        assert np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.motion_codes, b.motion_codes)
    probes = world["probes"][:16]
    actions_a, losses_a = _forward(policy, probes)
    actions_b, losses_b = _forward(loaded, probes)
    assert torch.equal(actions_a, actions_b)
    assert torch.equal(losses_a, losses_b)
    assert_trainable_set(loaded)
    assert isinstance(load_policy(adapter), MetisPolicy)
    assert not hasattr(load_policy(root / "base"), "_metis_lora")


def test_merge_matches_unmerged_in_fp32_and_has_plain_keys(world, tmp_path: Path) -> None:
    root, policy = world["root"], world["policy"]
    probes = world["probes"]
    unmerged, unmerged_losses = _forward(policy, probes)
    base_actions = world["base"][0]
    # the adapters changed the outputs (the comparison below is not vacuous)
    assert float((unmerged - base_actions).abs().max()) > 1e-2
    merged = merge_lora(load_lora_policy(root / "adapter"))
    merged_actions, merged_losses = _forward(merged, probes)
    diff = float((merged_actions - unmerged).abs().max())
    print(f"merged vs unmerged over {len(probes)} inputs: max |Δaction| = {diff:.3g} (normalised)")
    assert diff <= 1e-4
    assert torch.allclose(merged_losses, unmerged_losses, atol=1e-4)
    fresh = MetisPolicy.from_pretrained(root / "base")
    assert list(merged.state_dict()) == list(fresh.state_dict())
    assert not any("lora" in n or "base_layer" in n for n, _ in merged.named_modules())
    assert all(p.requires_grad for p in merged.backbone.parameters())
    merged.save_pretrained(tmp_path / "merged")
    reloaded = MetisPolicy.from_pretrained(tmp_path / "merged")
    assert torch.equal(_forward(reloaded, probes[:8])[0], merged_actions[:8])


def test_bf16_backbone_is_merged_in_fp32(world, monkeypatch) -> None:
    import peft.tuners.lora.layer as lora_layer

    policy = load_lora_policy(world["root"] / "adapter").cast_backbone(torch.bfloat16)
    layer = policy.backbone.projector.fc2
    scaling = layer.scaling["default"]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = (layer.base_layer.weight.float() + (b.float() @ a.float()) * scaling).bfloat16()
    seen: list[torch.dtype] = []
    original = lora_layer.Linear.merge

    def spy(self, *args, **kwargs):
        seen.append(self.base_layer.weight.dtype)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(lora_layer.Linear, "merge", spy)
    merged = merge_lora(policy)
    assert len(seen) == 30
    assert set(seen) == {torch.float32}
    assert merged.backbone.projector.fc2.weight.dtype == torch.bfloat16
    assert torch.equal(merged.backbone.projector.fc2.weight, expected)
    assert next(merged.action_head.parameters()).dtype == torch.float32


def test_wrong_base_is_refused(world, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    root, policy = world["root"], world["policy"]
    other = tmp_path / "other"
    shutil.copytree(root / "base", other)
    tensors = load_file(str(other / "model.safetensors"))
    key = "backbone.projector.fc3.weight"
    tensors[key] = tensors[key] + 1e-3
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(BaseMismatchError, match="fingerprint"):
        load_lora_policy(root / "adapter", base=other)
    with pytest.raises(BaseMismatchError, match=r"backbone\.projector\.fc3\.weight"):
        save_lora_adapter(policy, tmp_path / "adapter", base=other)
    assert not (tmp_path / "adapter").exists()


def test_cli_report_and_merge(world, tmp_path: Path) -> None:
    root = world["root"]
    runner = CliRunner()
    result = runner.invoke(lora_command, ["report", str(root / "adapter")])
    assert result.exit_code == 0, result.output
    assert "trainable" in result.output
    assert "siglip" in result.output
    result = runner.invoke(lora_command, ["report", str(root / "base"), "--r", "8", "--no-lm-head"])
    assert result.exit_code == 0, result.output
    assert "r=8" in result.output
    assert "lm_head=off" in result.output
    result = runner.invoke(lora_command, ["merge", str(root / "adapter"), str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "max |Δaction|" in result.output
    assert "merged parameters" in result.output
    merged = MetisPolicy.from_pretrained(tmp_path / "m")
    expected = merge_lora(load_lora_policy(root / "adapter"))
    assert all(torch.equal(v, merged.state_dict()[k]) for k, v in expected.state_dict().items())
