"""The visual-dynamics VQ tokenizer: model, frame pairs, training, CLI, save/load, errors."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("transformers")

from helpers_tokenizers import TEST_DINOV2
from helpers_tokenizers import small_config as motion_config

from metis_core.components import load_component
from metis_core.registry import TOKENIZERS
from metis_tokenizers import MotionRVQ, generate_motion_windows
from metis_tokenizers.cli import main
from metis_tokenizers.features import Dinov2FeatureExtractor
from metis_tokenizers.training import TrainConfig, train_motion_rvq
from metis_tokenizers.visual_dynamics_vq import (
    VisualDynamicsVQ,
    VisualDynamicsVQConfig,
    motion_encoder_features,
)
from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import (
    FramePairs,
    load_frame_pairs,
    motion_window,
)
from metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq import (
    _attention_masks,
)
from metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq import (
    code_statistics,
    train_visual_dynamics_vq,
)

PATCHES, CHANNELS = 16, 24
EXTRACTOR = TEST_DINOV2
SMALL = {"hidden_dim": 32, "num_heads": 4, "encoder_blocks": 1, "decoder_layers": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models train faster on one thread, and much faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def trained_dir() -> Path:
    """A small motion tokenizer trained briefly: its encoder supplies the motion features."""
    directory = Path(tempfile.mkdtemp(prefix="metis-vd-motion-"))
    torch.manual_seed(0)
    train_motion_rvq(
        generate_motion_windows(1000, seed=1),
        directory,
        model_config=motion_config(),
        train_config=TrainConfig(
            steps=20, batch_size=64, learning_rate=3e-3, log_every=10, checkpoint_every=0
        ),
        progress=False,
    )
    return directory


def trained() -> MotionRVQ:
    return MotionRVQ.from_pretrained(trained_dir())


def small_config(**overrides: object) -> VisualDynamicsVQConfig:
    fields = {
        "feature_dim": CHANNELS,
        "num_patches": PATCHES,
        "frame_gap": 16,
        **SMALL,
        "motion": motion_config(),
    }
    return VisualDynamicsVQConfig(**{**fields, **overrides})


def windows(batch: int, seed: int = 0) -> torch.Tensor:
    return generate_motion_windows(batch, seed=seed).actions


def random_pairs(count: int = 64, seed: int = 0) -> FramePairs:
    """Frame t random; frame t+k = frame t plus one of 4 change patterns, chosen by the motion.

    The pattern is set by the signs of the right wrist's x and y displacement in the camera
    frame, so the change is visible in the frame pair and driven by the motion; predicting
    t+k better than the best code-agnostic guess (frame t plus the mean pattern, whose error is
    3/4 of the "no change" error) needs the codes to carry which pattern it was.
    """
    gen = torch.Generator().manual_seed(seed)
    source = torch.randn(count, PATCHES, CHANNELS, generator=gen)
    patterns = 1.5 * torch.randn(4, PATCHES, CHANNELS, generator=gen)
    actions = windows(count, seed=seed)
    moved = actions[:, -1, 9:11] > actions[:, 0, 9:11]  # right wrist moved +x, +y
    target = source + patterns[moved[:, 0].long() + 2 * moved[:, 1].long()]
    return FramePairs(
        frame_features=torch.cat([source, target]),
        pair_frames=torch.stack([torch.arange(count), torch.arange(count) + count], 1),
        actions=actions,
        hand_mask=torch.ones(count, 2, dtype=torch.bool),
        episode=torch.zeros(count, dtype=torch.long),
        start_frame=torch.arange(count),
        frame_gap=16,
    )


def test_config_validates_and_counts_motion_tokens() -> None:
    config = VisualDynamicsVQConfig()
    assert (config.num_queries, config.codebook_size, config.codebook_dim) == (4, 16, 128)
    assert config.motion_tokens == 2 * 10
    assert VisualDynamicsVQConfig(motion=None).motion_tokens == 0
    with pytest.raises(ValueError, match="must be divisible by num_heads"):
        VisualDynamicsVQConfig(hidden_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="codebook_size must be >= 2"):
        VisualDynamicsVQConfig(codebook_size=1)
    with pytest.raises(ValueError, match="frame_gap must be >= 1"):
        VisualDynamicsVQConfig(frame_gap=0)
    # the nested motion config survives JSON
    data = json.loads(json.dumps(small_config().to_dict()))
    assert VisualDynamicsVQConfig.from_dict(data) == small_config()


def test_spatial_and_temporal_attention_masks() -> None:
    spatial, temporal = _attention_masks(3, 2)  # True: may not attend
    frame = [0, 0, 0, 1, 1, 1]
    for i in range(8):
        for j in range(8):
            if i >= 6 or j >= 6:  # motion/query tokens see and are seen by everything
                assert not spatial[i, j]
                assert not temporal[i, j]
                continue
            assert bool(spatial[i, j]) == (frame[i] != frame[j])
            assert bool(temporal[i, j]) == (i % 3 != j % 3)


def test_motion_features_are_the_motion_tokenizers_encoder_output() -> None:
    motion = trained()
    actions = windows(6, seed=2)
    latents = motion_encoder_features(motion, actions)
    assert latents.shape == (6, 20, motion.config.latent_dim)
    # quantising them with the motion tokenizer's own quantiser gives its codes
    per_hand = latents.reshape(12, 10, -1)
    motion.eval()
    with torch.no_grad():
        _, codes, _ = motion.quantizer(per_hand)
    assert torch.equal(codes.reshape(6, -1), motion.encode(actions))


def test_motion_tokens_see_the_start_pose_only_with_motion_start() -> None:
    """Same start-relative motion, another start position: only the start input tells them apart."""
    actions = windows(4, seed=3)
    moved = actions.clone()
    moved[:, :, 9:12] += torch.tensor([0.05, -0.02, 0.03])  # right wrist translated as a whole
    mask = torch.ones(4, 2, dtype=torch.bool)
    for motion_start in (True, False):
        torch.manual_seed(0)
        model = VisualDynamicsVQ(small_config(motion_start=motion_start))
        model.set_motion_tokenizer(trained())
        with torch.no_grad():
            a, b = model._motion_tokens(actions, mask, 4), model._motion_tokens(moved, mask, 4)
        torch.testing.assert_close(
            motion_encoder_features(model.motion_tokenizer, actions),
            motion_encoder_features(model.motion_tokenizer, moved),
            atol=1e-5,
            rtol=1e-5,
        )
        assert (not torch.allclose(a, b, atol=1e-4)) == motion_start


def test_untrained_decoder_predicts_no_change_and_training_pass_shapes() -> None:
    torch.manual_seed(0)
    model = VisualDynamicsVQ(small_config()).set_motion_tokenizer(trained())
    pairs = random_pairs(8)
    f_t, f_tk, actions, mask = pairs.batch(torch.arange(8))
    model.fit_normalization(pairs.frame_features)
    out = model(f_t, f_tk, actions, mask)
    assert out.prediction.shape == (8, PATCHES, CHANNELS)
    assert out.codes.shape == (8, 4)
    assert int(out.codes.min()) >= 0
    assert int(out.codes.max()) < 16
    # the residual head starts at zero: the first prediction is frame t itself
    torch.testing.assert_close(out.prediction, out.source)
    assert model.is_trained  # k-means ran on that batch
    torch.testing.assert_close(model.decode(out.codes, features_t=f_t), f_t, atol=1e-5, rtol=1e-5)
    # the motion tokenizer inside is frozen
    assert not any(p.requires_grad for p in model.motion_tokenizer.parameters())
    (out.prediction.sum() + out.commit_loss).backward()
    assert model.queries.grad is not None


def test_short_training_beats_no_change_and_save_load_round_trips(tmp_path: Path) -> None:
    pairs = random_pairs(256)
    result = train_visual_dynamics_vq(
        pairs,
        tmp_path / "run",
        model_config=small_config(),
        motion_tokenizer=trained(),
        train_config=TrainConfig(
            steps=300,
            batch_size=32,
            learning_rate=3e-3,
            warmup_steps=10,
            checkpoint_every=0,
            log_every=50,
        ),
        progress=False,
    )
    # code-agnostic optimum: 3/4 of the "no change" loss; the codes must carry the pattern
    assert result.final_loss < 0.7 * result.final_baseline_loss
    model = result.tokenizer
    f_t, f_tk, actions, mask = pairs.batch(torch.arange(128))
    codes = model.encode(actions, mask, features_t=f_t, features_tk=f_tk)
    assert codes.shape == (128, 4)
    assert codes.dtype == torch.int64
    predicted = model.decode(codes, features_t=f_t)
    cos = torch.nn.functional.cosine_similarity
    baseline = cos(f_t, f_tk, dim=-1).mean()
    assert 0.5 < baseline < 0.6  # |change| = 1.5 |frame t|: cos = 1 / sqrt(1 + 1.5²) = 0.55
    assert cos(predicted, f_tk, dim=-1).mean() > baseline + 0.12
    # the codes separate the patterns: the code of token 0 predicts the pattern far above chance
    moved = actions[:, -1, 9:11] > actions[:, 0, 9:11]
    pattern = moved[:, 0].long() + 2 * moved[:, 1].long()
    joint = torch.zeros(16, 4)
    joint.index_put_((codes[:, 0], pattern), torch.ones(128), accumulate=True)
    assert joint.max(1).values.sum() / 128 > 1.5 * torch.bincount(pattern).max() / 128
    # save / load through the registry: same codes, same predictions
    loaded = load_component(tmp_path / "run")
    assert isinstance(loaded, VisualDynamicsVQ)
    assert loaded.config == model.config
    assert TOKENIZERS.get("visual_dynamics_vq") is VisualDynamicsVQ
    assert torch.equal(loaded.encode(actions, mask, features_t=f_t, features_tk=f_tk), codes)
    torch.testing.assert_close(loaded.decode(codes, features_t=f_t), predicted)
    stats = code_statistics(torch.tensor([0, 0, 1, 3]), 4)
    assert stats["codes_used"] == 3
    assert stats["perplexity"] == pytest.approx(
        float(np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))))
    )


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    pairs = random_pairs(64, seed=1)
    settings = {
        "model_config": small_config(),
        "motion_tokenizer": trained(),
        "train_config": TrainConfig(
            steps=24,
            batch_size=16,
            learning_rate=2e-3,
            warmup_steps=4,
            checkpoint_every=10,
            log_every=8,
        ),
        "progress": False,
    }
    full = train_visual_dynamics_vq(pairs, tmp_path / "full", **settings).tokenizer
    calls = {"n": 0}
    forward = VisualDynamicsVQ.forward

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(VisualDynamicsVQ, "forward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_visual_dynamics_vq(pairs, tmp_path / "cut", **settings)
    monkeypatch.setattr(VisualDynamicsVQ, "forward", forward)
    assert not (tmp_path / "cut" / "model.safetensors").exists()
    resumed = train_visual_dynamics_vq(pairs, tmp_path / "cut", **settings)
    assert resumed.steps == 24
    for (name, a), b in zip(full.state_dict().items(), resumed.tokenizer.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, msg=name)


def test_bad_inputs_raise_clear_errors() -> None:
    model = VisualDynamicsVQ(small_config())
    f = torch.randn(2, PATCHES, CHANNELS)
    actions = windows(2)
    with pytest.raises(ValueError, match="untrained"):
        model.encode(actions, features_t=f, features_tk=f)
    with pytest.raises(ValueError, match="no trained motion tokenizer is loaded"):
        model(f, f, actions)
    model.set_motion_tokenizer(trained())
    with pytest.raises(ValueError, match=r"expected patch features of shape \(2, 16, 24\)"):
        model(f, f[:, :8], actions)
    with pytest.raises(ValueError, match="features_t: contains NaN"):
        model(torch.full_like(f, float("nan")), f, actions)
    with pytest.raises(ValueError, match="needs the motion window"):
        model(f, f)
    with pytest.raises(ValueError, match="expected 2 windows"):
        model(f, f, windows(3))
    model(f, f, actions)  # initialises the codebook
    with pytest.raises(ValueError, match=r"codes: must be in \[0, 16\)"):
        model.decode(torch.tensor([[0, 1, 2, 16]] * 2), features_t=f)
    with pytest.raises(ValueError, match=r"expected shape \(B, 4\)"):
        model.decode(torch.zeros(2, 5, dtype=torch.long), features_t=f)
    with pytest.raises(ValueError, match="decode needs features_t"):
        model.decode(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="encode needs features_t and features_tk"):
        model.encode(actions, features_t=f)
    untrained_motion = type(trained())(trained().config)
    with pytest.raises(ValueError, match="the motion tokenizer is untrained"):
        VisualDynamicsVQ(small_config()).set_motion_tokenizer(untrained_motion)
    with pytest.raises(ValueError, match="config differs"):
        VisualDynamicsVQ(small_config(motion=trained().config.replace(latent_steps=5)))\
            .set_motion_tokenizer(trained())  # fmt: skip
    without = VisualDynamicsVQ(small_config(motion=None))
    with pytest.raises(ValueError, match="pass actions=None"):
        without(f, f, actions)
    with pytest.raises(ValueError, match="has motion=None"):
        without.set_motion_tokenizer(trained())


# -- frame pairs from a LeRobot dataset and the command line -----------------------------------


@functools.cache
def synthetic(seed: int, episodes: int) -> Path:
    from metis_datasets.synthetic import make_dataset

    root = Path(tempfile.mkdtemp(prefix="metis-vd-test-")) / f"synthetic_{seed}"
    return make_dataset(root, episodes=episodes, frames=48, seed=seed, image_size=(64, 64))


def test_frame_pairs_hold_the_right_frames_and_motion_windows() -> None:
    from metis_datasets.lerobot_format import LeRobotDataset

    root = synthetic(0, 3)
    extractor = Dinov2FeatureExtractor.from_config(EXTRACTOR)
    pairs = load_frame_pairs(root, extractor, frame_gap=16, window_len=16, stride=4, progress=False, storage_dtype=torch.float32)  # fmt: skip
    assert len(pairs) == 3 * len(range(0, 48 - 16, 4))
    ds = LeRobotDataset(root)
    for index in (0, len(pairs) - 1):
        episode, t = int(pairs.episode[index]), int(pairs.start_frame[index])
        f_t, f_tk, actions, mask = pairs.batch(torch.tensor([index]))
        images = ds.frames(episode, [t, t + 16])
        torch.testing.assert_close(torch.cat([f_t, f_tk]), extractor.extract(images))
        begin = ds.episodes[episode]["from"] + t
        expected = torch.from_numpy(ds.action[begin : begin + 16])
        expected[:, [*range(0, 9), *range(18, 33)]] *= mask[0, 0]
        expected[:, [*range(9, 18), *range(33, 48)]] *= mask[0, 1]
        torch.testing.assert_close(actions[0], expected)
    # k = 30 frames resampled to 16: same start and end pose, evenly spaced in time
    actions = np.cumsum(np.full((30, 48), 0.01, dtype=np.float32), 0)
    window, present = motion_window(actions, np.ones((30, 2), bool), 30.0, 16)
    assert window.shape == (16, 48)
    assert present.all()
    torch.testing.assert_close(window[[0, -1], 0], torch.tensor([0.01, 0.30]))
    torch.testing.assert_close(window[:, 0], torch.linspace(0.01, 0.30, 16))
    with pytest.raises(ValueError, match="no episode is longer than frame_gap=60"):
        load_frame_pairs(root, extractor, frame_gap=60, window_len=16, progress=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_frame_pairs(root / "nope", extractor, frame_gap=8, window_len=16)


def test_cli_trains_on_a_synthetic_dataset_and_beats_no_change(tmp_path: Path) -> None:
    """Frame changes of the synthetic data are driven by the hand motion."""
    train, heldout = synthetic(0, 8), synthetic(1, 3)
    spec = tmp_path / "dino.json"
    spec.write_text(json.dumps(EXTRACTOR))
    runner = CliRunner()
    fields = json.dumps({"frame_gap": 8, **SMALL})
    result = runner.invoke(
        main,
        ["train", "visual_dynamics_vq", "--data", str(train), "--out", str(tmp_path / "vd"),
         "--motion", str(trained_dir()), "--features", str(spec), "--config", fields,
         "--steps", "60", "--warmup-steps", "10", "--batch-size", "32", "--lr", "3e-3",
         "--stride", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "trained visual_dynamics_vq on" in result.output
    reports = {}
    for name, data in (("train", train), ("heldout", heldout)):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(main, ["eval", str(tmp_path / "vd"), "--data", str(data), "--json", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert "cosine, 'no change'" in result.output
        reports[name] = json.loads(out.read_text())
    assert (tmp_path / "vd" / "eval.png").stat().st_size > 1000
    seen, unseen = reports["train"], reports["heldout"]
    assert seen["cosine_predicted"] > seen["cosine_baseline"] + 0.005
    assert seen["mse_reduction"] > 0.15
    assert seen["codes_used"] >= 8
    assert unseen["cosine_predicted"] > unseen["cosine_baseline"]
    assert unseen["mse_reduction"] > 0.05
    assert 1.0 <= unseen["perplexity"] <= unseen["codes_used"] <= 16
    # bad input: no motion tokenizer
    result = runner.invoke(
        main,
        ["train", "visual_dynamics_vq", "--data", str(train), "--out", str(tmp_path / "x"),
         "--features", str(spec)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--motion DIR" in str(result.exception)
