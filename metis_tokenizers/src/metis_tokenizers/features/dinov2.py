"""DINOv2 patch features through transformers (``Dinov2Model``), frozen and batched.

The paper's visual-dynamics tokenizer works on DINOv2 features rather than pixels (METIS §4.2,
following UniVLA). At full scale load a local copy of a released checkpoint
(``Dinov2FeatureExtractor.from_pretrained("/models/dinov2-large")``); tests and toy runs build a
tiny random-weight model from a config (``Dinov2FeatureExtractor.from_config({...})``). Nothing is
ever downloaded here.

Preprocessing: images are resized to ``image_size × image_size`` (bilinear, antialiased) and
normalised with the ImageNet mean and standard deviation that DINOv2 was trained with. Crop
non-square frames beforehand if their aspect matters (the METIS pipeline centre-crops 480×640
and resizes to 224×224, see ``metis_datasets.center_crop_resize``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from metis_core._optional import require
from metis_core.io import atomic_directory, read_json, write_json
from metis_tokenizers.features.base import FeatureExtractor, as_image_batch, check_image_batch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SETTINGS_NAME",
    "TINY_DINOV2_CONFIG",
    "Dinov2FeatureExtractor",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: File that records the extractor type and its preprocessing next to the model files.
SETTINGS_NAME = "feature_extractor.json"
#: A random-weight DINOv2 small enough for tests and toy runs on a CPU, with 64×64 images and
#: 8×8 patches (64 patches of 64 channels). Its features keep where things are in the image, which is what
#: the visual-dynamics tokenizer needs on synthetic data; it carries no pretrained semantics.
TINY_DINOV2_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "image_size": 64,
    "patch_size": 8,
}
_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
_INSTALL = "metis-tokenizers[vision]"


def _transformers() -> Any:
    return require("transformers", install=_INSTALL, feature="DINOv2 feature extraction")


class Dinov2FeatureExtractor(FeatureExtractor):
    """Frozen DINOv2 (or DINOv2-with-registers) patch features.

    Args:
        model: A transformers ``Dinov2Model`` or ``Dinov2WithRegistersModel``.
        image_size: Side of the square the images are resized to (default: the model config's
            ``image_size``); must be a multiple of the patch size.
        layer: Which hidden state to return: ``None`` for the last one after the final layer
            norm (``last_hidden_state``), or an index into ``hidden_states`` (``-2``: the
            second-to-last block, as Prismatic uses for its DINOv2 tower).
        batch_size: Images per forward pass.
        device: Where the model runs.

    Example:
        >>> extractor = Dinov2FeatureExtractor.from_config(
        ...     {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        ...      "intermediate_size": 64, "image_size": 32, "patch_size": 8})
        >>> extractor.extract(frames).shape        # frames (B, H, W, 3) uint8
        torch.Size([B, 16, 32])
    """

    name: ClassVar[str] = "dinov2"

    def __init__(
        self,
        model: Any,
        *,
        image_size: int | None = None,
        layer: int | None = None,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in _MODEL_TYPES:
            raise ValueError(
                f"Dinov2FeatureExtractor: expected a transformers Dinov2Model (model_type one of "
                f"{list(_MODEL_TYPES)}), got {type(model).__name__} with model_type {model_type!r}"
            )
        self.patch_size = int(config.patch_size)
        self.image_size = int(image_size if image_size is not None else config.image_size)
        if self.image_size < self.patch_size or self.image_size % self.patch_size:
            raise ValueError(
                f"image_size must be a positive multiple of the patch size {self.patch_size}, "
                f"got {self.image_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        num_layers = int(config.num_hidden_layers)
        if layer is not None and not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(
                f"layer must be None or an index into the {num_layers + 1} hidden states, "
                f"got {layer}"
            )
        self.layer = layer
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self._fingerprint: str | None = None
        self.mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | Any, *, seed: int = 0, **kwargs: Any
    ) -> Dinov2FeatureExtractor:
        """A model with random weights built from a config (tests, toy runs; no download).

        Args:
            config: A ``Dinov2Config`` / ``Dinov2WithRegistersConfig`` or a dict of its fields
                (a ``model_type`` key of ``"dinov2_with_registers"`` selects that variant).
            seed: Seeds the random initialisation, so the same config gives the same model.
            **kwargs: Passed to the constructor (``image_size``, ``layer``, ...).
        """
        transformers = _transformers()
        if isinstance(config, Mapping):
            fields = dict(config)
            model_type = fields.pop("model_type", "dinov2")
            if model_type not in _MODEL_TYPES:
                raise ValueError(
                    f"model_type must be one of {list(_MODEL_TYPES)}, got {model_type!r}"
                )
            config_cls = (
                transformers.Dinov2Config
                if model_type == "dinov2"
                else transformers.Dinov2WithRegistersConfig
            )
            config = config_cls(**fields)
        model_cls = (
            transformers.Dinov2Model
            if getattr(config, "model_type", None) == "dinov2"
            else transformers.Dinov2WithRegistersModel
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_cls(config)
        return cls(model, **kwargs)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], **kwargs: Any
    ) -> Dinov2FeatureExtractor:
        """Load from a local directory: a transformers DINOv2 checkpoint or a saved extractor.

        Args:
            directory: Holds ``config.json`` and the weights (``model.safetensors``), and
                optionally ``feature_extractor.json`` with the preprocessing settings.
            **kwargs: Override the saved settings (``image_size``, ``layer``, ``batch_size``,
                ``device``).

        Raises:
            FileNotFoundError: If the directory or its ``config.json`` is missing.
            ValueError: If it holds another kind of model.
        """
        path = Path(directory)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} holds no config.json; expected a local DINOv2 checkpoint directory "
                "(e.g. a copy of facebook/dinov2-large) or a directory written by "
                "Dinov2FeatureExtractor.save_pretrained"
            )
        settings: dict[str, Any] = {}
        if (path / SETTINGS_NAME).is_file():
            settings = read_json(path / SETTINGS_NAME)
            if settings.get("type") != cls.name:
                raise ValueError(
                    f"{path / SETTINGS_NAME} describes a {settings.get('type')!r} extractor, "
                    f"not {cls.name!r}"
                )
        model_type = read_json(path / "config.json").get("model_type")
        if model_type not in _MODEL_TYPES:
            raise ValueError(
                f"{path} holds a {model_type!r} model; expected one of {list(_MODEL_TYPES)}"
            )
        transformers = _transformers()
        model_cls = (
            transformers.Dinov2Model
            if model_type == "dinov2"
            else transformers.Dinov2WithRegistersModel
        )
        model = model_cls.from_pretrained(str(path), local_files_only=True)
        options = {k: settings[k] for k in ("image_size", "layer", "batch_size") if k in settings}
        options.update(kwargs)
        return cls(model, **options)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``feature_extractor.json``."""
        target = Path(directory)
        with atomic_directory(target, overwrite=True) as staging:
            self.model.save_pretrained(str(staging))
            write_json(staging / SETTINGS_NAME, self.settings())
        return target

    def settings(self) -> dict[str, Any]:
        """The preprocessing settings that ``feature_extractor.json`` records."""
        return {
            "type": self.name,
            "image_size": self.image_size,
            "layer": self.layer,
            "batch_size": self.batch_size,
            "feature_dim": self.feature_dim,
            "num_patches": self.num_patches,
        }

    # -- interface ---------------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        """Hidden size of the model."""
        return int(self.model.config.hidden_size)

    @property
    def grid_size(self) -> int:
        """Patches per image side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """``grid_size²``."""
        return self.grid_size**2

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the model config, the preprocessing settings and every weight."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = self.model.config.to_dict()
            config.pop("transformers_version", None)
            config.pop("_name_or_path", None)
            settings = {k: v for k, v in self.settings().items() if k != "batch_size"}
            digest.update(json.dumps([config, settings], sort_keys=True, default=str).encode())
            for key, value in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images to normalised ``(B, 3, image_size, image_size)`` pixel values."""
        pixels = as_image_batch(images).to(self.device)
        if tuple(pixels.shape[-2:]) != (self.image_size, self.image_size):
            pixels = F.interpolate(
                pixels,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def extract(self, images: Any) -> torch.Tensor:
        """``(B, H, W, 3)`` uint8 or ``(B, 3, H, W)`` float images → ``(B, N, C)`` features.

        Raises:
            ValueError: For images of the wrong type, shape or range.
        """
        batch = check_image_batch(images)
        outputs = []
        for begin in range(0, batch.shape[0], self.batch_size):
            pixels = self.preprocess(batch[begin : begin + self.batch_size])
            result = self.model(pixel_values=pixels, output_hidden_states=self.layer is not None)
            hidden = (
                result.last_hidden_state if self.layer is None else result.hidden_states[self.layer]
            )
            outputs.append(hidden[:, self.prefix_tokens :].float().cpu())
        return torch.cat(outputs)
