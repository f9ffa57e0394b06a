"""Data-loading throughput: tabular-only samples vs samples with one 224 px video frame.

Builds two synthetic LeRobot v3 datasets — tabular only, and with 480×640 H.264 video (the paper's
head-camera size; every sample decodes its frame from the MP4 and centre-crops 480×480 → 224×224)
— then measures samples/s through ``torch.utils.data.DataLoader`` over a :class:`MixtureDataset`
with 0, 1 and 2 workers, side by side. Samples are drawn in the mixture's shuffled order, so frames
are read at random places in the videos (a seek and a decode per sample); the decoder counters of
the 0-worker run are reported to show it. Prints a table and writes
``benchmarks/results/dataloading.json``.

Throughput is the steady state (from the first batch on: worker start-up is reported separately).
On a 2-core machine the main process and the workers share the cores, so more workers cannot
scale far; on machines shared with other jobs the figures vary by some tens of per cent.

Usage::

    python benchmarks/dataloading.py [--tabular-samples 40000] [--image-samples 1200]
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


def measure(root: Path, spec: SampleSpec, samples: int, workers: int, batch_size: int) -> dict:
    """Steady-state samples/s and start-up time for one configuration.

    The dataset is opened before the clock starts; with 0 workers the decoder counters (frames
    decoded, seeks, cache hits) of the run are returned too.
    """
    dataset = LeRobotDataset(root)
    mixture = MixtureDataset({"synthetic": dataset}, weights=[1.0], seed=0, spec=spec, num_samples=samples)  # fmt: skip
    loader = torch.utils.data.DataLoader(mixture, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    first_at, first_size, seen = None, 0, 0
    for batch in loader:
        size = batch["action"].shape[0]
        seen += size
        if first_at is None:
            first_at, first_size = time.perf_counter(), size
    end = time.perf_counter()
    if seen != samples:
        raise RuntimeError(f"expected {samples} samples, got {seen}")
    result = {
        "samples_per_s": (samples - first_size) / (end - first_at),
        "startup_s": first_at - start,
    }
    if workers == 0 and spec.image_size is not None:
        counters = dataset.video_decode_stats()
        result["decoded_frames_per_sample"] = counters["decoded"] / samples
        result["seeks_per_sample"] = counters["seeks"] / samples
        result["cache_hits_per_sample"] = counters["cache_hits"] / samples
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabular-samples", type=int, default=40_000)
    parser.add_argument("--image-samples", type=int, default=1_200)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dataloading.json")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        tabular = make_dataset(Path(tmp) / "tabular", episodes=40, frames=120, image_size=None)
        video = make_dataset(Path(tmp) / "video", episodes=12, frames=120, image_size=(480, 640))
        video_bytes = sum(p.stat().st_size for p in (video / "videos").rglob("*.mp4"))
        rows = []
        for workers in args.workers:
            tab = measure(tabular, SampleSpec(chunk_len=30), args.tabular_samples, workers, 256)
            img = measure(video, SampleSpec(chunk_len=30, image_size=224), args.image_samples, workers, 32)  # fmt: skip
            row = {
                "workers": workers,
                "tabular_samples_per_s": tab["samples_per_s"],
                "video_224_samples_per_s": img["samples_per_s"],
                "tabular_startup_s": tab["startup_s"],
                "video_startup_s": img["startup_s"],
            }
            row.update({k: v for k, v in img.items() if k.endswith("_per_sample")})
            rows.append(row)
    print(f"{'workers':>8} {'tabular (samples/s)':>22} {'video 224px (samples/s)':>26} {'start-up s (tab/video)':>24}")  # fmt: skip
    for row in rows:
        print(f"{row['workers']:>8} {row['tabular_samples_per_s']:>22.0f} {row['video_224_samples_per_s']:>26.1f} {row['tabular_startup_s']:>11.2f} / {row['video_startup_s']:<10.2f}")  # fmt: skip
    decode = rows[0] if "decoded_frames_per_sample" in rows[0] else None
    if decode is not None:
        print(
            f"video decoding (0 workers): {decode['decoded_frames_per_sample']:.2f} frames decoded, "
            f"{decode['seeks_per_sample']:.2f} seeks, {decode['cache_hits_per_sample']:.3f} cache "
            "hits per sample (480x640 H.264, GOP 2)"
        )
    result = {
        "benchmark": "dataloading",
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "tabular_samples": args.tabular_samples,
        "image_samples": args.image_samples,
        "video": {
            "stored_size": [480, 640],
            "codec": "h264",
            "gop": 2,
            "episodes": 12,
            "frames_per_episode": 120,
            "mp4_bytes": video_bytes,
        },
        "note": "steady-state samples/s from the first batch on; 2 cores shared with other jobs",
        "load_average_at_start": load_at_start,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
