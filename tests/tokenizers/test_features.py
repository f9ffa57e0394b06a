"""DINOv2 patch features (tiny random-weight models) and the feature cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from helpers_tokenizers import TEST_DINOV2

from metis_core.io import CorruptFileError, save_safetensors
from metis_tokenizers.features import (
    TINY_DINOV2_CONFIG,
    Dinov2FeatureExtractor,
    FeatureCache,
    dataset_cache_key,
    load_feature_extractor,
)
from metis_tokenizers.features.dinov2 import IMAGENET_MEAN, IMAGENET_STD

SMALL = TEST_DINOV2


def frames(count: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_patch_features_match_an_independent_forward_pass() -> None:
    from transformers import Dinov2Config, Dinov2Model

    extractor = Dinov2FeatureExtractor.from_config(SMALL, seed=3, batch_size=3)
    assert (extractor.num_patches, extractor.feature_dim, extractor.grid_size) == (16, 32, 4)
    images = frames(7)
    features = extractor.extract(images)
    assert features.shape == (7, 16, 32)
    assert features.dtype == torch.float32
    # the same model built by hand, images normalised by hand, one batch
    torch.manual_seed(3)
    model = Dinov2Model(Dinov2Config(**SMALL)).eval()
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    pixels = (pixels - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]  # fmt: skip
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state[:, 1:]  # drop the CLS token
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    # float input in [0, 1] channels-first gives the same features
    torch.testing.assert_close(extractor(pixels.new_tensor(images).permute(0, 3, 1, 2) / 255), features)  # fmt: skip
    # frozen: no parameter takes gradients, and features carry none
    assert not any(p.requires_grad for p in extractor.model.parameters())
    assert not features.requires_grad


def test_resizing_layer_choice_and_seeds() -> None:
    extractor = Dinov2FeatureExtractor.from_config(SMALL, image_size=16)
    assert extractor.extract(frames(2, size=40)).shape == (2, 4, 32)
    hidden = Dinov2FeatureExtractor.from_config(SMALL, layer=-2).extract(frames(2))
    last = Dinov2FeatureExtractor.from_config(SMALL).extract(frames(2))
    assert hidden.shape == last.shape
    assert not torch.allclose(hidden, last)
    other_seed = Dinov2FeatureExtractor.from_config(SMALL, seed=1)
    assert other_seed.fingerprint != Dinov2FeatureExtractor.from_config(SMALL).fingerprint
    registers = Dinov2FeatureExtractor.from_config(
        {**SMALL, "model_type": "dinov2_with_registers", "num_register_tokens": 4}
    )
    assert registers.extract(frames(1)).shape == (1, 16, 32)  # CLS and registers dropped


def test_save_load_round_trip_and_load_feature_extractor(tmp_path: Path) -> None:
    extractor = Dinov2FeatureExtractor.from_config(SMALL, seed=5, layer=-1)
    images = frames(3)
    saved = extractor.save_pretrained(tmp_path / "ex")
    assert {p.name for p in saved.iterdir()} >= {"config.json", "model.safetensors", "feature_extractor.json"}  # fmt: skip
    loaded = Dinov2FeatureExtractor.from_pretrained(saved)
    assert loaded.layer == -1
    assert loaded.fingerprint == extractor.fingerprint
    torch.testing.assert_close(loaded.extract(images), extractor.extract(images))
    # a plain transformers checkpoint directory (no feature_extractor.json) also loads
    extractor.model.save_pretrained(str(tmp_path / "plain"))
    plain = load_feature_extractor(tmp_path / "plain")
    assert plain.layer is None
    assert plain.extract(images).shape == (3, 16, 32)
    # a JSON config builds a random-weight model, reproducibly
    spec = tmp_path / "dino.json"
    spec.write_text(json.dumps({**SMALL, "seed": 5}))
    torch.testing.assert_close(
        load_feature_extractor(spec).extract(images),
        Dinov2FeatureExtractor.from_config(SMALL, seed=5).extract(images),
    )
    tiny = load_feature_extractor("tiny")
    assert (tiny.num_patches, tiny.feature_dim) == (64, TINY_DINOV2_CONFIG["hidden_size"])


def test_bad_inputs_raise_clear_errors(tmp_path: Path) -> None:
    extractor = Dinov2FeatureExtractor.from_config(SMALL)
    with pytest.raises(ValueError, match="expected 4 dimensions"):
        extractor.extract(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="channels-last"):
        extractor.extract(np.zeros((1, 3, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        extractor.extract(torch.full((1, 3, 32, 32), 255.0))
    with pytest.raises(ValueError, match="NaN"):
        extractor.extract(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(ValueError, match="the batch is empty"):
        extractor.extract(np.zeros((0, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="multiple of the patch size 8"):
        Dinov2FeatureExtractor.from_config(SMALL, image_size=30)
    with pytest.raises(ValueError, match="expected a transformers Dinov2Model"):
        Dinov2FeatureExtractor(torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_feature_extractor(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        Dinov2FeatureExtractor.from_pretrained(tmp_path)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="holds a 'bert' model"):
        Dinov2FeatureExtractor.from_pretrained(tmp_path / "bert")


def _fake_dataset(root: Path) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0"}))
    return root


def test_cache_computes_each_frame_once_in_memory_and_on_disk(tmp_path: Path) -> None:
    extractor = Dinov2FeatureExtractor.from_config(SMALL)
    video = frames(10, seed=7)
    requested: list[list[int]] = []

    def load(missing: np.ndarray) -> np.ndarray:
        requested.append(missing.tolist())
        return video[missing]

    key = dataset_cache_key(_fake_dataset(tmp_path / "ds"))
    cache = FeatureCache(tmp_path / "cache")
    first = cache.features(extractor, key, 3, [4, 1, 4], load)
    assert requested == [[1, 4]]
    assert cache.computed_frames == 2
    second = cache.features(extractor, key, 3, [1, 2, 4], load)
    assert requested[-1] == [2]
    assert cache.computed_frames == 3
    assert cache.loaded_frames == 3
    exact = extractor.extract(video[[4, 1, 4]])
    torch.testing.assert_close(first, exact, atol=5e-3 * exact.abs().max().item(), rtol=1e-2)  # float16 storage  # fmt: skip
    torch.testing.assert_close(second[0], first[1])
    # a fresh cache over the same directory reads the disk, computing nothing
    fresh = FeatureCache(tmp_path / "cache")
    again = fresh.features(extractor, key, 3, [2, 4], load)
    assert fresh.computed_frames == 0
    assert len(requested) == 2
    torch.testing.assert_close(again, second[[1, 2]])
    # another extractor (other weights) never reuses these features
    other = Dinov2FeatureExtractor.from_config(SMALL, seed=9)
    fresh.features(other, key, 3, [2], load)
    assert fresh.computed_frames == 1
    # a corrupt cache file is reported, not silently used
    episode_file = next((tmp_path / "cache").rglob("episode_000003.safetensors"))
    save_safetensors(episode_file, {"frame_index": torch.arange(2)})
    with pytest.raises(CorruptFileError, match="delete the file"):
        FeatureCache(tmp_path / "cache").features(extractor, key, 3, [2], load)
    with pytest.raises(FileNotFoundError, match="is not a LeRobot dataset"):
        dataset_cache_key(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="frame_indices must be >= 0"):
        cache.features(extractor, key, 3, [-1], load)
