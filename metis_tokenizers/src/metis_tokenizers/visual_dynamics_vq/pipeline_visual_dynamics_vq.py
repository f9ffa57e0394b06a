"""Dataset to trained tokenizer and back: what ``metis-tokenizers train/eval visual_dynamics_vq`` run.

Training reads frame pairs ``(t, t+k)`` and the motion windows between them from a LeRobot
dataset, takes the patch-feature sizes from the feature extractor and the motion config from the
trained motion tokenizer, and trains (see
:func:`~metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq.train_visual_dynamics_vq`).
The run directory keeps the extractor (``feature_extractor/``), so evaluation computes the same
features from another dataset without being told which model made them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metis_tokenizers.features import FeatureCache, FeatureExtractor, load_feature_extractor
from metis_tokenizers.motion_rvq import MotionRVQ
from metis_tokenizers.training import TrainConfig
from metis_tokenizers.visual_dynamics_vq.configuration_visual_dynamics_vq import (
    VisualDynamicsVQConfig,
)
from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import (
    FramePairs,
    load_frame_pairs,
)
from metis_tokenizers.visual_dynamics_vq.evaluation_visual_dynamics_vq import (
    VisualDynamicsReport,
    evaluate_visual_dynamics,
)
from metis_tokenizers.visual_dynamics_vq.modeling_visual_dynamics_vq import VisualDynamicsVQ
from metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq import (
    EXTRACTOR_DIR,
    VisualDynamicsTrainResult,
    train_visual_dynamics_vq,
)

__all__ = ["build_config", "evaluate_on_dataset", "load_run", "train_on_dataset"]

#: Window length used for the (unused) motion windows of a tokenizer built without motion.
_NO_MOTION_WINDOW = 16


def build_config(
    extractor: FeatureExtractor,
    motion: MotionRVQ | None,
    fields: Mapping[str, Any] | None = None,
) -> VisualDynamicsVQConfig:
    """A config whose feature sizes come from ``extractor`` and motion config from ``motion``.

    Args:
        extractor: The feature extractor.
        motion: The trained motion tokenizer, or ``None`` for a tokenizer without motion
            (then ``fields`` must say ``"motion": None``).
        fields: Other config fields (``frame_gap``, ``hidden_dim``, ...).

    Raises:
        ValueError: If ``fields`` contradict the extractor or the motion tokenizer.
    """
    values = dict(fields or {})
    for name, actual in (
        ("feature_dim", extractor.feature_dim),
        ("num_patches", extractor.num_patches),
    ):
        if name in values and int(values[name]) != actual:
            raise ValueError(
                f"config field {name}={values[name]} contradicts the feature extractor, whose "
                f"features have {name}={actual}; leave it out"
            )
        values[name] = actual
    if "motion" in values and values["motion"] is None:
        if motion is not None:
            raise ValueError("the config says motion=None but a motion tokenizer was given")
    elif motion is None:
        raise ValueError(
            "visual_dynamics_vq reads motion features from a trained motion tokenizer: pass one "
            '(--motion DIR of a trained motion_rvq), or set "motion": null in the config for '
            "an ablation without motion"
        )
    else:
        if "motion" in values and values["motion"] != motion.config.to_dict():
            raise ValueError("config field motion differs from the motion tokenizer's config")
        values["motion"] = motion.config
    return VisualDynamicsVQConfig(**values)


def _window_len(config: VisualDynamicsVQConfig) -> int:
    return config.motion.window_len if config.motion is not None else _NO_MOTION_WINDOW


def train_on_dataset(
    dataset: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    features: str | os.PathLike[str] | FeatureExtractor,
    motion: str | os.PathLike[str] | MotionRVQ | None,
    config_fields: Mapping[str, Any] | None = None,
    train_config: TrainConfig | None = None,
    stride: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> tuple[VisualDynamicsTrainResult, FramePairs]:
    """Train a visual-dynamics tokenizer on the frame pairs of a LeRobot dataset.

    Args:
        dataset: LeRobot dataset with ego video and contract actions.
        out_dir: Run directory.
        features: A feature extractor, or what
            :func:`~metis_tokenizers.features.load_feature_extractor` takes (a DINOv2
            directory, a ``.json`` config, ``"tiny"``).
        motion: The trained motion tokenizer or its directory; ``None`` only with
            ``"motion": None`` in ``config_fields``.
        config_fields: Other :class:`VisualDynamicsVQConfig` fields.
        train_config: Optimisation settings.
        stride: Frames between the start frames of consecutive pairs.
        cache_dir: Keep patch features on disk here (default: in memory only).
        resume: Continue from ``out_dir/checkpoint`` if present.
        progress: Progress bars.

    Returns:
        The training result and the pairs it was trained on.
    """
    extractor = features if isinstance(features, FeatureExtractor) else load_feature_extractor(features)  # fmt: skip
    motion_tokenizer = (
        motion
        if motion is None or isinstance(motion, MotionRVQ)
        else MotionRVQ.from_pretrained(motion)
    )
    config = build_config(extractor, motion_tokenizer, config_fields)
    pairs = load_frame_pairs(
        dataset,
        extractor,
        frame_gap=config.frame_gap,
        window_len=_window_len(config),
        stride=stride,
        cache=FeatureCache(cache_dir),
        progress=progress,
    )
    result = train_visual_dynamics_vq(
        pairs,
        out_dir,
        model_config=config,
        motion_tokenizer=motion_tokenizer,
        extractor=extractor,
        train_config=train_config,
        resume=resume,
        progress=progress,
    )
    return result, pairs


def load_run(directory: str | os.PathLike[str]) -> tuple[VisualDynamicsVQ, FeatureExtractor]:
    """The tokenizer saved in a run directory and the feature extractor it was trained with.

    Raises:
        FileNotFoundError: If ``directory/feature_extractor`` is missing.
    """
    path = Path(directory)
    tokenizer = VisualDynamicsVQ.from_pretrained(path)
    if not (path / EXTRACTOR_DIR).is_dir():
        raise FileNotFoundError(
            f"{path / EXTRACTOR_DIR} is missing: the run does not record which feature extractor "
            "its features came from; evaluate with evaluate_visual_dynamics(tokenizer, pairs) on "
            "pairs built with that extractor"
        )
    extractor = load_feature_extractor(path / EXTRACTOR_DIR)
    c = tokenizer.config
    if (extractor.num_patches, extractor.feature_dim) != (c.num_patches, c.feature_dim):
        raise ValueError(
            f"{path / EXTRACTOR_DIR} gives ({extractor.num_patches}, {extractor.feature_dim}) "
            f"features but the tokenizer takes ({c.num_patches}, {c.feature_dim})"
        )
    return tokenizer, extractor


def evaluate_on_dataset(
    directory: str | os.PathLike[str],
    dataset: str | os.PathLike[str],
    *,
    stride: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> VisualDynamicsReport:
    """Evaluate a trained run on the frame pairs of a (held-out) LeRobot dataset.

    Args:
        directory: Run directory written by :func:`train_on_dataset` (or the CLI).
        dataset: LeRobot dataset with ego video and contract actions.
        stride: Frames between the start frames of consecutive pairs.
        cache_dir: Keep patch features on disk here (default: in memory only).
        progress: Progress bars.
    """
    tokenizer, extractor = load_run(directory)
    pairs = load_frame_pairs(
        dataset,
        extractor,
        frame_gap=tokenizer.config.frame_gap,
        window_len=_window_len(tokenizer.config),
        stride=stride,
        cache=FeatureCache(cache_dir),
        progress=progress,
    )
    return evaluate_visual_dynamics(tokenizer, pairs, progress=progress)
