"""Step 3: train the visual-dynamics tokenizer (4 codes of 16 per step).

``visual_dynamics_vq`` learns what changes in the image over the next second: from the patch
features of frame ``t`` and the motion tokenizer's encoding of the upcoming hand motion, its 4
codes must let a decoder predict the patch features of frame ``t + k``. It is trained on the
frame pairs of the pre-training datasets with images (synthetic source, simulated human and
robot demonstrations) and evaluated on the downstream demonstrations against the "nothing
changes" prediction.

    python examples/03_visual_tokenizer.py            # toy: about 2 minutes on 2 cores
"""

from __future__ import annotations

from pipeline import Work, banner, dataset_names, parse_args, timed


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("03", "train the visual-dynamics tokenizer (visual_dynamics_vq)")
    import torch

    from metis_core.vla.configuration_metis import MetisConfig
    from metis_tokenizers.features import load_feature_extractor
    from metis_tokenizers.motion_rvq import MotionRVQ
    from metis_tokenizers.training import TrainConfig
    from metis_tokenizers.visual_dynamics_vq.data_visual_dynamics_vq import (
        FramePairs,
        load_frame_pairs,
    )
    from metis_tokenizers.visual_dynamics_vq.evaluation_visual_dynamics_vq import (
        evaluate_visual_dynamics,
        plot_visual_dynamics_report,
    )
    from metis_tokenizers.visual_dynamics_vq.pipeline_visual_dynamics_vq import (
        build_config,
        load_run,
    )
    from metis_tokenizers.visual_dynamics_vq.training_visual_dynamics_vq import (
        train_visual_dynamics_vq,
    )

    spec = cfg["tokenizers"]["visual"]
    motion = MotionRVQ.from_pretrained(work.result("02_motion_tokenizer")["motion_rvq"])
    out = work.tokenizers / "visual_dynamics_vq"
    tiny = cfg["policy"]["preset"] == "tiny"
    features = spec.get("features") or ("tiny" if tiny else None)
    if features is None:
        raise SystemExit("--config paper needs tokenizers.visual.features: a local DINOv2 directory (--set tokenizers.visual.features=/path/to/dinov2)")  # fmt: skip
    extractor = load_feature_extractor(features)
    fields = {k: v for k, v in MetisConfig.tiny().visual_tokenizer_config.items() if k not in ("feature_dim", "num_patches", "motion")} if tiny else {}  # fmt: skip
    config = build_config(extractor, motion, fields)
    window_len = int(motion.config.window_len)

    def pairs_of(paths, stride):  # type: ignore[no-untyped-def]
        parts = [load_frame_pairs(p, extractor, frame_gap=config.frame_gap, window_len=window_len, stride=stride, progress=False) for p in paths]  # fmt: skip
        frames = episodes = 0
        pair_frames, episode = [], []
        for part in parts:
            pair_frames.append(part.pair_frames + frames)
            episode.append(part.episode + episodes)
            frames += int(part.frame_features.shape[0])
            episodes += int(part.episode.max()) + 1 if len(part) else 0
        return FramePairs(frame_features=torch.cat([p.frame_features for p in parts]), pair_frames=torch.cat(pair_frames), actions=torch.cat([p.actions for p in parts]), hand_mask=torch.cat([p.hand_mask for p in parts]), episode=torch.cat(episode), start_frame=torch.cat([p.start_frame for p in parts]), frame_gap=config.frame_gap)  # fmt: skip

    with_images = [p for name, p in dataset_names(work, "pretrain").items()]
    with timed("patch features and frame pairs") as t_pairs:
        train_pairs = pairs_of(with_images, int(spec.get("stride", 1)))
        test_pairs = pairs_of(list(dataset_names(work, "downstream").values()), 5)
    print(f"   {len(train_pairs)} training pairs, {len(test_pairs)} held-out pairs (frame gap {config.frame_gap})")  # fmt: skip
    torch.manual_seed(int(cfg["seed"]))
    with timed("train visual_dynamics_vq") as t:
        if not (out / "config.json").is_file():
            train_visual_dynamics_vq(train_pairs, out, model_config=config, motion_tokenizer=motion, extractor=extractor, train_config=TrainConfig(steps=int(spec["steps"]), batch_size=int(spec["batch_size"]), learning_rate=float(spec["learning_rate"]), log_every=50, checkpoint_every=0, threads=int(cfg.get("threads") or 0) or None, seed=int(cfg["seed"])), progress=True)  # fmt: skip
    tokenizer, _ = load_run(out)
    report = evaluate_visual_dynamics(tokenizer, test_pairs)
    assets = work.root / "report_assets" / "tokenizers"
    assets.mkdir(parents=True, exist_ok=True)
    plot = plot_visual_dynamics_report(report, assets / "visual_dynamics_vq.png", title="visual_dynamics_vq on held-out downstream pairs")  # fmt: skip
    keys = ("pairs", "cosine_predicted", "cosine_baseline", "cosine_gap_closed", "mse_reduction", "codes_used", "usage", "perplexity")  # fmt: skip
    figures = {k: getattr(report, k) for k in keys}
    print("   " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))  # fmt: skip
    work.save_result("03_visual_tokenizer", {"visual_dynamics_vq": str(out), "held_out": figures, "plot": str(plot), "seconds": {"pairs": t_pairs["seconds"], "train": t["seconds"]}})  # fmt: skip


if __name__ == "__main__":
    main()
