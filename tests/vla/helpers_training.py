"""Fixtures of the training tests: annotated synthetic LeRobot datasets and tiny tokenizers,
built once per test process (and shared with subprocesses through their paths)."""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

from helpers_vla import extractor, tokenizer_dirs


@functools.cache
def tokenizers_for_training() -> tuple[Path, Path]:
    """The tiny motion and visual tokenizers; the visual run keeps its feature extractor."""
    motion, visual = tokenizer_dirs()
    from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import EXTRACTOR_DIR

    # a copy: the shared tokenizer_dirs() stay as other tests expect them (no extractor)
    run = Path(tempfile.mkdtemp(prefix="metis-train-visual-")) / "visual"
    shutil.copytree(visual, run)
    extractor().save_pretrained(run / EXTRACTOR_DIR)
    return motion, run


def write_annotated(root: Path, *, episodes: int, frames: int = 40, seed: int = 0, size: int = 64) -> Path:  # fmt: skip
    """A synthetic dataset of ``episodes`` at ``root``, annotated with the tiny tokenizers."""
    from metis_core.vla.annotate import annotate_dataset, load_annotation_tokenizers
    from metis_datasets.lerobot_format import write_episodes
    from metis_datasets.synthetic.source_synthetic import (
        D435_COLOR_INTRINSICS_640X480,
        SyntheticConfig,
        SyntheticSource,
    )

    config = SyntheticConfig(episodes=episodes, frames=frames, height=size, width=size, seed=seed)
    source = SyntheticSource(config)
    intrinsics = D435_COLOR_INTRINSICS_640X480.copy()
    intrinsics[:2] *= size / 480
    write_episodes(root, source.iter_episodes(), fps=30.0, source="synthetic", embodiment="human_mano", camera_intrinsics=intrinsics, image_shape=(size, size), episodes_per_file=4, total=episodes, progress=False)  # fmt: skip
    motion_dir, visual_dir = tokenizers_for_training()
    motion, visual, feats = load_annotation_tokenizers(motion_dir, visual_dir)
    annotate_dataset(root, motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=feats, progress=False)  # fmt: skip
    return root


@functools.cache
def training_datasets() -> dict[str, Path]:
    """``pretrain`` (24 episodes) and ``downstream`` (8 episodes, other seed) datasets."""
    root = Path(tempfile.mkdtemp(prefix="metis-train-test-"))
    return {
        "pretrain": write_annotated(root / "pretrain", episodes=24, seed=11),
        "downstream": write_annotated(root / "downstream", episodes=8, seed=5),
    }


def overrides(dataset: str = "downstream", **extra: object) -> list[str]:
    """key=value overrides naming the fixture tokenizers and one dataset."""
    motion, visual = tokenizers_for_training()
    items = [
        f"data.datasets.{dataset}={training_datasets()[dataset]}",
        f"model.motion_tokenizer={motion}",
        f"model.visual_tokenizer={visual}",
        "run.progress=false",
        "run.threads=1",
    ]
    items += [f"{k}={v}" for k, v in extra.items()]
    return items
