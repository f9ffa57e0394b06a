"""Step 2: train the residual-VQ motion tokenizer (and fit the binned-action baseline's bins).

The motion tokenizer (``motion_rvq``: 40 codes per second of two-hand motion from one shared
512-code codebook, 2 hands × 10 steps × 2 residual levels) is trained on the motion windows of
the whole pre-training mixture: the synthetic source, the eight sources' fixtures and the
simulated human and robot demonstrations (the upcoming second resampled to 16 frames, every
other frame). It is evaluated on the windows of the downstream demonstrations, which it never
saw, beside per-value uniform binning (RT-2 / OpenVLA: 256 bins per value) fitted on the same
data at 6 frames per second — the representation of the binned-action VLA baseline.

    python examples/02_motion_tokenizer.py            # toy: about 2 minutes on 2 cores
"""

from __future__ import annotations

from pathlib import Path

from pipeline import Work, banner, dataset_names, parse_args, timed


def windows_of(paths: list[Path], window_len: int, stride: int):  # type: ignore[no-untyped-def]
    """The motion windows of several datasets, concatenated: from every ``stride``-th frame, the
    upcoming second resampled to ``window_len`` frames — the windows the annotation pass codes
    (an episode shorter than a second holds its last action, as there)."""
    import numpy as np
    import torch

    from metis_core.vla.data import motion_windows_for_episode
    from metis_datasets.lerobot_format import LeRobotDataset
    from metis_tokenizers.motion_generator import MotionWindows

    actions, masks = [], []
    for path in paths:
        dataset = LeRobotDataset(path, load_stats=False)
        for index in range(len(dataset.episodes)):
            episode = dataset.episode(index, with_images=False)
            frames = np.arange(0, episode.action.shape[0], stride)
            windows, presence = motion_windows_for_episode(episode, window_len=window_len, frames=frames)  # fmt: skip
            actions.append(windows)
            masks.append(presence.all(1))
    return MotionWindows(actions=torch.cat(actions), hand_mask=torch.cat(masks), window_seconds=1.0)  # fmt: skip


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("02", "train the motion tokenizer (motion_rvq) and fit the binning baseline")
    import torch

    from metis_core.interfaces import Tokenizer
    from metis_core.vla.configuration_metis import MetisConfig
    from metis_tokenizers.binning import Binning, BinningConfig
    from metis_tokenizers.evaluation import evaluate_tokenizer, plot_reconstruction
    from metis_tokenizers.motion_rvq import MotionRVQConfig
    from metis_tokenizers.training import TrainConfig, train_motion_rvq

    spec = cfg["tokenizers"]
    pretrain = [*dataset_names(work, "pretrain").values(), *dataset_names(work, "fixtures").values()]  # fmt: skip
    held_out = list(dataset_names(work, "downstream").values())
    motion_dir, binning_dir = work.tokenizers / "motion_rvq", work.tokenizers / "binning"
    window_len = 16
    train_windows = windows_of(pretrain, window_len, 2)
    test_windows = windows_of(held_out, window_len, 5)
    print(f"   {train_windows.actions.shape[0]} training windows from {len(pretrain)} datasets, {test_windows.actions.shape[0]} held-out windows")  # fmt: skip
    model_config = MotionRVQConfig(**(MetisConfig.tiny().motion_tokenizer_config if cfg["policy"]["preset"] == "tiny" else {}))  # fmt: skip
    torch.manual_seed(int(cfg["seed"]))
    with timed("train motion_rvq") as t:
        if not (motion_dir / "config.json").is_file():
            train_motion_rvq(train_windows, motion_dir, model_config=model_config, train_config=TrainConfig(steps=int(spec["motion"]["steps"]), batch_size=int(spec["motion"]["batch_size"]), learning_rate=float(spec["motion"]["learning_rate"]), log_every=50, checkpoint_every=0, threads=int(cfg.get("threads") or 0) or None, seed=int(cfg["seed"])), progress=True)  # fmt: skip
    motion = Tokenizer.from_pretrained(motion_dir)
    bins = spec["binning"]
    binned_len = int(bins["window_len"])
    if not (binning_dir / "config.json").is_file():
        fit = windows_of(pretrain, binned_len, 2)
        Binning(BinningConfig(window_len=binned_len, num_bins=int(bins["num_bins"]))).fit(fit.actions, fit.hand_mask).save_pretrained(binning_dir)  # fmt: skip
    binning = Tokenizer.from_pretrained(binning_dir)
    rvq_report = evaluate_tokenizer(motion, test_windows, timing_repeats=5)
    binned_test = windows_of(held_out, binned_len, 5)
    bin_report = evaluate_tokenizer(binning, binned_test, timing_repeats=5)
    assets = work.root / "report_assets" / "tokenizers"
    assets.mkdir(parents=True, exist_ok=True)
    index = int(torch.argmax((test_windows.actions[:, -1] - test_windows.actions[:, 0]).abs().sum(-1)))  # the window that moves most  # fmt: skip
    start = test_windows.actions[index : index + 1, 0]
    with torch.no_grad():
        codes = motion.encode(test_windows.actions[index : index + 1], test_windows.hand_mask[index : index + 1])  # fmt: skip
        reconstructed = motion.decode(codes, start=start)[0]
    plot = plot_reconstruction(test_windows.actions[index], reconstructed, assets / "motion_rvq_reconstruction.png", title=f"motion_rvq, held-out downstream window ({motion.tokens_per_window} codes)")  # fmt: skip
    rows = {}
    for name, report in (("motion_rvq", rvq_report), ("binning", bin_report)):
        data = report.to_dict()
        rows[name] = {k: data.get(k) for k in ("tokens_per_window", "wrist_position_mm", "wrist_rotation_deg", "fingertip_mm", "nmse", "windows")}  # fmt: skip
        print(f"   {name:<10} {rows[name]['tokens_per_window']} tokens/s: wrist {rows[name]['wrist_position_mm']:.2f} mm, {rows[name]['wrist_rotation_deg']:.2f} deg, fingertips {rows[name]['fingertip_mm']:.2f} mm")  # fmt: skip
    work.save_result("02_motion_tokenizer", {"motion_rvq": str(motion_dir), "binning": str(binning_dir), "held_out": rows, "training_windows": int(train_windows.actions.shape[0]), "plot": str(plot), "seconds": t["seconds"]})  # fmt: skip


if __name__ == "__main__":
    main()
