"""Rate–distortion benchmark of the action tokenizers on held-out generated windows.

Trains ``motion_rvq`` at 1, 2 and 4 residual levels (20 / 40 / 80 tokens per window), fits
``dct_bpe`` at several scales (one chosen so that it averages about 40 tokens) and ``binning``,
and compares them side by side on the same held-out windows: tokens per window, fingertip,
wrist position and wrist rotation errors, normalised MSE, encode and decode time at batch 1 and
64, and codebook health. Prints a table and writes ``benchmarks/results/tokenizers.json`` and
``benchmarks/results/tokenizers_rate_distortion.png``.

Usage::

    python benchmarks/tokenizers.py --train-minutes 15          # the full run
    python benchmarks/tokenizers.py --quick                     # a ~1-minute smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

# This file is named like the Hugging Face `tokenizers` library that dct_bpe imports; drop the
# script's own directory from the import path so that `import tokenizers` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from metis_tokenizers import (  # noqa: E402
    DCTBPE,
    Binning,
    BinningConfig,
    DCTBPEConfig,
    MotionRVQConfig,
    generate_motion_windows,
)
from metis_tokenizers.evaluation import EvalReport, evaluate_tokenizer  # noqa: E402
from metis_tokenizers.training import TrainConfig, train_motion_rvq  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _dct_matched_scale(train, probe, target_tokens: float) -> float:
    """Bisect the DCT scale whose mean token count on ``probe`` is closest to ``target``."""
    low, high = 0.1, 10.0
    for _ in range(7):
        middle = (low * high) ** 0.5
        tokenizer = DCTBPE(DCTBPEConfig(scale=middle)).fit(train.actions, train.hand_mask)
        codes = tokenizer.encode(probe.actions, probe.hand_mask)
        mean = sum(map(len, codes)) / len(codes)
        if mean > target_tokens:
            high = middle
        else:
            low = middle
    return round((low * high) ** 0.5, 3)


def _row(label: str, report: EvalReport) -> str:
    tokens = f"{report.tokens_per_window:6.1f}" + ("" if report.fixed_length else "*")
    live = "/".join(f"{100 * level['live_fraction']:.0f}" for level in report.codebook) or "-"
    encode_decode_1 = report.encode_ms[1] + report.decode_ms[1]
    return (
        f"{label:<26}{tokens:>8}{report.fingertip_mm:>10.2f}{report.wrist_position_mm:>10.2f}"
        f"{report.wrist_rotation_deg:>9.2f}{report.nmse:>9.4f}{encode_decode_1:>10.2f}"
        f"{report.encode_ms[64]:>9.2f}{report.decode_ms[64]:>9.2f}  {live}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--train-minutes",
        type=float,
        default=15.0,
        help="training budget of the 40-token (2-level) motion_rvq",
    )
    parser.add_argument(
        "--other-minutes",
        type=float,
        default=None,
        help="budget of the 1- and 4-level models (default: --train-minutes)",
    )
    parser.add_argument("--train-windows", type=int, default=60000)
    parser.add_argument("--heldout-windows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: small batches gain little from 2, and lose badly on a busy machine)",
    )
    parser.add_argument(
        "--part-weights",
        default="2,2,1",
        help="loss weights of wrist position, wrist rotation and fingertips (TrainConfig."
        "part_weights); in 4-minute trials 2,2,1 against 1,1,1 moved the 40-token errors from "
        "22.7 mm / 3.2 deg / 4.2 mm (wrist, rotation, fingertips) to 12.9 mm / 1.9 deg / 4.6 mm",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quantize-dropout",
        action="store_true",
        help="train motion_rvq with quantize dropout (for coarse-to-fine decoding)",
    )
    parser.add_argument(
        "--compare-cosine",
        action="store_true",
        help="also train the 2-level model with a cosine-similarity codebook (the authors')",
    )
    parser.add_argument("--quick", action="store_true", help="1-minute smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()  # fmt: skip
    if args.quick:
        args.train_minutes, args.other_minutes = 0.3, 0.1
        args.train_windows, args.heldout_windows = 5000, 300
    part_weights = tuple(float(w) for w in args.part_weights.split(","))
    other_minutes = args.other_minutes if args.other_minutes is not None else args.train_minutes
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    began = time.monotonic()
    train = generate_motion_windows(args.train_windows, seed=args.seed, split="train")
    heldout = generate_motion_windows(args.heldout_windows, seed=args.seed, split="heldout")
    probe = generate_motion_windows(500, seed=args.seed, split="test")
    reports: dict[str, EvalReport] = {}
    runs = args.out / "tokenizer_runs"

    variants = [(2, "euclidean"), (1, "euclidean"), (4, "euclidean")]
    if args.compare_cosine:
        variants.append((2, "cosine"))
    for levels, metric in variants:
        minutes = args.train_minutes if levels == 2 else other_minutes
        print(f"training motion_rvq with {levels} level(s) for {minutes:g} min ...", flush=True)
        result = train_motion_rvq(
            train,
            runs / f"motion_rvq_{levels}_{metric}",
            model_config=MotionRVQConfig(
                num_levels=levels,
                codebook_metric=metric,
                quantize_dropout=args.quantize_dropout and levels > 1,
            ),
            train_config=TrainConfig(
                max_minutes=minutes,
                batch_size=args.batch_size,
                checkpoint_every=0,
                log_every=100,
                seed=args.seed,
                part_weights=part_weights,
                threads=args.threads,
            ),
            resume=False,
        )
        print(f"  {result.steps} steps in {result.seconds:.0f} s", flush=True)
        suffix = "" if metric == "euclidean" else ", cosine"
        label = f"motion_rvq L={levels} ({minutes:g} min{suffix})"
        reports[label] = evaluate_tokenizer(result.tokenizer, heldout)
        if levels > 1 and metric == "euclidean":
            # Coarse-to-fine: the same model decoded from its level-0 codes only.
            reports[f"  level 0 only of L={levels}"] = evaluate_tokenizer(
                result.tokenizer, heldout, levels=1
            )

    # BPE vocabularies are fitted on (at most) 20k training windows, which is plenty for them.
    fit_set = generate_motion_windows(min(args.train_windows, 20000), seed=args.seed, split="train")
    matched = _dct_matched_scale(fit_set, probe, 40.0)
    for scale in sorted({0.5, matched, 2.0, 5.0}):
        tokenizer = DCTBPE(DCTBPEConfig(scale=scale)).fit(fit_set.actions, fit_set.hand_mask)
        label = f"dct_bpe s={scale:g}" + (" (≈40)" if scale == matched else "")
        reports[label] = evaluate_tokenizer(tokenizer, heldout)
    binning = Binning(BinningConfig()).fit(train.actions, train.hand_mask)
    reports["binning 256"] = evaluate_tokenizer(binning, heldout)

    header = (
        f"{'tokenizer':<26}{'tokens':>8}{'tips mm':>10}{'wrist mm':>10}{'rot deg':>9}"
        f"{'nMSE':>9}{'e+d@1 ms':>10}{'enc@64':>9}{'dec@64':>9}  live % per level"
    )
    lines = [header, "-" * len(header)] + [_row(k, v) for k, v in reports.items()]
    lines.append("* mean of a variable token count")
    table = "\n".join(lines)
    print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {**{k: str(v) for k, v in vars(args).items()}, "dct_matched_scale": matched},
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "seconds": time.monotonic() - began,
        "results": {k: v.to_dict() for k, v in reports.items()},
    }
    (args.out / "tokenizers.json").write_text(json.dumps(payload, indent=2))
    (args.out / "tokenizers.txt").write_text(table + "\n")
    _plot(reports, args.out / "tokenizers_rate_distortion.png")
    print(f"wrote {args.out / 'tokenizers.json'} and tokenizers_rate_distortion.png")


def _plot(reports: dict[str, EvalReport], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metrics = [
        ("fingertip_mm", "fingertip error (mm)"),
        ("wrist_position_mm", "wrist position error (mm)"),
        ("wrist_rotation_deg", "wrist rotation error (deg)"),
        ("nmse", "normalised MSE"),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    families = {"motion_rvq": "o-", "dct_bpe": "s--", "binning": "^"}
    for axis, (key, title) in zip(axes, metrics, strict=True):
        for family, style in families.items():
            items = sorted(
                (r.tokens_per_window, getattr(r, key))
                for k, r in reports.items()
                if k.startswith(family)
            )
            if items:
                axis.plot(*zip(*items, strict=True), style, label=family)
        axis.set_xscale("log")
        axis.set_xticks([20, 40, 80, 160, 320, 720])
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_yscale("log")
        axis.set_xlabel("tokens per window")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
