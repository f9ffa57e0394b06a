"""Frozen image feature extractors for the visual-dynamics tokenizer, and a feature cache.

``dinov2`` (transformers ``Dinov2Model``) is the built-in; it needs the ``vision`` extra
(``pip install 'metis-tokenizers[vision]'``), imported only when an extractor is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from metis_core.io import read_json
from metis_tokenizers.features.base import FeatureExtractor, as_image_batch, check_image_batch
from metis_tokenizers.features.cache import FeatureCache, dataset_cache_key
from metis_tokenizers.features.dinov2 import (
    SETTINGS_NAME,
    TINY_DINOV2_CONFIG,
    Dinov2FeatureExtractor,
)

__all__ = [
    "FEATURE_EXTRACTORS",
    "TINY_DINOV2_CONFIG",
    "Dinov2FeatureExtractor",
    "FeatureCache",
    "FeatureExtractor",
    "as_image_batch",
    "check_image_batch",
    "dataset_cache_key",
    "load_feature_extractor",
]

#: Feature extractors by name.
FEATURE_EXTRACTORS: dict[str, type[FeatureExtractor]] = {"dinov2": Dinov2FeatureExtractor}


def load_feature_extractor(spec: str | os.PathLike[str], **kwargs: Any) -> FeatureExtractor:
    """Build an extractor from a saved directory, a JSON file of a model config, or ``"tiny"``.

    Args:
        spec: A directory (a saved extractor, or a plain local DINOv2 checkpoint), a ``.json``
            file holding a DINOv2 config for a random-weight model (toy runs; its
            ``image_size`` is also the input size), with optional ``"layer"`` and ``"seed"``
            keys for the extractor, or the word
            ``"tiny"`` for a random-weight model of :data:`TINY_DINOV2_CONFIG` (seed 0).
        **kwargs: Passed to the extractor (``batch_size``, ``device``, ...).

    Raises:
        FileNotFoundError: If ``spec`` does not exist.
        ValueError: For an unknown extractor type.
    """
    if str(spec) == "tiny":
        return Dinov2FeatureExtractor.from_config(TINY_DINOV2_CONFIG, **kwargs)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; expected a feature-extractor directory (e.g. a local DINOv2 "
            "checkpoint), a .json file holding a DINOv2 config, or 'tiny'"
        )
    if path.is_dir():
        kind = "dinov2"
        if (path / SETTINGS_NAME).is_file():
            kind = read_json(path / SETTINGS_NAME).get("type", kind)
        if kind not in FEATURE_EXTRACTORS:
            raise ValueError(
                f"{path}: unknown feature extractor {kind!r}; known: {sorted(FEATURE_EXTRACTORS)}"
            )
        return FEATURE_EXTRACTORS[kind].from_pretrained(path, **kwargs)  # type: ignore[attr-defined]
    if path.suffix != ".json":
        raise ValueError(f"{path}: expected a directory or a .json config file")
    fields = dict(read_json(path))
    # image_size belongs to the model config (its position embeddings) and is also the size
    # the extractor resizes to.
    options = {k: fields.pop(k) for k in ("layer", "seed") if k in fields}
    return Dinov2FeatureExtractor.from_config(fields, **options, **kwargs)
