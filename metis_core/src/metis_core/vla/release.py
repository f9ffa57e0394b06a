"""Checkpoints in the layout of the authors' release (AureleoPKU/Metis; VLA_FACTS §1, §2).

The authors ship a post-trained policy as one directory, the merged Hugging Face (OpenVLA-style)
VLM plus their action decoder::

    config.json               OpenVLA/"dexvla" fields, window_size, input_dim, norm_stats
    model.safetensors         (or shards + model.safetensors.index.json) LM, towers, projector
                              under vision_backbone.featurizer.* / fused_featurizer.*,
                              projector.fc1|fc2|fc3.*, language_model.*
    tokenizer files           LLaMA-2 + <PAD> + <BOA> <BOR> <DYN_0..15> <DEX_0..511>
    dataset_statistics.json   {dataset: {"action": {...}, "proprio": {...}, ...}}
    action_decoder.pt         torch.save of the PEFT ModulesToSaveWrapper state dict:
                              original_module.* (the frozen copy) and
                              modules_to_save.default.* (the trained decoder)

:func:`load_metis_release` builds a :class:`~metis_core.vla.modeling_metis.MetisPolicy` with the
``metis_release`` preset from such a directory (weights loaded strictly, by key mapping);
:func:`save_metis_release` writes a policy in that layout (tests, conversions);
:func:`is_metis_release` tells such a directory from a native METIS checkpoint.

The dynamics tokenizers (motion and visual) are not part of the authors' release: a loaded
policy predicts actions without them (``motion_window`` is ``None``) unless trained ones are
passed in.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.contract import ACTION_DIM
from metis_core.io import (
    CorruptFileError,
    atomic_directory,
    read_json,
    save_safetensors,
    write_json,
)
from metis_core.normalization import NormMode, NormStats
from metis_core.registry import TOKENIZERS
from metis_core.vla._hf import transformers_module
from metis_core.vla.configuration_metis import MetisConfig
from metis_core.vla.modeling_metis import MetisPolicy, _vocabulary_module
from metis_core.vla.normalization_policy import PolicyNormalization

__all__ = [
    "DECODER_FILE",
    "STATISTICS_FILE",
    "is_metis_release",
    "load_metis_release",
    "save_metis_release",
]

#: The action decoder's state dict (``torch.save``; read with ``weights_only=True`` only).
DECODER_FILE = "action_decoder.pt"
#: The normalisation statistics per dataset.
STATISTICS_FILE = "dataset_statistics.json"
CONFIG_FILE = "config.json"
#: Prefix of the trained decoder in the PEFT ``ModulesToSaveWrapper`` state dict.
TRAINED_PREFIX = "modules_to_save.default."
#: Prefix of the frozen copy PEFT keeps next to it (ignored when loading).
ORIGINAL_PREFIX = "original_module."
#: Our own section of ``config.json``: the exact :class:`MetisConfig` (the authors' loaders
#: ignore unknown fields); a directory without it is read from the release fields.
METIS_SECTION = "metis_config"
_STATS = ("mean", "std", "max", "min", "q01", "q99")
#: Our feature name → the release's.
_FEATURES = {"action": "action", "observation.state": "proprio"}
# The one backbone the authors released (VLA_FACTS §2).
_VISION_ID = "dinosiglip-vit-so-224px"
_LLM_PREFIX = "llama2-7b"
_TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]


# -- checks -----------------------------------------------------------------------------------


def _release_mismatches(config: MetisConfig) -> list[str]:
    """What in ``config`` differs from the release conventions (empty: compatible)."""
    release = MetisConfig.metis_release()
    problems = []
    for name in ("prompt_template", "image_states", "norm_mode", "vocabulary", "lowercase_instruction"):  # fmt: skip
        if getattr(config, name) != getattr(release, name):
            problems.append(f"{name} = {getattr(config, name)!r} (the release has {getattr(release, name)!r})")  # fmt: skip
    if config.backbone != "prismatic":
        problems.append(f"backbone = {config.backbone!r} (the release is a Prismatic VLM)")
    if config.action_head != "map_decoder":
        problems.append(f"action_head = {config.action_head!r} (the release uses map_decoder)")
    return problems


def is_metis_release(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` looks like a checkpoint in the authors' layout.

    True for a directory holding ``action_decoder.pt``, ``config.json`` and weights
    (``model.safetensors``, ``model.safetensors.index.json`` or ``model-*-of-*.safetensors``).
    Never raises; a native METIS checkpoint (no ``action_decoder.pt``) gives False.
    """
    try:
        path = Path(directory)
        if not (path / DECODER_FILE).is_file() or not (path / CONFIG_FILE).is_file():
            return False
        return (
            (path / "model.safetensors").is_file()
            or (path / "model.safetensors.index.json").is_file()
            or any(path.glob("model-*-of-*.safetensors"))
        )
    except (OSError, TypeError, ValueError):
        return False


# -- statistics -------------------------------------------------------------------------------


def _release_statistics(normalization: PolicyNormalization) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, features in normalization.stats.items():
        entry: dict[str, Any] = {}
        for ours, theirs in _FEATURES.items():
            stats = features[ours]
            values = {name: np.asarray(getattr(stats, name), dtype=np.float64).tolist() for name in _STATS}  # fmt: skip
            values["mask"] = [True] * stats.dim
            entry[theirs] = values
        counts = np.asarray(features["action"].count)
        entry["num_transitions"] = int(counts.max()) if counts.size else 0
        entry["num_trajectories"] = None  # not kept by our statistics
        out[key] = entry
    return out


def _feature_stats(values: Any, where: str) -> NormStats:
    if not isinstance(values, Mapping):
        raise CorruptFileError(f"{where}: expected an object of statistics, got {type(values).__name__}")  # fmt: skip
    missing = [name for name in _STATS if name not in values]
    if missing:
        raise CorruptFileError(f"{where} lacks {missing}; expected {list(_STATS)} (and optionally 'mask')")  # fmt: skip
    arrays = {}
    for name in _STATS:
        try:
            arrays[name] = np.asarray(values[name], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise CorruptFileError(f"{where}.{name}: expected numbers: {err}") from err
        if arrays[name].shape != (ACTION_DIM,):
            raise CorruptFileError(f"{where}.{name}: {arrays[name].shape[0]} values, expected the {ACTION_DIM} of the hand contract")  # fmt: skip
    mask = values.get("mask")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (ACTION_DIM,) or not np.isin(mask, (0, 1)).all():
            raise CorruptFileError(f"{where}.mask: expected {ACTION_DIM} booleans")
        # Note: the authors (un)normalise only where the mask is true and pass the other
        # dimensions through; min = -1, max = 1 makes min/max normalisation the identity there.
        mask = mask.astype(bool)
        arrays["min"] = np.where(mask, arrays["min"], -1.0)
        arrays["max"] = np.where(mask, arrays["max"], 1.0)
    return NormStats(**arrays, count=np.zeros(ACTION_DIM))


def _read_statistics(path: Path, unnorm_key: str | None) -> PolicyNormalization:
    file = path / STATISTICS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{path} lacks {STATISTICS_FILE} (the normalisation statistics of the release)")  # fmt: skip
    data = read_json(file)
    if not isinstance(data, Mapping) or not data:
        raise CorruptFileError(f"{file}: expected {{dataset_name: {{'action': ..., 'proprio': ...}}}}")  # fmt: skip
    stats: dict[str, dict[str, NormStats]] = {}
    for key, entry in data.items():
        if not isinstance(entry, Mapping):
            raise CorruptFileError(f"{file}: {key!r} must be an object with 'action' and 'proprio'")  # fmt: skip
        features = {}
        for ours, theirs in _FEATURES.items():
            if theirs not in entry:
                raise CorruptFileError(f"{file}: {key!r} lacks {theirs!r} (has {sorted(entry)})")
            features[ours] = _feature_stats(entry[theirs], f"{file}: {key!r}.{theirs}")
        stats[str(key)] = features
    # Note: the authors' server applies min/max (BOUNDS) to proprio and actions whatever the
    # training used (VLA_FACTS §1(d)); so does the preset.
    normalization = PolicyNormalization(mode=NormMode.MIN_MAX, stats=stats)
    key = normalization.resolve_key(unnorm_key)  # KeyError listing the choices
    return PolicyNormalization(mode=NormMode.MIN_MAX, stats=stats, default_key=key)


# -- action decoder ---------------------------------------------------------------------------


def _read_decoder(file: Path) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing (the release's action decoder)")
    try:
        data = torch.load(str(file), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError) as err:  # fmt: skip
        raise CorruptFileError(
            f"{file} was refused: it holds something other than tensors in plain containers "
            f"(read with torch.load(weights_only=True); nothing is unpickled): {err}"
        ) from err
    if not isinstance(data, Mapping):
        raise CorruptFileError(f"{file}: expected a state dict (a mapping of tensors), got {type(data).__name__}")  # fmt: skip
    bad = sorted(str(k) for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))  # fmt: skip
    if bad:
        raise CorruptFileError(f"{file}: entries that are not tensors: {bad}")
    trained = {k.removeprefix(TRAINED_PREFIX): v for k, v in data.items() if k.startswith(TRAINED_PREFIX)}  # fmt: skip
    plain = {k: v for k, v in data.items() if not k.startswith((TRAINED_PREFIX, ORIGINAL_PREFIX))}
    if trained:
        if plain:
            raise CorruptFileError(
                f"{file}: mixes wrapped ({TRAINED_PREFIX}*) and plain keys: {sorted(plain)}"
            )
        return trained
    if not plain:
        raise CorruptFileError(
            f"{file} holds only {ORIGINAL_PREFIX}* keys (the frozen copy PEFT keeps), not the "
            f"trained decoder ({TRAINED_PREFIX}* or plain keys)"
        )
    return plain


def _load_decoder(policy: MetisPolicy, file: Path) -> None:
    tensors = _read_decoder(file)
    expected = policy.action_head.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)}, decoder {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(tensors))
        if tuple(tensors[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CorruptFileError(
            f"{file} does not fit the action decoder "
            f"(chunk {policy.config.chunk_len}, {policy.backbone.hidden_size}-wide states): "
            f"missing {missing}, unexpected {unexpected}, shape mismatches {mismatched}"
        )
    policy.action_head.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


# -- config -----------------------------------------------------------------------------------


def _policy_config(data: Mapping[str, Any], file: Path, backbone_config: Mapping[str, Any] | None) -> MetisConfig:  # fmt: skip
    window = data.get("window_size", 32)
    input_dim = data.get("input_dim", ACTION_DIM)
    if input_dim != ACTION_DIM:
        raise CorruptFileError(f"{file}: input_dim = {input_dim!r}, the hand contract has {ACTION_DIM} values")  # fmt: skip
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise CorruptFileError(f"{file}: window_size must be a positive integer, got {window!r}")
    section = data.get(METIS_SECTION)
    if isinstance(section, Mapping):
        config = MetisConfig.from_dict(section)
        problems = _release_mismatches(config)
        if problems:
            raise CorruptFileError(f"{file}: {METIS_SECTION} is not a metis_release config: {problems}")  # fmt: skip
        if backbone_config is not None:
            config = config.with_backbone_config(dict(backbone_config))
    else:
        if backbone_config is None:
            vision, llm = data.get("vision_backbone_id"), data.get("llm_backbone_id")
            if vision != _VISION_ID or not str(llm).startswith(_LLM_PREFIX):
                raise ValueError(
                    f"{file}: cannot derive the backbone from vision_backbone_id={vision!r}, "
                    f"llm_backbone_id={llm!r} (known: {_VISION_ID!r} + {_LLM_PREFIX}*); pass "
                    "backbone_config=PrismaticConfig(...).to_dict()"
                )
        overrides: dict[str, Any] = {}
        if backbone_config is not None:
            overrides["backbone_config"] = dict(backbone_config)
        pad = data.get("pad_to_multiple_of")
        if isinstance(pad, int) and pad >= 1:
            overrides["pad_to_multiple_of"] = pad
        config = MetisConfig.metis_release(**overrides)
    if config.chunk_len != window:
        config = config.replace(chunk_len=window)
    return config


def _build_tokenizer(given: Any, name: str, fields: Mapping[str, Any]) -> Any:
    return given if given is not None else TOKENIZERS.get(name).from_config(dict(fields))


# -- loading ----------------------------------------------------------------------------------


def load_metis_release(
    directory: str | os.PathLike[str],
    *,
    backbone_config: Mapping[str, Any] | None = None,
    unnorm_key: str | None = None,
    motion_tokenizer: Any = None,
    visual_tokenizer: Any = None,
    text_tokenizer: Any = None,
    dtype: torch.dtype | None = None,
) -> MetisPolicy:
    """Build a ``metis_release`` policy from a directory in the authors' layout.

    The backbone (DINOv2 + SigLIP towers, projector, LLaMA) is loaded strictly from the
    OpenVLA/HF keys of ``model.safetensors`` by :func:`load_prismatic_weights` (every unmapped
    or unfilled key is listed); the decoder from ``action_decoder.pt``, taking the trained
    ``modules_to_save.default.*`` keys (or plain keys), strictly; the statistics from
    ``dataset_statistics.json`` in min/max mode. A copy of the decoder that the merged weights
    may hold under ``action_decoder.*`` is ignored, as the authors' server does.

    Safety: ``action_decoder.pt`` is a pickle file. It is read with
    ``torch.load(weights_only=True, map_location="cpu")`` only, which accepts tensors and plain
    containers and refuses any other object; nothing in it is ever fully unpickled.

    Args:
        directory: The checkpoint directory.
        backbone_config: :class:`PrismaticConfig` fields; by default those saved by
            :func:`save_metis_release`, else derived from ``config.json``
            (``dinosiglip-vit-so-224px`` + ``llama2-7b-*``: the paper's backbone).
        unnorm_key: Which dataset's statistics (required when the file holds several).
        motion_tokenizer: A trained motion tokenizer (not in the release; default: an
            untrained one, so ``motion_window`` is ``None``).
        visual_tokenizer: A trained visual-dynamics tokenizer (not in the release either).
        text_tokenizer: The extended tokenizer (default: the one saved in ``directory``).
        dtype: Cast the backbone after loading (e.g. ``torch.bfloat16``); the decoder stays
            float32.

    Returns:
        The policy in eval mode; its ``normalization.default_key`` is the chosen dataset.

    Raises:
        FileNotFoundError: For a missing directory, config, weights, decoder or statistics.
        KeyError: For a missing or ambiguous ``unnorm_key`` (the choices are listed).
        CorruptFileError: For weights or a decoder that do not fit (every key listed), a
            decoder file holding anything but tensors, or malformed statistics.
        ValueError: If the backbone cannot be derived or the tokenizers do not fit the release.
    """
    from metis_core.vla.backbones.prismatic.weights_prismatic import (
        KeyMappingError,
        load_prismatic_weights,
    )

    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"no such directory: {path} (expected a checkpoint in the authors' layout)")  # fmt: skip
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} holds no {CONFIG_FILE}; not a METIS release checkpoint")
    data = read_json(config_file)
    if not isinstance(data, Mapping):
        raise CorruptFileError(f"{config_file}: expected a JSON object")
    config = _policy_config(data, config_file, backbone_config)
    normalization = _read_statistics(path, unnorm_key)
    decoder_file = path / DECODER_FILE
    if not decoder_file.is_file():
        raise FileNotFoundError(f"{path} lacks {DECODER_FILE} (the release's action decoder)")
    if text_tokenizer is None:
        transformers = transformers_module("loading the release's tokenizer")
        text_tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)  # fmt: skip
    motion = _build_tokenizer(motion_tokenizer, config.motion_tokenizer, config.motion_tokenizer_config)  # fmt: skip
    visual = _build_tokenizer(visual_tokenizer, config.visual_tokenizer, config.visual_tokenizer_config)  # fmt: skip
    vocab_module = _vocabulary_module()
    release = vocab_module.VocabularySpec.metis_release()
    spec = vocab_module.VocabularySpec.from_tokenizers(visual, motion, **config.vocabulary)
    sizes = ("visual_codes", "visual_tokens", "motion_codes", "motion_tokens")
    wrong = {n: getattr(spec, n) for n in sizes if getattr(spec, n) != getattr(release, n)}
    if wrong:
        raise ValueError(
            f"the dynamics tokenizers give {wrong}; the release has "
            f"{ {n: getattr(release, n) for n in sizes} }"
        )
    try:
        vocabulary = vocab_module.DynamicsVocabulary(text_tokenizer, spec)
    except ValueError as err:
        raise CorruptFileError(f"{path}: the tokenizer does not hold the release's vocabulary: {err}") from err  # fmt: skip
    if getattr(text_tokenizer, "pad_token_id", None) is None:
        raise CorruptFileError(f"{path}: the tokenizer has no pad token (the release adds <PAD>)")
    policy = MetisPolicy(
        config,
        text_tokenizer=text_tokenizer,
        vocabulary=vocabulary,
        motion_tokenizer=motion,
        visual_tokenizer=visual,
        normalization=normalization,
    )
    report = load_prismatic_weights(policy.backbone, path, layout="openvla", strict=True)
    short = {k: rows for k, rows in report.partial_rows.items() if rows[0] < len(vocabulary)}
    if short:
        raise KeyMappingError(
            f"{path}: the embeddings hold fewer rows than the tokenizer's {len(vocabulary)} "
            f"tokens (rows copied, rows): {short}"
        )
    _load_decoder(policy, decoder_file)
    if dtype is not None:
        policy.cast_backbone(dtype)
    return policy.eval()


# -- writing ----------------------------------------------------------------------------------


def _release_config(policy: MetisPolicy, norm_stats: dict[str, Any]) -> dict[str, Any]:
    backbone = policy.backbone
    llm = json.loads(backbone.llm.config.to_json_string())
    size = int(backbone.config.image_size)
    return {
        # Fields of the OpenVLA / METIS HF config (VLA_FACTS §2).
        "model_type": "openvla",
        "vision_backbone_id": _VISION_ID,
        "llm_backbone_id": "llama2-7b-pure",
        "arch_specifier": "no-align+fused-gelu-mlp",
        "image_resize_strategy": "resize-naive",
        "use_fused_vision_backbone": backbone.dino is not None and backbone.siglip is not None,
        "timm_model_ids": _TIMM_IDS,
        "image_sizes": [size, size],
        "pad_token_id": int(policy.tokenizer.pad_token_id),
        "pad_to_multiple_of": int(policy.config.pad_to_multiple_of),
        "n_action_bins": 256,
        "text_config": llm,
        "norm_stats": norm_stats,
        # Added by METIS.
        "window_size": int(policy.config.chunk_len),
        "input_dim": ACTION_DIM,
        "use_diffusion_head": False,
        "use_proprio": bool(policy.action_head.config.use_proprio),
        # Ours: the exact sizes, so that tiny test checkpoints rebuild without arguments.
        METIS_SECTION: policy.config.to_dict(type_name="metis"),
    }


def save_metis_release(
    policy: MetisPolicy, directory: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``policy`` in the authors' layout, atomically (the inverse of
    :func:`load_metis_release`).

    Writes ``config.json``, ``model.safetensors`` (the backbone under the OpenVLA/HF keys,
    plus the decoder under ``action_decoder.*`` as the merged release holds it), the text
    tokenizer files, ``dataset_statistics.json`` and ``action_decoder.pt``: ``torch.save`` of
    the decoder's tensors under ``original_module.*`` and ``modules_to_save.default.*`` (the
    PEFT wrapper's state dict; both hold the same values here). The dynamics tokenizers are
    not written (the release has none).

    Args:
        policy: A policy built with :meth:`MetisConfig.metis_release` on the Prismatic
            backbone, with min/max statistics.
        directory: Target directory.
        overwrite: Replace an existing directory.

    Returns:
        The directory.

    Raises:
        ValueError: If the policy does not follow the release conventions (each difference is
            named) or holds no statistics.
    """
    from metis_core.vla.backbones.prismatic.weights_prismatic import prismatic_state_dict

    problems = _release_mismatches(policy.config)
    if problems:
        raise ValueError(
            "the policy does not follow the release conventions (build it with "
            f"MetisConfig.metis_release): {'; '.join(problems)}"
        )
    if policy.normalization.mode is not NormMode.MIN_MAX or not policy.normalization.stats:
        raise ValueError("the release stores min/max statistics; the policy holds none")
    norm_stats = _release_statistics(policy.normalization)
    head = {k: v.detach().cpu().contiguous() for k, v in policy.action_head.state_dict().items()}
    weights = {k: v.detach().cpu() for k, v in prismatic_state_dict(policy.backbone, "openvla").items()}  # fmt: skip
    weights.update({f"action_decoder.{k}": v for k, v in head.items()})
    wrapped = {f"{ORIGINAL_PREFIX}{k}": v.clone() for k, v in head.items()}
    wrapped.update({f"{TRAINED_PREFIX}{k}": v.clone() for k, v in head.items()})
    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as staging:
        write_json(staging / CONFIG_FILE, _release_config(policy, norm_stats))
        save_safetensors(staging / "model.safetensors", weights, metadata={"format": "pt"})
        policy.tokenizer.save_pretrained(str(staging))
        write_json(staging / STATISTICS_FILE, norm_stats)
        torch.save(wrapped, str(staging / DECODER_FILE))
    return target
