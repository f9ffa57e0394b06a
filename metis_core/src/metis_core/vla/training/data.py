"""Training data of the policy: annotated LeRobot datasets, split, mixed and cut into samples.

Every dataset is split by episodes: a fixed, seeded share is held out for evaluation, and the
rest (or the first ``demo_fraction`` of it, in a seeded order — so smaller fractions are subsets
of larger ones) is sampled for training through
:class:`metis_datasets.mixture.MixtureDataset`, whose global sample stream is a function of the
seed and the sample number alone. Step ``s`` of a run with global batch ``B`` takes samples
``s·B .. s·B + B − 1``, and process ``r`` of ``R`` the ``r``-th contiguous ``B/R`` of them, so a
run's data does not depend on how many processes share it, and a resumed run continues the
stream exactly.

Each sample is a :class:`~metis_core.vla.data.TrainingSample`: the ego frame (centre-cropped and
resized to the backbone's input once per decoded episode), the proprio state, the next
``chunk_len`` actions, the hand mask, the stored dynamics codes (``metis annotate``; refused if
they were computed by other tokenizers than the policy's) and the subtask bookkeeping.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metis_core._optional import require
from metis_core.episode import Episode
from metis_core.vla.data import TrainingSample, sample_at
from metis_core.vla.normalization_policy import PolicyNormalization
from metis_core.vla.training.config import DataSection

__all__ = ["EpisodeSplit", "TrainingData"]


def _datasets_module() -> Any:
    return require("metis_datasets.lerobot_format", install="metis-datasets", feature="training the METIS policy")  # fmt: skip


@dataclass(frozen=True)
class EpisodeSplit:
    """Episode positions of one dataset: ``train`` (after the demonstration fraction) and
    ``heldout``."""

    train: tuple[int, ...]
    heldout: tuple[int, ...]
    excluded: tuple[int, ...]


def split_episodes(count: int, *, heldout_fraction: float, demo_fraction: float, seed: int, salt: int, eligible: list[int] | None = None) -> EpisodeSplit:  # fmt: skip
    """Seeded split of ``count`` episodes (see the module docstring).

    At least one episode is held out when ``heldout_fraction > 0`` and there are two or more;
    at least one trains.
    """
    pool = list(range(count)) if eligible is None else list(eligible)
    order = np.random.default_rng([seed, salt]).permutation(len(pool))
    ordered = [pool[i] for i in order]
    held = 0
    if heldout_fraction > 0 and len(ordered) >= 2:
        held = min(max(1, round(heldout_fraction * len(ordered))), len(ordered) - 1)
    heldout, rest = ordered[:held], ordered[held:]
    if not rest:
        raise ValueError("no training episodes left after the held-out split")
    keep = max(1, int(np.ceil(demo_fraction * len(rest) - 1e-9)))
    train = rest[:keep]
    excluded = sorted(set(range(count)) - set(train) - set(heldout))
    return EpisodeSplit(tuple(sorted(train)), tuple(sorted(heldout)), tuple(excluded))


class TrainingData:
    """The annotated datasets of a run (see the module docstring).

    Args:
        config: The ``data`` section.
        seed: Seed of the sample stream.
        chunk_len: Actions per sample.
        image_size: Side of the backbone's square input.
        norm_mode: The policy's normalisation mode (statistics come from the datasets).
        motion_tokenizer, visual_tokenizer: The policy's dynamics tokenizers; the stored codes
            must have been computed by them.
        dynamics_tokens: ``False`` (the no-dynamics ablation): codes are not read.
    """

    def __init__(self, config: DataSection, *, seed: int, chunk_len: int, image_size: int, norm_mode: str, motion_tokenizer: Any, visual_tokenizer: Any, dynamics_tokens: bool = True) -> None:  # fmt: skip
        lerobot = _datasets_module()
        mixture = require("metis_datasets.mixture", install="metis-datasets", feature="training the METIS policy")  # fmt: skip
        annotate = require("metis_core.vla.annotate", install="metis-core[vla]", feature="training the METIS policy")  # fmt: skip
        self.config = config
        self.chunk_len = int(chunk_len)
        self.image_size = int(image_size)
        self.dynamics_tokens = bool(dynamics_tokens)
        self.names = list(config.datasets)
        self.datasets = []
        self.codes: list[np.ndarray | None] = []
        self.splits: list[EpisodeSplit] = []
        for salt, name in enumerate(self.names):
            dataset = lerobot.LeRobotDataset(config.datasets[name])
            dataset.require_contract()
            self.datasets.append(dataset)
            if self.dynamics_tokens:
                self.codes.append(annotate.read_dynamics_codes(dataset, motion_tokenizer=motion_tokenizer, visual_tokenizer=visual_tokenizer))  # fmt: skip
            else:
                self.codes.append(None)
            eligible = None
            if config.sources == "human":
                eligible = [i for i, r in enumerate(dataset.episodes) if str(r["embodiment"]).startswith("human")]  # fmt: skip
                if not eligible:
                    raise ValueError(f"data.sources = human, but dataset {name!r} ({config.datasets[name]}) holds no human-hand episode (embodiments {sorted({r['embodiment'] for r in dataset.episodes})}); leave it out of data.datasets")  # fmt: skip
            self.splits.append(split_episodes(len(dataset.episodes), heldout_fraction=config.heldout_fraction, demo_fraction=config.demo_fraction, seed=config.split_seed, salt=salt, eligible=eligible))  # fmt: skip
        weights = config.weights
        if weights is None and len(self.names) == 1:
            weights = {self.names[0]: 1.0}
        frames = {}
        for name, dataset, split in zip(self.names, self.datasets, self.splits, strict=True):
            rows = [np.arange(dataset.episodes[e]["from"], dataset.episodes[e]["to"]) for e in split.train]  # fmt: skip
            frames[name] = np.concatenate(rows)
        self.mixture = mixture.MixtureDataset(
            dict(zip(self.names, self.datasets, strict=True)),
            weights=weights,
            seed=seed,
            frames=frames,
            rank=0,
            world_size=1,
        )
        self._starts = [np.array([r["from"] for r in d.episodes], dtype=np.int64) for d in self.datasets]  # fmt: skip
        self._episodes: OrderedDict[tuple[int, int], Episode] = OrderedDict()
        self._frames: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0
        self.normalization = self._normalization(norm_mode)

    # -- bookkeeping -------------------------------------------------------------------------

    def _normalization(self, mode: str) -> PolicyNormalization:
        if mode == "identity":
            return PolicyNormalization.identity()
        stats = {}
        for name, dataset in zip(self.names, self.datasets, strict=True):
            if not dataset.stats:
                raise ValueError(f"dataset {name!r} ({dataset.root}) has no meta/stats.json statistics; finalise it with metis-datasets")  # fmt: skip
            stats[name] = {k: dataset.stats[k] for k in ("observation.state", "action")}
        return PolicyNormalization(mode=mode, stats=stats)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must find unchanged: each dataset's integrity hash, annotation and
        split (a checkpoint records it)."""
        out: dict[str, Any] = {}
        for name, dataset, split in zip(self.names, self.datasets, self.splits, strict=True):
            info = json.loads((dataset.root / "meta" / "info.json").read_text(encoding="utf-8"))
            integrity = info.get("metis_integrity", {}).get("info_sha256")
            digest = hashlib.sha256(json.dumps([split.train, split.heldout]).encode()).hexdigest()
            out[name] = {
                "root": str(dataset.root),
                "info_sha256": integrity,
                "frames": len(dataset),
                "episodes": len(dataset.episodes),
                "split_sha256": digest,
                "train_episodes": len(split.train),
                "heldout_episodes": len(split.heldout),
            }
        return out

    def summary(self) -> str:
        """One line per dataset: episodes and frames for training and held out."""
        lines = []
        for name, dataset, split, weight in zip(self.names, self.datasets, self.splits, self.mixture.weights, strict=True):  # fmt: skip
            train = sum(dataset.episodes[e]["length"] for e in split.train)
            held = sum(dataset.episodes[e]["length"] for e in split.heldout)
            lines.append(f"{name}: weight {weight:.3f}, {len(split.train)} training episodes ({train} frames), {len(split.heldout)} held out ({held} frames)")  # fmt: skip
        return "\n".join(lines)

    # -- samples -----------------------------------------------------------------------------

    def _episode(self, source: int, episode: int) -> Episode:
        """The episode's vectors and annotations (no images), cached."""
        key = (source, episode)
        cached = self._episodes.get(key)
        if cached is not None:
            self._episodes.move_to_end(key)
            return cached
        loaded = self.datasets[source].episode(episode, with_images=False)
        if not self.config.reasoning:
            loaded.subtasks = []
        self._episodes[key] = loaded
        while len(self._episodes) > 1024:
            self._episodes.popitem(last=False)
        return loaded

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        transforms = require("metis_datasets.transforms", install="metis-datasets", feature="training the METIS policy")  # fmt: skip
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
        if self.config.center_crop:
            tensor = transforms.center_crop_resize(tensor, self.image_size, dtype="uint8").permute(0, 2, 3, 1)  # fmt: skip
        return tensor.contiguous().numpy()

    def _frame(self, source: int, episode: int, frame: int) -> np.ndarray:
        """Frame ``frame`` of an episode, cropped and resized. Short episodes are decoded whole
        and cached (up to ``data.cache_frames`` frames in all); long ones frame by frame."""
        dataset = self.datasets[source]
        record = dataset.episodes[episode]
        key = f"observation.images.{self.config.camera}"  # LeRobot video key of the camera
        if key not in record["videos"]:
            raise ValueError(f"dataset {self.names[source]!r} episode {episode} has no {key!r} video (has {sorted(record['videos'])})")  # fmt: skip
        budget = self.config.cache_frames
        if record["length"] > budget // 8:
            return self._prepare(dataset.frames(episode, [frame], key=key))[0]
        cache_key = (source, episode)
        frames = self._frames.get(cache_key)
        if frames is None:
            frames = self._prepare(dataset.frames(episode, np.arange(record["length"]), key=key))
            self._frames[cache_key] = frames
            self._cached += len(frames)
            while self._cached > budget:
                _, dropped = self._frames.popitem(last=False)
                self._cached -= len(dropped)
        else:
            self._frames.move_to_end(cache_key)
        return frames[frame]

    def sample_at(self, source: int, row: int) -> TrainingSample:
        """The sample of dataset row ``row`` of dataset ``source``."""
        episode = int(np.searchsorted(self._starts[source], row, side="right") - 1)
        record = self.datasets[source].episodes[episode]
        frame = int(row - record["from"])
        loaded = self._episode(source, episode)
        codes = self.codes[source]
        if codes is not None:
            rows = codes[record["from"] : record["to"]]
            visual, motion = rows[:, :4], rows[:, 4:]
        else:
            # the ablation: no codes (collate puts placeholders at the dynamics positions)
            length = record["length"]
            visual, motion = np.zeros((length, 4), np.int64), np.zeros((length, 40), np.int64)
        sample = sample_at(loaded, frame, image=self._frame(source, episode, frame), chunk_len=self.chunk_len, visual_codes=visual, motion_codes=motion, dataset_key=self.names[source])  # fmt: skip
        assert sample is not None  # every frame has codes
        return sample

    def sample(self, number: int) -> TrainingSample:
        """Global training sample ``number`` of the stream."""
        source, row = self.mixture.locate(int(number))
        return self.sample_at(source, row)

    def heldout(self, count: int) -> list[TrainingSample]:
        """Up to ``count`` held-out samples, evenly spread over the held-out frames of every
        dataset (in proportion to the mixture weights), plus every frame where a held-out
        subtask starts (for the subtask-text accuracy)."""
        out: list[TrainingSample] = []
        for source, (split, weight) in enumerate(zip(self.splits, self.mixture.weights, strict=True)):  # fmt: skip
            dataset = self.datasets[source]
            rows = [np.arange(dataset.episodes[e]["from"], dataset.episodes[e]["to"]) for e in split.heldout]  # fmt: skip
            if not rows:
                continue
            all_rows = np.concatenate(rows)
            share = max(1, round(count * float(weight)))
            picks = all_rows[np.linspace(0, all_rows.size - 1, min(share, all_rows.size)).round().astype(int)]  # fmt: skip
            starts = []
            if self.config.reasoning:
                for e in split.heldout:
                    record = dataset.episodes[e]
                    starts += [record["from"] + s.start for s in record["subtasks"] if 0 <= s.start < record["length"]]  # fmt: skip
            for row in sorted(set(picks.tolist()) | set(starts)):
                out.append(self.sample_at(source, int(row)))
        return out
