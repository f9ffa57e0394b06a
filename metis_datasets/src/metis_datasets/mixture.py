"""Weighted, deterministic, resumable, rank- and worker-disjoint sampling over many datasets.

The mixture defines one global stream of samples ``g = 0, 1, 2, ...``. Sample ``g`` comes from the
source drawn for it (blocks of 4096 holding each source's weighted share, shuffled by a generator
seeded by ``(seed, block)``), and is the
``k``-th draw from that source, which maps to frame ``perm_epoch[k mod N]`` of a per-source
permutation reshuffled every epoch (``epoch = k // N``). Rank ``r`` of ``R`` takes the samples
``g ≡ r (mod R)``, and its worker ``w`` of ``W`` every ``W``-th of those from the ``w``-th on (so a
rank's samples do not depend on its number of workers). Hence: the same seed gives the same
stream; resuming at a sample counter reproduces the rest of it exactly; and no two ranks or
workers share a sample within a source epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from metis_core.normalization import Normalizer
from metis_datasets.lerobot_format import (
    ACTION_KEY,
    STATE_KEY,
    LeRobotDataset,
    norm_stats_from_json,
)
from metis_datasets.transforms import SampleSpec, build_sample

__all__ = ["TABLE6_WEIGHTS", "MixtureDataset"]

#: Sampling weights of the paper's Table 6, by source registry name.
TABLE6_WEIGHTS: dict[str, float] = {
    "h2o": 0.008,
    "oakink": 0.019,
    "ph2d": 0.054,
    "arctic": 0.028,
    "egodex": 0.403,
    "holoassist": 0.106,
    "actionnet": 0.134,
    "metis_glove": 0.254,
}
_BLOCK = 4096


class MixtureDataset(IterableDataset):
    """Weighted mixture of LeRobot datasets yielding training samples.

    Args:
        datasets: Name → dataset (or dataset root), or a sequence (names = each dataset's source).
        weights: Name → weight, or a sequence aligned with ``datasets``; None uses
            :data:`TABLE6_WEIGHTS` by name. Normalised to sum to 1.
        seed: Seed of the stream.
        spec: What each sample holds (chunk length, image size, normalisation mode, ...).
        num_samples: Length of the global stream (all ranks together); None for endless.
        start_sample: Global sample counter to resume from.
        rank, world_size: Distributed position; default from ``torch.distributed`` if initialised.
        frames: Name (or position) → the dataset rows eligible for sampling (e.g. the training
            episodes' frames, leaving held-out episodes out); None: every frame.

    Raises:
        ValueError: For duplicate names, missing or non-positive weights, empty datasets.
    """

    def __init__(
        self,
        datasets: Mapping[str, LeRobotDataset | str | Path] | Sequence[LeRobotDataset | str | Path],
        *,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        seed: int = 0,
        spec: SampleSpec | None = None,
        num_samples: int | None = None,
        start_sample: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        frames: Mapping[str, Sequence[int] | np.ndarray]
        | Sequence[Sequence[int] | np.ndarray]
        | None = None,
    ) -> None:
        super().__init__()
        if isinstance(datasets, Mapping):
            items = [(str(k), _open(v)) for k, v in datasets.items()]
        else:
            opened = [_open(v) for v in datasets]
            items = [(d.source, d) for d in opened]
        names = [n for n, _ in items]
        if not items:
            raise ValueError("MixtureDataset needs at least one dataset")
        if len(set(names)) != len(names):
            raise ValueError(f"MixtureDataset: duplicate dataset names {names}; pass a mapping with unique names")  # fmt: skip
        self.names = names
        self.datasets = [d for _, d in items]
        for name, dataset in items:
            if len(dataset) == 0:
                raise ValueError(f"MixtureDataset: dataset {name!r} has no frames")
            dataset.require_contract()
        if weights is None:
            missing = [n for n in names if n not in TABLE6_WEIGHTS]
            if missing:
                raise ValueError(f"MixtureDataset: no default (Table 6) weight for {missing}; known {sorted(TABLE6_WEIGHTS)}. Pass weights=")  # fmt: skip
            raw = [TABLE6_WEIGHTS[n] for n in names]
        elif isinstance(weights, Mapping):
            missing = [n for n in names if n not in weights]
            if missing:
                raise ValueError(f"MixtureDataset: weights lack {missing}")
            raw = [float(weights[n]) for n in names]
        else:
            raw = [float(w) for w in weights]
            if len(raw) != len(names):
                raise ValueError(f"MixtureDataset: {len(raw)} weights for {len(names)} datasets")
        if any(not w > 0 for w in raw):
            raise ValueError(f"MixtureDataset: weights must be positive, got {raw}")
        self.weights = np.asarray(raw, dtype=np.float64) / sum(raw)
        self.seed = int(seed)
        self.spec = spec or SampleSpec()
        if num_samples is not None and num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if start_sample < 0:
            raise ValueError(f"start_sample must be >= 0, got {start_sample}")
        self.num_samples = num_samples
        self.start_sample = int(start_sample)
        if world_size is None:
            world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1  # fmt: skip
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")  # fmt: skip
        self.rank, self.world_size = int(rank), int(world_size)
        self.frames: list[np.ndarray | None] = [None] * len(names)
        if frames is not None:
            chosen = [frames.get(n) for n in names] if isinstance(frames, Mapping) else list(frames)
            if len(chosen) != len(names):
                raise ValueError(f"MixtureDataset: frames for {len(chosen)} datasets, expected {len(names)}")  # fmt: skip
            for position, (name, rows) in enumerate(zip(names, chosen, strict=True)):
                if rows is None:
                    continue
                rows = np.asarray(rows, dtype=np.int64)
                size = len(self.datasets[position])
                if rows.ndim != 1 or rows.size == 0:
                    raise ValueError(f"MixtureDataset: frames of {name!r} must be a non-empty list of rows")  # fmt: skip
                if rows.min() < 0 or rows.max() >= size:
                    raise ValueError(f"MixtureDataset: frames of {name!r} must be rows in [0, {size}), got {int(rows.min())}..{int(rows.max())}")  # fmt: skip
                self.frames[position] = rows
        self.normalizers = [self._normalizers(d) for d in self.datasets]
        self.drawn = np.zeros(len(names), dtype=np.int64)
        self._block_counts: list[np.ndarray] = []  # cumulative per-source counts before block b
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._block_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _normalizers(self, dataset: LeRobotDataset) -> dict[str, Normalizer]:
        stats = dataset.stats or {k: norm_stats_from_json(v) for k, v in dataset.compute_stats().items()}  # fmt: skip
        return {key: Normalizer(stats[key], self.spec.norm_mode) for key in (STATE_KEY, ACTION_KEY)}

    # -- the global stream ------------------------------------------------------------------

    def _block(self, block: int) -> np.ndarray:
        return self._block_data(block)[0]

    def _block_data(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """``(source of each position (4096,), how many earlier positions drew that source)``."""
        cached = self._block_cache.get(block)
        if cached is not None:
            return cached
        if len(self._block_cache) >= 4:
            self._block_cache.pop(next(iter(self._block_cache)))
        choices = self._make_block(block)
        ranks = np.empty_like(choices)
        for source in range(len(self.names)):
            here = choices == source
            ranks[here] = np.arange(int(here.sum()))
        self._block_cache[block] = (choices, ranks)
        return choices, ranks

    def _make_block(self, block: int) -> np.ndarray:
        # Note: each block holds the weights' exact share of every source (largest remainder,
        # ties broken at random), shuffled; i.i.d. draws would miss small weights by several
        # per cent over 10k samples, this keeps any window within ~1/4096 of the target.
        rng = np.random.default_rng([self.seed, block])
        exact = self.weights * _BLOCK
        counts = np.floor(exact).astype(np.int64)
        short = _BLOCK - int(counts.sum())
        if short:
            remainder = exact - counts + rng.random(len(counts)) * 1e-9
            counts[np.argsort(-remainder)[:short]] += 1
        return rng.permutation(np.repeat(np.arange(len(self.names)), counts))

    def _counts_before(self, block: int) -> np.ndarray:
        if not self._block_counts:
            self._block_counts.append(np.zeros(len(self.names), dtype=np.int64))
        while len(self._block_counts) <= block:
            b = len(self._block_counts) - 1
            counts = np.bincount(self._block(b), minlength=len(self.names))
            self._block_counts.append(self._block_counts[-1] + counts)
        return self._block_counts[block]

    def sources_of(self, samples: np.ndarray) -> np.ndarray:
        """Source position of each global sample number ``(K,)`` → ``(K,)``."""
        samples = np.asarray(samples, dtype=np.int64)
        out = np.empty_like(samples)
        blocks = samples // _BLOCK
        for block in np.unique(blocks):
            here = blocks == block
            out[here] = self._block(int(block))[samples[here] % _BLOCK]
        return out

    def locate(self, sample: int) -> tuple[int, int]:
        """``(source position, global frame in that dataset)`` of global sample ``sample``."""
        block, offset = divmod(int(sample), _BLOCK)
        choices, ranks = self._block_data(block)
        source = int(choices[offset])
        draw = int(self._counts_before(block)[source] + ranks[offset])
        rows = self.frames[source]
        size = len(self.datasets[source]) if rows is None else int(rows.size)
        epoch, position = divmod(draw, size)
        key = (source, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) > 2 * len(self.names):
                self._perm_cache.clear()
            perm = np.random.default_rng([self.seed, 1 + source, epoch]).permutation(size)
            self._perm_cache[key] = perm
        return source, int(perm[position] if rows is None else rows[perm[position]])

    def _my_samples(self) -> Iterator[int]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.sample_numbers(worker=worker, num_workers=workers)

    def sample_numbers(self, *, worker: int = 0, num_workers: int = 1) -> Iterator[int]:
        """Global sample numbers this rank (and the given worker) yields, in order.

        Rank ``r`` owns the samples ``g >= start_sample`` with ``g % world_size == r`` whatever
        the number of workers; worker ``w`` takes every ``num_workers``-th of them from the
        ``w``-th on. So the ranks' sets do not depend on how many workers each one runs.
        """
        if not 0 <= worker < num_workers:
            raise ValueError(f"worker must be in [0, num_workers), got worker={worker}, num_workers={num_workers}")  # fmt: skip
        first = self.start_sample + ((self.rank - self.start_sample) % self.world_size)
        g = first + worker * self.world_size
        stride = self.world_size * num_workers
        while self.num_samples is None or g < self.num_samples:
            yield g
            g += stride

    # -- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict]:
        self.drawn = np.zeros(len(self.names), dtype=np.int64)
        for g in self._my_samples():
            source, frame = self.locate(g)
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + g) if self.spec.augment else None  # fmt: skip
            sample = build_sample(self.datasets[source], frame, self.spec, self.normalizers[source], generator=generator)  # fmt: skip
            sample["source"] = self.names[source]
            sample["sample_index"] = g
            sample["dataset_frame"] = frame
            self.drawn[source] += 1
            yield sample

    def __len__(self) -> int:
        """Samples this rank yields (all its dataloader workers together)."""
        if self.num_samples is None:
            raise TypeError("an endless MixtureDataset has no length")
        first = self.start_sample + ((self.rank - self.start_sample) % self.world_size)
        return len(range(first, self.num_samples, self.world_size))

    def drawn_proportions(self) -> dict[str, float]:
        """Fractions of samples the last iteration actually drew per source, in this process.

        With dataloader workers the iteration runs in the workers; use :meth:`proportions` over
        the consumed sample range (or count ``batch["source"]``) in the main process instead.
        """
        total = max(int(self.drawn.sum()), 1)
        return {n: float(c) / total for n, c in zip(self.names, self.drawn, strict=True)}

    def proportions(self, count: int, *, start: int = 0) -> dict[str, float]:
        """Fractions per source over global samples ``start .. start+count-1`` (all ranks)."""
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        sources = self.sources_of(np.arange(start, start + count))
        counts = np.bincount(sources, minlength=len(self.names))
        return {n: float(c) / count for n, c in zip(self.names, counts, strict=True)}


def _open(dataset: LeRobotDataset | str | Path) -> LeRobotDataset:
    return dataset if isinstance(dataset, LeRobotDataset) else LeRobotDataset(dataset)
