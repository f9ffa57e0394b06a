"""Visual-dynamics tokens on synthetic egocentric data: predicted ``t+k`` features vs "no change".

The synthetic source (``metis_datasets.synthetic``) renders pick-and-place episodes in which
everything that changes in the image is caused by the hand motion: the hands move, and the object
moves only while it is grasped. This script

1. writes a training and a held-out LeRobot dataset (different seeds, so other objects, places,
   lighting and distractors);
2. trains a small ``motion_rvq`` on the training actions (its encoder supplies the motion
   features);
3. trains ``visual_dynamics_vq`` (4 tokens from 16 codes of dimension 128, as in the paper) on
   frame pairs ``(t, t+k)`` of the training set, with patch features of a tiny random-weight
   DINOv2 (no pretrained weights are downloaded);
4. evaluates on the held-out pairs (and on the training pairs): cosine similarity of predicted
   vs true ``t+k`` patch features against the baseline "frame ``t+k`` looks like frame ``t``",
   on all patches and on the quarter that change most; codes used and perplexity;
5. optionally (``--ablation``) trains the same tokenizer without motion features.

Prints a table and writes ``benchmarks/results/visual_dynamics.json`` and
``benchmarks/results/visual_dynamics.png``. Runs on one CPU thread.

Usage::

    python benchmarks/visual_dynamics.py                 # the full run (about 8 minutes)
    python benchmarks/visual_dynamics.py --quick         # a ~1-minute smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/tokenizers.py is named like the Hugging Face `tokenizers` library; drop this
# directory from the import path so that `import tokenizers` finds the library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from metis_tokenizers.data import load_windows  # noqa: E402
from metis_tokenizers.features import TINY_DINOV2_CONFIG, Dinov2FeatureExtractor  # noqa: E402
from metis_tokenizers.motion_rvq import MotionRVQ, MotionRVQConfig  # noqa: E402
from metis_tokenizers.training import TrainConfig, train_motion_rvq  # noqa: E402
from metis_tokenizers.visual_dynamics_vq.evaluation_visual_dynamics_vq import (  # noqa: E402
    VisualDynamicsReport,
    evaluate_visual_dynamics,
    plot_visual_dynamics_report,
)
from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import (  # noqa: E402
    evaluate_on_dataset,
    train_on_dataset,
)

RESULTS = Path(__file__).resolve().parent / "results"
MOTION = {
    "hidden_dim": 64,
    "latent_dim": 64,
    "codebook_size": 128,
    "attention_layers": 1,
    "num_conv_blocks": 1,
}
VISUAL = {"hidden_dim": 64, "num_heads": 4, "encoder_blocks": 2, "decoder_layers": 2}


def _row(label: str, report: VisualDynamicsReport) -> str:
    return (
        f"{label:<38}{report.pairs:>6}{report.cosine_predicted:>10.4f}{report.cosine_baseline:>10.4f}"
        f"{report.cosine_margin:>+9.4f}{100 * report.cosine_gap_closed:>7.0f} %"
        f"{report.cosine_predicted_changed:>10.4f}{report.cosine_baseline_changed:>10.4f}"
        f"{report.codes_used:>6}{report.perplexity:>7.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--train-episodes", type=int, default=48)
    parser.add_argument("--heldout-episodes", type=int, default=12)
    parser.add_argument("--frames", type=int, default=64, help="frames per episode")
    parser.add_argument("--frame-gap", type=int, default=16, help="k (frames between t and t+k)")
    parser.add_argument("--steps", type=int, default=1200, help="visual_dynamics_vq steps")
    parser.add_argument("--minutes", type=float, default=5.5, help="training time limit")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ablation", action="store_true", help="also train without motion")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--work", default=None, help="keep datasets and runs here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "visual_dynamics.json"))
    args = parser.parse_args()
    if args.quick:
        args.train_episodes, args.heldout_episodes, args.steps = 8, 3, 100
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    from metis_datasets.synthetic import make_dataset

    work = Path(args.work or tempfile.mkdtemp(prefix="metis-visual-dynamics-"))
    began = time.monotonic()
    size = (128, 128)
    train_dir = make_dataset(work / "train", episodes=args.train_episodes, frames=args.frames, seed=args.seed, image_size=size)  # fmt: skip
    heldout_dir = make_dataset(work / "heldout", episodes=args.heldout_episodes, frames=args.frames, seed=args.seed + 1000, image_size=size)  # fmt: skip
    print(f"datasets: {args.train_episodes} + {args.heldout_episodes} episodes of {args.frames} frames in {work}")  # fmt: skip

    windows = load_windows(train_dir, window_len=16, stride=2)
    motion_began = time.monotonic()
    motion = train_motion_rvq(
        windows,
        work / "motion_rvq",
        model_config=MotionRVQConfig(**MOTION),
        train_config=TrainConfig(
            steps=60 if args.quick else 400, batch_size=128, learning_rate=3e-3, checkpoint_every=0
        ),
        resume=False,
        progress=False,
    ).tokenizer
    motion_seconds = time.monotonic() - motion_began
    motion = MotionRVQ.from_pretrained(work / "motion_rvq")
    print(f"motion_rvq: {len(windows.actions)} windows, {motion_seconds:.0f} s")

    extractor = Dinov2FeatureExtractor.from_config(TINY_DINOV2_CONFIG, batch_size=64)
    train_config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=1e-3,
        warmup_steps=50,
        checkpoint_every=0,
        log_every=50,
        seed=args.seed,
        max_minutes=args.minutes,
    )
    variants = [("visual_dynamics_vq", motion, {})]
    if args.ablation:
        variants.append(("  without motion", None, {"motion": None}))
    rows, results = [], {}
    for label, motion_tokenizer, extra in variants:
        run = work / label.strip().replace(" ", "_")
        result, train_pairs = train_on_dataset(
            train_dir,
            run,
            features=extractor,
            motion=motion_tokenizer,
            config_fields={"frame_gap": args.frame_gap, **VISUAL, **extra},
            train_config=train_config,
            stride=2,
            resume=False,
            progress=True,
        )
        heldout = evaluate_on_dataset(run, heldout_dir, stride=2, progress=False)
        seen = evaluate_visual_dynamics(result.tokenizer, train_pairs)
        rows.append(_row(f"{label} (held-out)", heldout))
        rows.append(_row(f"{label} (training pairs)", seen))
        results[label.strip()] = {
            "heldout": heldout.to_dict(),
            "train": seen.to_dict(),
            "train_pairs": len(train_pairs),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "final_loss": result.final_loss,
            "final_baseline_loss": result.final_baseline_loss,
            "config": result.tokenizer.config.to_dict(),
        }
        if label == "visual_dynamics_vq":
            RESULTS.mkdir(parents=True, exist_ok=True)
            plot_visual_dynamics_report(
                heldout,
                RESULTS / "visual_dynamics.png",
                title=f"visual_dynamics_vq on held-out synthetic pairs (k = {args.frame_gap})",
            )

    header = (
        f"{'':<38}{'pairs':>6}{'cos pred':>10}{'cos base':>10}{'margin':>9}{'closed':>9}"
        f"{'chg pred':>10}{'chg base':>10}{'codes':>6}{'ppl':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    print("\n".join(rows))
    print(
        "\ncos pred / cos base: mean cosine of predicted / 'no change' (frame t) patch features to "
        "the true t+k features;\nclosed: share of the baseline's gap to 1 made up; chg: on the "
        "25 % of patches that change most;\ncodes: distinct codes of 16 used; ppl: perplexity."
    )
    main_result = results["visual_dynamics_vq"]
    print(
        f"training: {main_result['steps']} steps in {main_result['train_seconds']:.0f} s on "
        f"{main_result['train_pairs']} pairs; total {time.monotonic() - began:.0f} s"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "visual_dynamics",
        "quick": args.quick,
        "settings": {
            "train_episodes": args.train_episodes,
            "heldout_episodes": args.heldout_episodes,
            "frames": args.frames,
            "image_size": list(size),
            "frame_gap": args.frame_gap,
            "pair_stride": 2,
            "feature_extractor": {"type": "dinov2", "random_weights": True, **TINY_DINOV2_CONFIG},
            "motion_rvq": MOTION,
            "motion_rvq_seconds": round(motion_seconds, 1),
            "train_config": {
                "steps": args.steps,
                "batch_size": args.batch_size,
                "learning_rate": 1e-3,
                "max_minutes": args.minutes,
            },
            "threads": 1,
            "machine": platform.platform(),
            "torch": torch.__version__,
        },
        "results": results,
        "total_seconds": round(time.monotonic() - began, 1),
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
