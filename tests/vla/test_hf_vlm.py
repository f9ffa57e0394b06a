"""The ``hf_vlm`` backbone: transformers VLMs (Idefics3 / SmolVLM / Qwen2-VL) behind the Backbone
ABC, conformance, and a tiny one trained through ``MetisPolicy`` unchanged."""

from __future__ import annotations

from pathlib import Path

import helpers_vla as h
import numpy as np
import pytest
import torch

from metis_core.registry import BACKBONES
from metis_core.testing import BackboneConformance
from metis_core.vla import MetisConfig, MetisPolicy, samples_from_episode
from metis_core.vla.backbones.hf_vlm import HFVLMBackbone, HFVLMConfig

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fields(config: HFVLMConfig) -> dict:
    return {k: v for k, v in config.to_dict().items() if k != "type"}


def _backbone(model_type: str = "idefics3", seed: int = 0) -> HFVLMBackbone:
    torch.manual_seed(seed)
    return HFVLMBackbone(HFVLMConfig.tiny(model_type)).eval()


def _uint8(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, height, width, 3), generator=generator, dtype=torch.uint8)


# -- conformance ------------------------------------------------------------------------------


class TestHFVLMConformance(BackboneConformance):
    component_name = "hf_vlm"
    config_overrides = _fields(HFVLMConfig.tiny("idefics3"))


class TestHFVLMQwen2VLConformance(BackboneConformance):
    component_name = "hf_vlm"
    config_overrides = _fields(HFVLMConfig.tiny("qwen2_vl"))


# -- the model's own parts --------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["idefics3", "smolvlm", "qwen2_vl"])
def test_registered_and_sized_from_the_transformers_config(model_type) -> None:
    backbone = BACKBONES.create("hf_vlm", **_fields(HFVLMConfig.tiny(model_type)))
    expected = {
        "idefics3": "Idefics3ForConditionalGeneration",
        "smolvlm": "SmolVLMForConditionalGeneration",
        "qwen2_vl": "Qwen2VLForConditionalGeneration",
    }
    assert type(backbone.model).__name__ == expected[model_type]
    assert backbone.image_size == (112, 112)
    # 112 / 14 = 8 × 8 patches, 2 × 2 merged (pixel shuffle or patch merger) → 16 tokens.
    assert backbone.num_image_tokens == 16
    assert backbone.hidden_size == 64
    assert backbone.vocab_size == 260
    counts = backbone.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in backbone.parameters())
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")


def test_idefics3_image_embeddings_equal_get_image_features() -> None:
    backbone = _backbone("idefics3")
    pixels = backbone.preprocess(_uint8(2, 90, 130, 0))
    with torch.no_grad():
        ours = backbone.embed_images(pixels)
        theirs = backbone.model.get_image_features(pixel_values=pixels[:, None]).pooler_output
    assert ours.shape == (2, 16, 64)
    assert torch.equal(ours.reshape(-1, 64), torch.cat(list(theirs)))


def test_preprocess_is_resize_then_the_family_normalisation() -> None:
    image = torch.full((1, 20, 30, 3), 200, dtype=torch.uint8)
    image[..., 1] = 10
    smol = _backbone("idefics3").preprocess(image)
    assert smol.shape == (1, 3, 112, 112)
    assert torch.allclose(smol[0, 0], torch.tensor((200 / 255 - 0.5) / 0.5), atol=1e-5)
    assert torch.allclose(smol[0, 1], torch.tensor((10 / 255 - 0.5) / 0.5), atol=1e-5)
    qwen = _backbone("qwen2_vl").preprocess(image)
    assert torch.allclose(qwen[0, 0], torch.tensor((200 / 255 - 0.48145466) / 0.26862954), atol=1e-5)  # fmt: skip
    assert torch.allclose(qwen[0, 1], torch.tensor((10 / 255 - 0.4578275) / 0.26130258), atol=1e-5)  # fmt: skip


def test_qwen2_vl_patches_follow_the_image_processor_layout() -> None:
    backbone = _backbone("qwen2_vl")
    s, p = 112, 14
    # Each pixel encodes (channel, row, column) so that any mix-up shows.
    c, y, x = torch.meshgrid(torch.arange(3), torch.arange(s), torch.arange(s), indexing="ij")
    pixels = (c * 1_000_000 + y * 1_000 + x).double()[None]
    flat = backbone._qwen_patches(pixels)
    assert flat.shape == (64, 3 * 2 * p * p)
    # Expected, written out: windows of 2 × 2 patches row-major, patches in a window row-major,
    # each patch as (channel, time = 2 copies, row, column).
    rows = []
    for window_row in range(4):
        for window_col in range(4):
            for in_row in range(2):
                for in_col in range(2):
                    top, left = (2 * window_row + in_row) * p, (2 * window_col + in_col) * p
                    patch = pixels[0, :, top : top + p, left : left + p]
                    rows.append(torch.stack([patch, patch], 1).reshape(-1))
    assert torch.equal(flat, torch.stack(rows))


def test_qwen2_vl_patches_equal_the_transformers_image_processor() -> None:
    transformers = pytest.importorskip("transformers")
    processor_class = getattr(transformers, "Qwen2VLImageProcessor", None)
    if processor_class is None:  # pragma: no cover - depends on the installed extras
        pytest.skip("Qwen2VLImageProcessor not available")
    try:
        processor = processor_class(do_resize=False)
    except ImportError as err:  # pragma: no cover - torchvision missing
        pytest.skip(f"Qwen2VLImageProcessor needs {err}")
    backbone = _backbone("qwen2_vl")
    image = _uint8(1, 112, 112, 5)
    ours = backbone._qwen_patches(backbone.preprocess(image))
    theirs = processor(images=[image[0].numpy()], return_tensors="pt")
    assert theirs["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert torch.allclose(ours, theirs["pixel_values"].float(), atol=1e-5)


@pytest.mark.parametrize("model_type", ["idefics3", "qwen2_vl"])
def test_language_model_equals_the_models_own_forward(model_type) -> None:
    backbone = _backbone(model_type)
    ids = torch.tensor([[0, 17, 42, 99, 7, 1]])
    with torch.no_grad():
        embeds = backbone.embed_tokens(ids)
        ours = backbone.run_language_model(embeds)
        theirs = backbone.model(input_ids=ids)
    assert torch.allclose(ours.logits, theirs.logits, atol=1e-5)


def test_pretrained_directory_loads_locally(tmp_path: Path) -> None:
    source = _backbone("idefics3", seed=3)
    source.model.save_pretrained(tmp_path / "smol")
    loaded = HFVLMBackbone(HFVLMConfig(model_type="idefics3", model_config={}, pretrained_path=str(tmp_path / "smol")))  # fmt: skip
    before, after = source.state_dict(), loaded.state_dict()
    assert sorted(before) == sorted(after)
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFVLMBackbone(HFVLMConfig(model_type="idefics3", model_config={}, pretrained_path=str(tmp_path)))  # fmt: skip
    with pytest.raises(ValueError, match="holds a 'idefics3' model"):
        HFVLMBackbone(HFVLMConfig(model_type="smolvlm", model_config={}, pretrained_path=str(tmp_path / "smol")))  # fmt: skip


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"'llava' is not supported.*idefics3.*qwen2_vl"):
        HFVLMConfig(model_type="llava")
    with pytest.raises(ValueError, match="either pretrained_path"):
        HFVLMConfig(pretrained_path="/nowhere")
    with pytest.raises(ValueError, match="Qwen2-VL backbone needs image_size"):
        HFVLMConfig.tiny("qwen2_vl", image_size=None)
    with pytest.raises(ValueError, match="not a multiple of patch × merge"):
        HFVLMBackbone(HFVLMConfig.tiny("qwen2_vl", image_size=70))
    with pytest.raises(ValueError, match="differs from the vision model's image_size 112"):
        HFVLMBackbone(HFVLMConfig.tiny("idefics3", image_size=224))
    with pytest.raises(ValueError, match=r"expected \(B, 3, 112, 112\)"):
        _backbone("idefics3").embed_images(torch.zeros(1, 3, 56, 56))


# -- through MetisPolicy ----------------------------------------------------------------------


def _samples() -> list:
    """Training samples of the synthetic episodes with fixed random dynamics codes (the backbone
    is under test here, not the dynamics tokenizers)."""
    generator = np.random.default_rng(0)
    samples = []
    for episode in h.episodes()[:2]:
        frames = episode.state.shape[0]
        samples += list(
            samples_from_episode(
                episode,
                chunk_len=30,
                visual_codes=generator.integers(0, 16, (frames, 4)),
                motion_codes=generator.integers(0, 512, (frames, 40)),
                dataset_key="synthetic",
            )
        )
    return samples


@pytest.fixture(scope="module")
def trained() -> tuple[MetisPolicy, list[float]]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = MetisConfig.tiny(backbone="hf_vlm", backbone_config=HFVLMConfig.tiny().to_dict())
    policy = MetisPolicy(config, normalization=h.normalization())
    samples = _samples()
    batches = [policy.collate(samples[i : i + 8]) for i in range(0, 32, 8)]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    policy.train()
    losses = []
    for step in range(50):
        out = policy(batches[step % len(batches)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    policy.eval()
    return policy, losses


def test_tiny_hf_vlm_trains_50_steps_through_metis_policy(trained) -> None:
    policy, losses = trained
    assert isinstance(policy.backbone, HFVLMBackbone)
    assert policy.backbone.vocab_size % 64 == 0
    assert policy.backbone.vocab_size >= len(policy.tokenizer)
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert len(losses) == 50
    assert last < 0.8 * first, f"loss went from {first:.3f} to {last:.3f}"
    assert max(losses[-10:]) < first
    assert bool(
        policy.backbone.model.model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum()
        > 0
    )


def test_hf_vlm_policy_predicts_a_float32_chunk_and_reloads_exactly(trained, tmp_path) -> None:
    policy, _ = trained
    episode = h.episodes()[0]
    image, instruction, state = episode.images["ego"][0], episode.instruction, episode.state[0]
    result = policy.predict_action(image, instruction, state)
    assert result.actions.shape == (30, 48)
    assert result.actions.dtype == np.float32
    assert np.isfinite(result.actions).all()
    black = policy.predict_action(np.zeros_like(image), instruction, state).actions
    white = policy.predict_action(np.full_like(image, 255), instruction, state).actions
    assert float(np.abs(black - white).max()) > 1e-4
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = MetisPolicy.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.backbone, HFVLMBackbone)
    again = loaded.predict_action(image, instruction, state)
    assert np.array_equal(again.actions, result.actions)


def test_a_qwen2_vl_backbone_also_trains_and_acts_through_metis_policy() -> None:
    torch.manual_seed(1)
    backbone_config = HFVLMConfig.tiny("qwen2_vl").to_dict()
    config = MetisConfig.tiny(backbone="hf_vlm", backbone_config=backbone_config)
    policy = MetisPolicy(config, normalization=h.normalization())
    batch = policy.collate(_samples()[:8])
    optimizer = torch.optim.AdamW(policy.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        out = policy(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
    policy.eval()
    episode = h.episodes()[0]
    result = policy.predict_action(episode.images["ego"][0], episode.instruction, episode.state[0])
    assert result.actions.shape == (30, 48)
    assert result.actions.dtype == np.float32
