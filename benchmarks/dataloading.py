"""Data-loading throughput: tabular-only samples vs samples with one 224 px video frame.

Builds two synthetic LeRobot v3 datasets (tabular, and 240×320 video), then measures samples/s
through ``torch.utils.data.DataLoader`` over a :class:`MixtureDataset` with 0, 1 and 2 workers,
side by side. Prints a table and writes ``benchmarks/results/dataloading.json``.

Usage::

    python benchmarks/dataloading.py [--tabular-samples 40000] [--image-samples 600]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from metis_datasets import LeRobotDataset, MixtureDataset, SampleSpec
from metis_datasets.synthetic import make_dataset


def measure(root: Path, spec: SampleSpec, samples: int, workers: int, batch_size: int) -> float:
    """Samples per second for one configuration (dataset opening excluded, worker start included)."""
    mixture = MixtureDataset({"synthetic": LeRobotDataset(root)}, weights=[1.0], seed=0, spec=spec, num_samples=samples)  # fmt: skip
    loader = torch.utils.data.DataLoader(mixture, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += batch["action"].shape[0]
    elapsed = time.perf_counter() - start
    if seen != samples:
        raise RuntimeError(f"expected {samples} samples, got {seen}")
    return samples / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabular-samples", type=int, default=40_000)
    parser.add_argument("--image-samples", type=int, default=600)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataloading.json")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tabular = make_dataset(Path(tmp) / "tabular", episodes=40, frames=120, image_size=None)
        video = make_dataset(Path(tmp) / "video", episodes=12, frames=120, image_size=(240, 320))
        rows = []
        for workers in args.workers:
            tab = measure(tabular, SampleSpec(chunk_len=30), args.tabular_samples, workers, 256)
            img = measure(video, SampleSpec(chunk_len=30, image_size=224), args.image_samples, workers, 32)  # fmt: skip
            rows.append({"workers": workers, "tabular_samples_per_s": tab, "video_224_samples_per_s": img})  # fmt: skip
    print(f"{'workers':>8} {'tabular (samples/s)':>22} {'video 224px (samples/s)':>26}")
    for row in rows:
        print(f"{row['workers']:>8} {row['tabular_samples_per_s']:>22.0f} {row['video_224_samples_per_s']:>26.1f}")  # fmt: skip
    result = {
        "benchmark": "dataloading",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "tabular_samples": args.tabular_samples,
        "image_samples": args.image_samples,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
