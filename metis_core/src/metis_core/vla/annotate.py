"""The offline dynamics-code annotation pass (``metis annotate``) and the reading of its codes.

The policy trains on 44 dynamics codes per frame: the visual-dynamics tokenizer's 4 codes, then
the motion tokenizer's 40 (:func:`metis_core.vla.data.dynamics_codes_for_episode` computes them).
They are computed once with the trained tokenizers and stored in the LeRobot dataset as the
per-frame feature :data:`DYNAMICS_FEATURE` (``int64``, shape ``[Q_v + Q_m]``; ``names``
``visual_0 .. visual_3, motion_0 .. motion_39``), through
:func:`metis_datasets.annotation.add_frame_feature` (atomic, resumable).

The feature's ``info.json`` entry records, under ``"metis_annotation"``:

* ``metadata`` (compared on re-runs and by :func:`read_dynamics_codes`): ``layout``
  (``["visual", "motion"]``), ``motion_tokenizer`` / ``visual_tokenizer`` (``type``,
  ``fingerprint``, ``codes``, ``codebook_size``), ``feature_extractor`` (``type``,
  ``fingerprint``), ``camera``, ``window_duration_s``, ``window_len``, ``frame_gap``;
* ``provenance`` (not compared): ``metis_core_version``.

:func:`tokenizer_fingerprint` is a SHA-256 of a tokenizer's registry name, config and weights, so
the training data loader can check (:func:`read_dynamics_codes`) that the stored codes came from
the tokenizers the policy is built with.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core._optional import require
from metis_core.io import CorruptFileError
from metis_core.vla.data import dynamics_codes_for_episodes

__all__ = [
    "DYNAMICS_FEATURE",
    "WINDOW_DURATION_S",
    "AnnotationMismatchError",
    "CorruptAnnotationError",
    "MissingAnnotationError",
    "annotate_dataset",
    "dynamics_feature_names",
    "dynamics_metadata",
    "load_annotation_tokenizers",
    "read_dynamics_codes",
    "tokenizer_fingerprint",
]

#: The per-frame feature holding the dynamics codes (visual codes, then motion codes).
DYNAMICS_FEATURE = "dynamics.codes"
#: Seconds of upcoming motion per window (DESIGN §5).
WINDOW_DURATION_S = 1.0


class MissingAnnotationError(ValueError):
    """The dataset has no dynamics codes: run ``metis annotate`` on it first."""


class AnnotationMismatchError(ValueError):
    """The stored codes were computed with other tokenizers than the ones configured."""


class CorruptAnnotationError(CorruptFileError):
    """The stored codes are malformed (wrong shape, or codes outside the codebooks)."""


def _datasets_module(name: str) -> Any:
    return require(f"metis_datasets.{name}", install="metis-datasets", feature="metis annotate")


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """SHA-256 hex digest of a tokenizer's registry name, config and saved tensors.

    Covers the ``type`` name, the config (``config.to_dict()`` as canonical JSON) and every
    tensor of ``state_tensors()`` (what ``model.safetensors`` holds; ``state_dict()`` for other
    modules): sorted names, dtype, shape and raw bytes. Equal for a tokenizer and its
    ``save_pretrained`` / ``from_pretrained`` copy; changing any weight changes it.
    """
    digest = hashlib.sha256()
    type_name = getattr(tokenizer, "name", None) or type(tokenizer).__name__
    digest.update(f"type:{type_name}\n".encode())
    config = getattr(tokenizer, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    config_dict.pop("_metis", None)
    digest.update(b"config:")
    digest.update(json.dumps(config_dict, sort_keys=True, separators=(",", ":"), default=str).encode())  # fmt: skip
    digest.update(b"\n")
    if hasattr(tokenizer, "state_tensors"):
        tensors = tokenizer.state_tensors()
    elif isinstance(tokenizer, torch.nn.Module):
        tensors = tokenizer.state_dict()
    else:
        tensors = {}
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"tensor:{name}:{str(tensor.dtype).removeprefix('torch.')}:{list(tensor.shape)}\n".encode())  # fmt: skip
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _codes(tokenizer: Any) -> int:
    return int(tokenizer.tokens_per_window)


def dynamics_feature_names(motion_tokenizer: Any, visual_tokenizer: Any) -> list[str]:
    """``visual_0 .. visual_{Q_v-1}, motion_0 .. motion_{Q_m-1}``: the feature's ``names``."""
    return [f"visual_{i}" for i in range(_codes(visual_tokenizer))] + [f"motion_{i}" for i in range(_codes(motion_tokenizer))]  # fmt: skip


def dynamics_metadata(
    motion_tokenizer: Any, visual_tokenizer: Any, feature_extractor: Any, *, camera: str = "ego"
) -> dict:
    """The ``metadata`` recorded with the codes (see the module docstring), fingerprints included."""
    return {
        "layout": ["visual", "motion"],
        "motion_tokenizer": {
            "type": getattr(motion_tokenizer, "name", type(motion_tokenizer).__name__),
            "fingerprint": tokenizer_fingerprint(motion_tokenizer),
            "codes": _codes(motion_tokenizer),
            "codebook_size": int(motion_tokenizer.vocab_size),
        },
        "visual_tokenizer": {
            "type": getattr(visual_tokenizer, "name", type(visual_tokenizer).__name__),
            "fingerprint": tokenizer_fingerprint(visual_tokenizer),
            "codes": _codes(visual_tokenizer),
            "codebook_size": int(visual_tokenizer.vocab_size),
        },
        "feature_extractor": {
            "type": getattr(feature_extractor, "name", type(feature_extractor).__name__),
            "fingerprint": str(feature_extractor.fingerprint),
        },
        "camera": camera,
        "window_duration_s": WINDOW_DURATION_S,
        "window_len": int(motion_tokenizer.config.window_len),
        "frame_gap": int(visual_tokenizer.config.frame_gap),
    }


def _check_tokenizers(motion_tokenizer: Any, visual_tokenizer: Any, feature_extractor: Any) -> None:  # fmt: skip
    for what, tokenizer in (("motion", motion_tokenizer), ("visual", visual_tokenizer)):
        if getattr(tokenizer, "is_trained", True) is False:
            raise ValueError(f"the {what} tokenizer ({getattr(tokenizer, 'name', type(tokenizer).__name__)}) is untrained; annotate with trained tokenizers")  # fmt: skip
    for attribute in ("window_len",):
        if not hasattr(motion_tokenizer.config, attribute):
            raise TypeError(f"motion_tokenizer {type(motion_tokenizer).__name__} has no config.{attribute}; expected a motion_rvq tokenizer")  # fmt: skip
    if not hasattr(visual_tokenizer.config, "frame_gap"):
        raise TypeError(f"visual_tokenizer {type(visual_tokenizer).__name__} has no config.frame_gap; expected a visual_dynamics_vq tokenizer")  # fmt: skip
    config = visual_tokenizer.config
    wanted = (getattr(config, "num_patches", None), getattr(config, "feature_dim", None))
    given = (getattr(feature_extractor, "num_patches", None), getattr(feature_extractor, "feature_dim", None))  # fmt: skip
    if None not in wanted and wanted != given:
        raise ValueError(f"the feature extractor gives (patches, channels) {given} but the visual tokenizer takes {wanted}; use the extractor it was trained with")  # fmt: skip


class _Episodes(torch.utils.data.Dataset):
    """Episodes of a dataset by position, decoded in DataLoader workers."""

    def __init__(self, dataset: Any, positions: Sequence[int]) -> None:
        self.dataset, self.positions = dataset, list(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: int) -> Any:
        return self.dataset.episode(self.positions[item])


def _identity(item: Any) -> Any:
    return item


def _decoded(dataset: Any, positions: Sequence[int], workers: int) -> Iterator[Any]:
    if workers <= 0 or len(positions) <= 1:
        for position in positions:
            yield dataset.episode(position)
        return
    loader = torch.utils.data.DataLoader(
        _Episodes(dataset, positions),
        batch_size=None,
        num_workers=min(workers, len(positions)),
        collate_fn=_identity,
        prefetch_factor=2,
    )
    yield from loader


def annotate_dataset(
    root: str | os.PathLike[str],
    *,
    motion_tokenizer: Any,
    visual_tokenizer: Any,
    feature_extractor: Any,
    batch_size: int = 64,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    camera: str = "ego",
    report: dict | None = None,
    visual_codes_from: str | os.PathLike[str] | None = None,
) -> Path:
    """Compute and store the dynamics codes of every frame of a LeRobot v3.0 dataset.

    The codes are those of :func:`metis_core.vla.data.dynamics_codes_for_episode` (tokenizer
    calls batched across the episodes of one data file), stored as :data:`DYNAMICS_FEATURE` by
    :func:`metis_datasets.annotation.add_frame_feature`: data file by data file, resumable after
    a kill, committed atomically. A dataset already annotated with the same tokenizers is left as
    it is.

    Args:
        root: Dataset directory (a whole METIS dataset with ego video).
        motion_tokenizer: Trained ``motion_rvq``.
        visual_tokenizer: Trained ``visual_dynamics_vq``.
        feature_extractor: The extractor the visual tokenizer was trained with.
        batch_size: Frames per tokenizer call.
        workers: DataLoader worker processes decoding episodes (0: in this process).
        overwrite: Recompute codes stored with other tokenizers.
        progress: Progress bar over the data files.
        camera: Image key of the episodes.
        report: A dict to fill with what the run did: ``frames`` (in the dataset),
            ``frames_computed`` and ``episodes_computed`` (by this run: 0 when nothing was to
            do, fewer than all when a killed run is resumed) and ``seconds``.
        visual_codes_from: Another dataset with the same episodes (e.g. the one this one was
            copied from) annotated with the same visual tokenizer and feature extractor: its
            visual codes are taken instead of extracting patch features again, and only the
            motion codes are computed (how a second motion tokenizer, such as the binned-action
            baseline's, annotates a copy cheaply). Checked: the fingerprints and the episode
            lengths.

    Returns:
        The dataset root.

    Raises:
        AnnotationConflictError: If the dataset holds codes of other tokenizers (and not
            ``overwrite``); the message names what differs.
        IncompleteDatasetError: For an unfinished conversion.
        FileNotFoundError: If ``root`` is not a dataset.
    """
    annotation = _datasets_module("annotation")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    _check_tokenizers(motion_tokenizer, visual_tokenizer, feature_extractor)
    start = time.perf_counter()
    metadata = dynamics_metadata(motion_tokenizer, visual_tokenizer, feature_extractor, camera=camera)  # fmt: skip
    names = dynamics_feature_names(motion_tokenizer, visual_tokenizer)
    root = Path(root)
    state: dict[str, Any] = {"dataset": None, "frames": 0, "episodes": 0}
    reuse = _visual_codes_source(root, visual_codes_from, visual_tokenizer, feature_extractor, camera) if visual_codes_from is not None else None  # fmt: skip

    def compute(positions: list[int]) -> dict[int, np.ndarray]:
        if state["dataset"] is None:  # opened once, on the first file that needs codes
            state["dataset"] = _datasets_module("lerobot_format").LeRobotDataset(root)
        dataset = state["dataset"]
        if reuse is not None:
            return _motion_codes_beside(dataset, positions, reuse, motion_tokenizer, state)
        codes = dynamics_codes_for_episodes(
            _decoded(dataset, positions, workers),
            motion_tokenizer=motion_tokenizer,
            visual_tokenizer=visual_tokenizer,
            feature_extractor=feature_extractor,
            camera=camera,
            duration_s=WINDOW_DURATION_S,
            batch_size=batch_size,
        )
        out = {}
        for position, c in zip(positions, codes, strict=True):
            out[position] = np.concatenate([c.visual, c.motion], axis=1).astype(np.int64)
            state["frames"] += int(c.visual.shape[0])
            state["episodes"] += 1
        return out

    from metis_core import __version__

    annotation.add_frame_feature(
        root,
        DYNAMICS_FEATURE,
        compute,
        dtype="int64",
        shape=[len(names)],
        names=names,
        metadata=metadata,
        provenance={"metis_core_version": __version__},
        overwrite=overwrite,
        progress=progress,
    )
    if report is not None:
        info = json.loads((root / "meta" / "info.json").read_text(encoding="utf-8"))
        report.update(
            frames=int(info.get("total_frames", 0)),
            frames_computed=state["frames"],
            episodes_computed=state["episodes"],
            seconds=time.perf_counter() - start,
        )
    return root


def _visual_codes_source(root: Path, source: str | os.PathLike[str], visual_tokenizer: Any, feature_extractor: Any, camera: str) -> tuple[Any, np.ndarray]:  # fmt: skip
    """``(source dataset, its visual codes per frame)``, checked to fit ``root``."""
    lerobot = _datasets_module("lerobot_format")
    other = lerobot.LeRobotDataset(source)
    target = lerobot.LeRobotDataset(root, load_stats=False)
    feature = other.info.get("features", {}).get(DYNAMICS_FEATURE)
    if feature is None or DYNAMICS_FEATURE not in other.columns:
        raise MissingAnnotationError(f"visual_codes_from {source}: it has no dynamics codes; annotate it first")  # fmt: skip
    stored = ((feature.get("metis_annotation") or {}).get("metadata")) or {}
    visual = (stored.get("visual_tokenizer") or {}).get("fingerprint")
    extractor = (stored.get("feature_extractor") or {}).get("fingerprint")
    checks = {
        "visual tokenizer": (visual, tokenizer_fingerprint(visual_tokenizer)),
        "feature extractor": (extractor, str(feature_extractor.fingerprint)),
        "camera": (stored.get("camera"), camera),
    }
    for what, (recorded, wanted) in checks.items():
        if recorded != wanted:
            raise AnnotationMismatchError(f"visual_codes_from {source}: its codes were computed with another {what} ({str(recorded)[:12]}... vs {str(wanted)[:12]}...)")  # fmt: skip
    lengths = [int(e["length"]) for e in other.episodes]
    if lengths != [int(e["length"]) for e in target.episodes]:
        raise ValueError(f"visual_codes_from {source}: its episodes ({len(lengths)}, lengths {lengths[:5]}...) are not those of {root}")  # fmt: skip
    q_v = _codes(visual_tokenizer)
    codes = np.asarray(other.columns[DYNAMICS_FEATURE]).astype(np.int64)[:, :q_v]
    return other, codes


def _motion_codes_beside(dataset: Any, positions: list[int], reuse: tuple[Any, np.ndarray], motion_tokenizer: Any, state: dict[str, Any]) -> dict[int, np.ndarray]:  # fmt: skip
    """The stored visual codes of the source dataset beside newly computed motion codes."""
    from metis_core.vla.data import motion_windows_for_episode

    other, visual = reuse
    window_len = int(motion_tokenizer.config.window_len)
    out = {}
    for position in positions:
        episode = dataset.episode(position, with_images=False)
        windows, masks = motion_windows_for_episode(episode, duration_s=WINDOW_DURATION_S, window_len=window_len)  # fmt: skip
        with torch.no_grad():
            motion = torch.as_tensor(motion_tokenizer.encode(windows, masks.all(1))).numpy().astype(np.int64)  # fmt: skip
        record = other.episodes[position]
        out[position] = np.concatenate([visual[record["from"] : record["to"]], motion], axis=1)
        state["frames"] += int(motion.shape[0])
        state["episodes"] += 1
    return out


def read_dynamics_codes(
    dataset: Any, *, motion_tokenizer: Any, visual_tokenizer: Any
) -> np.ndarray:
    """The stored dynamics codes of every frame, checked against the configured tokenizers.

    Args:
        dataset: A :class:`metis_datasets.lerobot_format.LeRobotDataset` (or its root).
        motion_tokenizer: The policy's motion tokenizer.
        visual_tokenizer: The policy's visual tokenizer.

    Returns:
        ``(N_frames, Q_v + Q_m)`` int64 in ``dataset.columns`` order (episode ``i``'s frames are
        rows ``episodes[i]["from"]:episodes[i]["to"]``): visual codes, then motion codes.

    Raises:
        MissingAnnotationError: If the dataset has no codes.
        AnnotationMismatchError: If they were computed with other tokenizers (naming which, with
            the stored and configured fingerprints).
        CorruptAnnotationError: For a wrong shape or codes outside a codebook.
    """
    if isinstance(dataset, (str, os.PathLike)):
        dataset = _datasets_module("lerobot_format").LeRobotDataset(dataset)
    root = getattr(dataset, "root", "the dataset")
    feature = dataset.info.get("features", {}).get(DYNAMICS_FEATURE)
    if feature is None or DYNAMICS_FEATURE not in dataset.columns:
        raise MissingAnnotationError(
            f"{root} has no dynamics codes (feature {DYNAMICS_FEATURE!r}); compute them once with "
            f"`metis annotate {root} --motion MOTION_TOKENIZER_DIR --visual VISUAL_TOKENIZER_DIR`"
        )
    stored = ((feature.get("metis_annotation") or {}).get("metadata")) or {}
    for key, tokenizer in (("visual_tokenizer", visual_tokenizer), ("motion_tokenizer", motion_tokenizer)):  # fmt: skip
        recorded = (stored.get(key) or {}).get("fingerprint")
        configured = tokenizer_fingerprint(tokenizer)
        if recorded != configured:
            label = key.replace("_", " ")
            raise AnnotationMismatchError(
                f"{root}: its dynamics codes were computed with another {label} "
                f"(stored fingerprint {str(recorded)[:12]}..., configured {configured[:12]}...); "
                f"re-run `metis annotate {root} --motion DIR --visual DIR --overwrite` with the "
                "policy's tokenizers, or build the policy with the tokenizers that annotated it"
            )
    q_v, q_m = _codes(visual_tokenizer), _codes(motion_tokenizer)
    codes = np.asarray(dataset.columns[DYNAMICS_FEATURE])
    if codes.ndim != 2 or codes.shape != (dataset.num_frames, q_v + q_m):
        raise CorruptAnnotationError(f"{root}: feature {DYNAMICS_FEATURE!r} holds shape {codes.shape}, expected ({dataset.num_frames}, {q_v + q_m})")  # fmt: skip
    codes = codes.astype(np.int64, copy=False)
    for label, part, size in (("visual", codes[:, :q_v], visual_tokenizer.vocab_size), ("motion", codes[:, q_v:], motion_tokenizer.vocab_size)):  # fmt: skip
        bad = (part < 0) | (part >= int(size))
        if bad.any():
            row = int(np.flatnonzero(bad.any(1))[0])
            episode = int(dataset.frame_episode[row]) if hasattr(dataset, "frame_episode") else -1
            raise CorruptAnnotationError(f"{root}: feature {DYNAMICS_FEATURE!r}: {int(bad.sum())} {label} code(s) outside [0, {int(size)}) (first at frame {row}, episode {episode}: {part[row].tolist()}); the file is damaged, re-run metis annotate --overwrite")  # fmt: skip
    return codes


def load_annotation_tokenizers(motion_dir: str | os.PathLike[str], visual_dir: str | os.PathLike[str]) -> tuple[Any, Any, Any]:  # fmt: skip
    """``(motion_tokenizer, visual_tokenizer, feature_extractor)`` from saved directories.

    Args:
        motion_dir: A saved ``motion_rvq`` (or a fitted ``binning`` tokenizer: the binned-action
            baseline's codes).
        visual_dir: A ``visual_dynamics_vq`` run directory (with its ``feature_extractor/``).

    Raises:
        FileNotFoundError: For a missing directory, or a visual run without its extractor.
        ValueError: If a directory holds another kind of tokenizer.
    """
    from metis_core.interfaces import Tokenizer

    motion_dir, visual_dir = Path(motion_dir), Path(visual_dir)
    for flag, directory in (("--motion", motion_dir), ("--visual", visual_dir)):
        if not directory.is_dir():
            raise FileNotFoundError(f"{flag} {directory}: no such directory (expected a saved tokenizer)")  # fmt: skip
    motion = Tokenizer.from_pretrained(motion_dir)
    if not (isinstance(getattr(type(motion), "tokens_per_window", None), property) and hasattr(getattr(motion, "config", None), "window_len")):  # fmt: skip
        raise ValueError(f"--motion {motion_dir} holds a {getattr(motion, 'name', type(motion).__name__)!r} tokenizer, expected a fixed-length motion tokenizer with a window ('motion_rvq', or 'binning' for the binned-action baseline)")  # fmt: skip
    pipeline = require("metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq", install="metis-tokenizers", feature="metis annotate")  # fmt: skip
    visual, extractor = pipeline.load_run(visual_dir)
    return motion, visual, extractor
