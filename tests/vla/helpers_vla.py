"""Shared helpers of the policy tests: synthetic episodes, tiny trained dynamics tokenizers and
annotated training samples, built once per test process."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch

from metis_core.normalization import compute_stats
from metis_core.vla import (
    MetisConfig,
    MetisPolicy,
    PolicyNormalization,
    TrainingSample,
    samples_from_episode,
)
from metis_core.vla.data import dynamics_codes_for_episode, motion_windows_for_episode

#: A random-weight DINOv2 for the visual tokenizer: 32×32 images, 16 patches of 32 channels.
FEATURE_DINOV2 = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}
CHUNK = 30


@functools.cache
def episodes() -> list:
    from metis_datasets.synthetic.source_synthetic import SyntheticConfig, SyntheticSource

    config = SyntheticConfig(episodes=4, frames=48, height=64, width=64, seed=3)
    return list(SyntheticSource(config).iter_episodes())


@functools.cache
def extractor():
    from metis_tokenizers.features.dinov2 import Dinov2FeatureExtractor

    torch.manual_seed(0)
    return Dinov2FeatureExtractor.from_config(FEATURE_DINOV2)


@functools.cache
def tokenizer_dirs() -> tuple[Path, Path]:
    """A tiny motion_rvq and visual_dynamics_vq trained for a few seconds on the episodes."""
    from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig
    from metis_tokenizers.training import TrainConfig, train_motion_rvq
    from metis_tokenizers.visual_dynamics_vq import VisualDynamicsVQConfig
    from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import FramePairs
    from metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq import (
        train_visual_dynamics_vq,
    )

    root = Path(tempfile.mkdtemp(prefix="metis-vla-test-"))
    tiny = MetisConfig.tiny()
    torch.manual_seed(0)
    windows, masks = [], []
    for episode in episodes():
        w, m = motion_windows_for_episode(episode)
        windows.append(w)
        masks.append(m)
    windows_t = torch.cat(windows)
    masks_t = torch.cat(masks).all(1)
    train_motion_rvq(
        (windows_t, masks_t),
        root / "motion",
        model_config=MotionRVQConfig(**tiny.motion_tokenizer_config),
        train_config=TrainConfig(
            steps=40,
            batch_size=96,
            learning_rate=3e-3,
            log_every=20,
            checkpoint_every=0,
            warmup_steps=5,
        ),
        progress=False,
    )
    motion = MotionRVQ.from_pretrained(root / "motion")
    features, pairs, offset = [], [], 0
    gap = 30
    for episode in episodes():
        length = episode.state.shape[0]
        features.append(extractor().extract(episode.images["ego"]).float())
        later = np.minimum(np.arange(length) + gap, length - 1)
        pairs.append(
            torch.stack([torch.arange(length) + offset, torch.as_tensor(later) + offset], 1)
        )
        offset += length
    frame_pairs = FramePairs(
        frame_features=torch.cat(features),
        pair_frames=torch.cat(pairs),
        actions=windows_t,
        hand_mask=masks_t,
        episode=torch.cat([torch.full((e.state.shape[0],), i) for i, e in enumerate(episodes())]),
        start_frame=torch.cat([torch.arange(e.state.shape[0]) for e in episodes()]),
        frame_gap=gap,
    )
    train_visual_dynamics_vq(
        frame_pairs,
        root / "visual",
        model_config=VisualDynamicsVQConfig(**{**tiny.visual_tokenizer_config, "frame_gap": gap}),
        motion_tokenizer=motion,
        train_config=TrainConfig(
            steps=20,
            batch_size=64,
            learning_rate=3e-3,
            log_every=10,
            checkpoint_every=0,
            warmup_steps=2,
        ),
        progress=False,
    )
    return root / "motion", root / "visual"


def tokenizers():
    from metis_core.interfaces import Tokenizer

    motion_dir, visual_dir = tokenizer_dirs()
    return Tokenizer.from_pretrained(motion_dir), Tokenizer.from_pretrained(visual_dir)


@functools.cache
def annotated_samples() -> list[TrainingSample]:
    motion, visual = tokenizers()
    samples: list[TrainingSample] = []
    for episode in episodes():
        codes = dynamics_codes_for_episode(
            episode, motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=extractor()
        )
        samples += list(
            samples_from_episode(
                episode,
                chunk_len=CHUNK,
                visual_codes=codes.visual,
                motion_codes=codes.motion,
                dataset_key="synthetic",
            )
        )
    return samples


def normalization(mode: str = "q01_q99") -> PolicyNormalization:
    states = np.concatenate([e.state for e in episodes()])
    actions = np.concatenate([e.action for e in episodes()])
    masks = np.concatenate([e.hand_mask for e in episodes()])
    from metis_core.contract import hand_value_mask

    valid = hand_value_mask(torch.as_tensor(masks)).numpy()
    stats = {
        "observation.state": compute_stats(states, valid),
        "action": compute_stats(actions, valid),
    }
    return PolicyNormalization(mode=mode, stats={"synthetic": stats})


def tiny_policy(seed: int = 0, **overrides) -> MetisPolicy:
    motion, visual = tokenizers()
    torch.manual_seed(seed)
    policy = MetisPolicy(
        MetisConfig.tiny(**overrides),
        motion_tokenizer=motion,
        visual_tokenizer=visual,
        normalization=normalization(overrides.get("norm_mode", "q01_q99")),
    )
    return policy


def train(policy: MetisPolicy, steps: int, *, batch_size: int = 8, lr: float = 2e-3, seed: int = 0) -> list[float]:  # fmt: skip
    samples = annotated_samples()
    generator = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    policy.train()
    losses = []
    for _ in range(steps):
        index = generator.choice(len(samples), size=batch_size, replace=False)
        batch = policy.collate([samples[i] for i in index])
        out = policy(batch)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        optimizer.step()
        losses.append(float(out.loss.detach()))
    policy.eval()
    return losses
