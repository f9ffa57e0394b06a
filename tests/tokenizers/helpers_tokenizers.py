"""Shared helpers of the tokenizer tests: a small motion tokenizer trained once per session."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from metis_tokenizers import MotionRVQ, MotionRVQConfig, generate_motion_windows
from metis_tokenizers.training import TrainConfig, train_motion_rvq

SMALL = {
    "hidden_dim": 64,
    "latent_dim": 64,
    "codebook_size": 128,
    "attention_layers": 1,
    "num_conv_blocks": 1,
}
TRAIN_STEPS = 150

#: A random-weight DINOv2 for tests: 32×32 images, 8×8 patches (16 patches of 32 channels).
TEST_DINOV2 = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": 32,
    "patch_size": 8,
}


def small_config(**overrides: object) -> MotionRVQConfig:
    return MotionRVQConfig(**{**SMALL, **overrides})


@functools.cache
def trained_dir() -> Path:
    """Directory of a small motion_rvq trained for a few seconds on generated windows."""
    directory = Path(tempfile.mkdtemp(prefix="metis-rvq-test-"))
    torch.manual_seed(0)
    windows = generate_motion_windows(4000, seed=1)
    train_motion_rvq(
        windows,
        directory,
        model_config=small_config(),
        train_config=TrainConfig(
            steps=TRAIN_STEPS, batch_size=128, learning_rate=3e-3, log_every=50, checkpoint_every=0
        ),
        progress=False,
    )
    return directory


def trained() -> MotionRVQ:
    return MotionRVQ.from_pretrained(trained_dir())
