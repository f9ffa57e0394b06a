"""The paper's Table 4 and Table 5 effects at toy scale on a CPU: does pre-training help
post-training, and do the motion-aware dynamics tokens help?

Data: the synthetic egocentric source (procedural two-hand pick-and-place, rendered frames,
four subtasks per episode). A *pre-training* set (many episodes) and a *downstream* set (a few
episodes of another seed) are written as LeRobot datasets; tiny ``motion_rvq`` and
``visual_dynamics_vq`` tokenizers are trained on the pre-training set and both sets are
annotated with ``metis annotate``'s code path.

Per seed, with the tiny recipes (``pretrain_tiny``, ``posttrain_tiny``: LoRA r = 32 + the
action head):

* **pretrained**: pre-train on the pre-training set, then post-train on the downstream set;
* **scratch**: post-train the same way from a new (random) policy — "no pre-training";
* **no dynamics**: both stages with ``model.dynamics_tokens=false`` (action loss only, the head
  reads placeholder positions) — "w/o motion-aware dynamics";
* **no dyn., scratch**: post-training a new policy without dynamics tokens (both ablations).

Every run is evaluated on the same held-out downstream episodes by inference
(``predict_action``, greedy): fingertip and wrist errors in millimetres and degrees; and with
teacher forcing (``teacher_forced_fingertip_mm``: the head given the true codes; ``action_l1``
in normalised units). The table prints mean ± standard deviation over seeds; the JSON keeps
every run.

    python benchmarks/training_effects.py --seeds 0 1 2 --out benchmarks/results/training_effects

Takes about 50 minutes on 2 cores shared with other jobs, with the defaults (results in
``benchmarks/results/training_effects.json`` and ``.txt``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# Note: benchmarks/tokenizers.py would shadow the `tokenizers` package transformers imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

METRICS = (
    "fingertip_mm",
    "wrist_mm",
    "wrist_deg",
    "teacher_forced_fingertip_mm",
    "action_l1",
    "code_accuracy",
    "subtask_accuracy",
)


def build_data(root: Path, *, pretrain_episodes: int, downstream_episodes: int, frames: int, size: int) -> dict[str, Path]:  # fmt: skip
    """Write, tokenize and annotate the two datasets (reused when present)."""
    import torch

    from metis_core.vla.annotate import annotate_dataset, load_annotation_tokenizers
    from metis_core.vla.configuration_metis import MetisConfig
    from metis_datasets.lerobot_format import write_episodes
    from metis_datasets.synthetic.source_synthetic import (
        D435_COLOR_INTRINSICS_640X480,
        SyntheticConfig,
        SyntheticSource,
    )
    from metis_tokenizers.data import load_windows
    from metis_tokenizers.motion_rvq import MotionRVQConfig
    from metis_tokenizers.training import TrainConfig, train_motion_rvq
    from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import train_on_dataset

    paths = {"pretrain": root / "pretrain", "downstream": root / "downstream"}
    intrinsics = D435_COLOR_INTRINSICS_640X480.copy()
    intrinsics[:2] *= size / 480
    for name, episodes, seed in (("pretrain", pretrain_episodes, 101), ("downstream", downstream_episodes, 202)):  # fmt: skip
        if not (paths[name] / "meta" / "stats.json").exists():
            source = SyntheticSource(SyntheticConfig(episodes=episodes, frames=frames, height=size, width=size, seed=seed))  # fmt: skip
            write_episodes(paths[name], source.iter_episodes(), fps=30.0, source="synthetic", embodiment="human_mano", camera_intrinsics=intrinsics, image_shape=(size, size), total=episodes, progress=False)  # fmt: skip
    tiny = MetisConfig.tiny()
    motion_dir, visual_dir = root / "motion", root / "visual"
    torch.manual_seed(0)
    if not (motion_dir / "config.json").exists():
        windows = load_windows(paths["pretrain"], window_len=16, stride=2)
        train_motion_rvq(windows, motion_dir, model_config=MotionRVQConfig(**tiny.motion_tokenizer_config), train_config=TrainConfig(steps=600, batch_size=128, learning_rate=3e-3, log_every=100, checkpoint_every=0, threads=1), progress=False)  # fmt: skip
    if not (visual_dir / "config.json").exists():
        fields = {k: v for k, v in tiny.visual_tokenizer_config.items() if k not in ("feature_dim", "num_patches", "motion")}  # fmt: skip
        train_on_dataset(paths["pretrain"], visual_dir, features="tiny", motion=motion_dir, config_fields=fields, train_config=TrainConfig(steps=300, batch_size=64, learning_rate=3e-3, log_every=100, checkpoint_every=0, threads=1), stride=2, progress=False)  # fmt: skip
    motion, visual, extractor = load_annotation_tokenizers(motion_dir, visual_dir)
    for path in paths.values():
        annotate_dataset(path, motion_tokenizer=motion, visual_tokenizer=visual, feature_extractor=extractor, progress=False)  # fmt: skip
    return {**paths, "motion": motion_dir, "visual": visual_dir}


def run(recipe: str, out: Path, items: list[str]) -> dict[str, float]:
    """One training run (resumed if it was interrupted); its final held-out metrics."""
    from metis_core.vla.training import Trainer, load_config

    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    start = time.perf_counter()
    result = Trainer(load_config(recipe, items), out).run()
    metrics = {**result.evaluation, "seconds": time.perf_counter() - start, **{f"train_{k}": v for k, v in result.final_metrics.items() if isinstance(v, float)}}  # fmt: skip
    done.write_text(json.dumps(metrics, indent=2))
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--posttrain-steps", type=int, default=150)
    parser.add_argument("--pretrain-episodes", type=int, default=32)
    parser.add_argument("--downstream-episodes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--size", type=int, default=96, help="Rendered image side (pixels).")
    parser.add_argument("--eval-samples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/training_effects"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = build_data(args.out / "data", pretrain_episodes=args.pretrain_episodes, downstream_episodes=args.downstream_episodes, frames=args.frames, size=args.size)  # fmt: skip
    common = ["run.progress=false", f"run.threads={args.threads}", "run.plot=true", f"run.eval_samples={args.eval_samples}"]  # fmt: skip
    tokens = [f"model.motion_tokenizer={data['motion']}", f"model.visual_tokenizer={data['visual']}"]  # fmt: skip
    downstream = [f"data.datasets.downstream={data['downstream']}", "data.heldout_fraction=0.3", f"run.max_steps={args.posttrain_steps}", "run.checkpoint_every=0"]  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {
        "pretrained": [],
        "scratch": [],
        "no dynamics": [],
        "no dyn., scratch": [],
    }
    for seed in args.seeds:
        runs = args.out / f"seed{seed}"
        pre = [*common, *tokens, f"run.seed={seed}", f"data.datasets.pretrain={data['pretrain']}", "data.heldout_fraction=0.05", f"run.max_steps={args.pretrain_steps}", "run.checkpoint_every=0"]  # fmt: skip
        run("pretrain_tiny", runs / "pretrain", pre)
        run("pretrain_tiny", runs / "pretrain_nodyn", [*pre, "model.dynamics_tokens=false"])
        post = [*common, *downstream, f"run.seed={seed}"]
        results["pretrained"].append(run("posttrain_tiny", runs / "post_pretrained", [*post, f"model.init_from={runs / 'pretrain'}"]))  # fmt: skip
        results["scratch"].append(run("posttrain_tiny", runs / "post_scratch", [*post, *tokens]))
        results["no dynamics"].append(run("posttrain_tiny", runs / "post_nodyn", [*post, f"model.init_from={runs / 'pretrain_nodyn'}", "model.dynamics_tokens=false"]))  # fmt: skip
        results["no dyn., scratch"].append(run("posttrain_tiny", runs / "post_scratch_nodyn", [*post, *tokens, "model.dynamics_tokens=false"]))  # fmt: skip
        print(f"seed {seed} done ({time.perf_counter() - started:.0f} s)", flush=True)
    widths = [max(22, len(m) + 2) for m in METRICS]
    header = f"{'variant':<18}" + "".join(f"{m:>{w}}" for m, w in zip(METRICS, widths, strict=True))
    lines = [header, "-" * len(header)]
    summary: dict[str, dict[str, list[float]]] = {}
    for name, rows in results.items():
        cells = []
        summary[name] = {}
        for metric, width in zip(METRICS, widths, strict=True):
            values = [r[metric] for r in rows if metric in r]
            summary[name][metric] = values
            cell = f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "-"
            cells.append(f"{cell:>{width}}")
        lines.append(f"{name:<18}" + "".join(cells))
    print("\n".join(lines))
    better_pre = [a["fingertip_mm"] < b["fingertip_mm"] for a, b in zip(results["pretrained"], results["scratch"], strict=True)]  # fmt: skip
    better_dyn = [a["fingertip_mm"] < b["fingertip_mm"] for a, b in zip(results["pretrained"], results["no dynamics"], strict=True)]  # fmt: skip
    better_pre_nodyn = [a["fingertip_mm"] < b["fingertip_mm"] for a, b in zip(results["no dynamics"], results["no dyn., scratch"], strict=True)]  # fmt: skip
    print(f"without dynamics tokens, pre-training beats scratch in {sum(better_pre_nodyn)}/{len(better_pre_nodyn)} seeds")  # fmt: skip
    print(f"pre-training beats scratch (fingertip mm) in {sum(better_pre)}/{len(better_pre)} seeds; dynamics beat no-dynamics in {sum(better_dyn)}/{len(better_dyn)} seeds")  # fmt: skip
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load": os.getloadavg(),
        },
        "seconds": time.perf_counter() - started,
        "runs": results,
        "summary": summary,
        "pretrained_beats_scratch": better_pre,
        "dynamics_beat_no_dynamics": better_dyn,
        "pretrained_beats_scratch_without_dynamics": better_pre_nodyn,
    }
    (args.out / "training_effects.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'training_effects.json'}")


if __name__ == "__main__":
    main()
