"""Write the reproduction report: ``WORK/report/README.md`` with its tables and plots.

Every number of ours comes from the step results under ``WORK/results`` (written by
``examples/01_*.py`` … ``12_*.py``); the paper's numbers are quoted from METIS (arXiv
2511.17366) and labelled as such: a real Unitree G1 with Inspire hands, a 7B policy, 100
demonstrations and 20 trials per task — not comparable in scale with a toy run in simulation.

    python examples/report.py                         # after the steps (run_all.py calls it)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pipeline import Work, banner, parse_args

# The paper's numbers (success rates, %), quoted with their table or figure.
PAPER_TABLE2 = {  # real robot, 20 trials
    "METIS": {"pick_place": 85.0, "close_laptop": 95.0, "open_drawer": 90.0},
    "ACT (chunked-action regression)": {
        "pick_place": 35.0,
        "close_laptop": 65.0,
        "open_drawer": 95.0,
    },
    "OpenVLA-OFT": {"pick_place": 50.0, "close_laptop": 80.0, "open_drawer": 10.0},
}
PAPER_TABLE4 = {"METIS-NoPretrain": (60.0, 35.0), "METIS-HumanPretrain": (70.0, 60.0), "METIS-FullPretrain": (85.0, 75.0)}  # fmt: skip
PAPER_TABLE5 = {"METIS w/o motion-aware dynamics": (30.0, 0.0), "METIS w/ motion-aware dynamics": (85.0, 75.0)}  # fmt: skip
PAPER_TABLE3 = {"background": 70.0, "lighting": 65.0, "object": 70.0, "clutter": 70.0}
PAPER_LABEL = "paper: real robot (G1 + Inspire), 7B policy, 100 demos/task, 20 trials"
OURS_LABEL = "ours: simulation (metis-sim), toy-scale policy, this run"
TASK_NAMES = {"pick_place": "Pick and Place", "close_laptop": "Close Laptop", "open_drawer": "Open Drawer", "bimanual_drawer": "Bimanual Drawer"}  # fmt: skip


def pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def cell(result: dict[str, Any] | None) -> str:
    """``SR [low, high] · PSR (n)``."""
    if not result:
        return "–"
    low, high = result["success_interval"]
    return f"{pct(result['success_rate'])} [{pct(low)}–{pct(high)}] · {pct(result['progress_rate'])} (n={result['episodes']})"  # fmt: skip


def pooled(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Success and progress pooled over tasks, with the Wilson interval of the pooled rate."""
    from metis_sim.evaluate import wilson_interval

    successes = sum(r["successes"] for r in results.values())
    episodes = sum(r["episodes"] for r in results.values())
    progress = sum(r["progress_rate"] * r["episodes"] for r in results.values()) / max(episodes, 1)
    return {"success_rate": successes / max(episodes, 1), "success_interval": list(wilson_interval(successes, episodes)) if episodes else [0, 1], "progress_rate": progress, "successes": successes, "episodes": episodes}  # fmt: skip


def verdict(better: dict[str, Any], worse: dict[str, Any]) -> str:
    """How ``better`` (the paper's winner) compares with ``worse`` in our run."""
    d_sr = better["success_rate"] - worse["success_rate"]
    d_psr = better["progress_rate"] - worse["progress_rate"]
    separated = better["success_interval"][0] > worse["success_interval"][1]
    if separated:
        return f"**reproduced** (success {d_sr:+.0%}, intervals separate; progress {d_psr:+.0%})"
    if d_sr > 0 or (d_sr == 0 and d_psr > 0):
        return f"same direction, not significant (success {d_sr:+.0%}, progress {d_psr:+.0%}; 95 % intervals overlap)"  # fmt: skip
    if d_sr == 0 and d_psr == 0:
        return "no difference (success and progress equal)"
    if worse["success_interval"][0] > better["success_interval"][1]:
        return f"**not reproduced: the opposite** (success {d_sr:+.0%}, intervals separate; progress {d_psr:+.0%})"  # fmt: skip
    return f"opposite direction, not significant (success {d_sr:+.0%}, progress {d_psr:+.0%}; 95 % intervals overlap)"  # fmt: skip


def rollout_strip(video: str, out: Path, frames: int = 6) -> Path | None:
    """Six evenly spaced frames of a rollout video side by side (PNG)."""
    import av
    import numpy as np
    from PIL import Image

    if not video or not Path(video).is_file():
        return None
    with av.open(video) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not images:
        return None
    index = np.linspace(0, len(images) - 1, frames).astype(int)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([images[i] for i in index], 1)).save(out)
    return out


def plot_training_curves(work: Work, runs: list[str], out: Path) -> Path | None:
    """Next-token and action losses of the post-training runs, one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    drawn = False
    for run in runs:
        metrics = work.runs / run / "metrics.jsonl"
        if not metrics.is_file():
            continue
        rows = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]  # fmt: skip
        rows = [
            r for r in rows if "token_loss" in r and "action_loss" in r and r.get("kind") != "eval"
        ]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["token_loss"] for r in rows], label=run)
        axes[1].plot(steps, [r["action_loss"] for r in rows], label=run)
        drawn = True
    if not drawn:
        plt.close(figure)
        return None
    axes[0].set_title("next-token loss (reasoning + dynamics codes)")
    axes[1].set_title("action L1 (normalised)")
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_bars(groups: dict[str, dict[str, dict[str, Any]]], tasks: list[str], out: Path, title: str) -> Path:  # fmt: skip
    """Success rates with 95 % intervals, grouped by task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(2.6 + 2.2 * len(tasks), 3.6))
    width = 0.8 / max(len(groups), 1)
    for i, (name, results) in enumerate(groups.items()):
        x = np.arange(len(tasks)) + i * width
        rates = [results.get(t, {}).get("success_rate", 0.0) for t in tasks]
        low = [r - results.get(t, {}).get("success_interval", [0, 0])[0] for r, t in zip(rates, tasks, strict=True)]  # fmt: skip
        high = [results.get(t, {}).get("success_interval", [0, 0])[1] - r for r, t in zip(rates, tasks, strict=True)]  # fmt: skip
        axis.bar(x, rates, width, yerr=[low, high], capsize=3, label=name)
        progress = [results.get(t, {}).get("progress_rate", 0.0) for t in tasks]
        axis.scatter(x, progress, marker="_", s=200, color="black", zorder=3)
    axis.set_xticks(np.arange(len(tasks)) + width * (len(groups) - 1) / 2, [TASK_NAMES.get(t, t) for t in tasks])  # fmt: skip
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("success rate (bars, 95 % CI); progress (—)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def plot_sample_efficiency(results: dict[str, Any], tasks: list[str], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted(float(f) for f in results)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for task in tasks:
        rows = [results[str(f)]["tasks"][task] for f in fractions]
        sr = [r["success_rate"] for r in rows]
        err = [[r["success_rate"] - r["success_interval"][0] for r in rows], [r["success_interval"][1] - r["success_rate"] for r in rows]]  # fmt: skip
        axes[0].errorbar([100 * f for f in fractions], sr, yerr=err, marker="o", capsize=3, label=TASK_NAMES.get(task, task))  # fmt: skip
        axes[1].plot([100 * f for f in fractions], [r["progress_rate"] for r in rows], marker="o", label=TASK_NAMES.get(task, task))  # fmt: skip
    axes[0].set_title("success rate (95 % CI)")
    axes[1].set_title("progress rate")
    for axis in axes:
        axis.set_xlabel("% of the downstream demonstrations")
        axis.set_ylim(-0.02, 1.05)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("Sample efficiency (ours: simulation, toy scale)", fontsize=10)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def build(work: Work, cfg: dict[str, Any]) -> Path:
    report = work.root / "report"
    images = report / "images"
    images.mkdir(parents=True, exist_ok=True)
    tasks = list(cfg["downstream"]["tasks"])
    lines: list[str] = []
    add = lines.append
    add(f"# METIS reproduction report — config `{cfg['name']}`\n")
    add(f"Two kinds of numbers appear side by side and are **not comparable in scale**: *{PAPER_LABEL}*; and *{OURS_LABEL}*. Every number labelled *ours* was computed by this run from the results in `{work.root / 'results'}`. Success rates carry their 95 % Wilson interval; progress is the mean fraction of the task's four stages reached (the paper's PSR). Cells read `success [95 % CI] · progress (n = episodes)`.\n")  # fmt: skip
    total = 0.0
    machines = set()
    steps = {}
    for path in sorted(p for p in (work.root / "results").glob("*.json") if p.stem != "timings"):
        data = json.loads(path.read_text(encoding="utf-8"))
        steps[path.stem] = data
        machine = data.get("machine", {})
        machines.add(
            f"{machine.get('cpus')} CPUs, GPU {machine.get('gpu')}, torch {machine.get('torch')}"
        )
    timing = work.root / "results" / "timings.json"
    if timing.is_file():
        times = json.loads(timing.read_text(encoding="utf-8"))
        total = sum(times.values())
        add("Measured on: " + "; ".join(sorted(machines)) + f". Wall time of the steps: {total / 60:.1f} min (" + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ").\n")  # fmt: skip

    # -- data
    built = steps.get("01_build_mixture")
    if built:
        add("## 1. Data: the multi-source mixture (Table 1 analogue)\n")
        add("| kind | dataset | trajectories | frames | human % | robot % | subtasks |\n|---|---|---|---|---|---|---|")  # fmt: skip
        for kind, rows in built["tables"].items():
            for row in rows:
                add(f"| {kind} | {row['dataset']} | {row['trajectories']} | {row['frames']} | {row['human_pct']:.0f} | {row['robot_pct']:.0f} | {'yes' if row['subtask'] else 'no'} |")  # fmt: skip
        add("\nThe same contract, different looks — the kinematic human hand and the Inspire hand on a pre-training task, then a downstream demonstration (frames with the recorded fingertips drawn on them):\n")  # fmt: skip
        for name, strip in built["strips"].items():
            if name.startswith(("human_", "inspire_")) or name in tasks:
                target = images / f"data_{name}.png"
                shutil.copyfile(strip, target)
                add(f"![{name}](images/{target.name})\n")
    # -- tokenizers
    motion = steps.get("02_motion_tokenizer")
    visual = steps.get("03_visual_tokenizer")
    if motion:
        add("## 2. Motion tokenizer: reconstructions on held-out downstream windows\n")
        add("| tokenizer | tokens per second of motion | wrist mm | wrist deg | fingertip mm | NMSE |\n|---|---|---|---|---|---|")  # fmt: skip
        for name, row in motion["held_out"].items():
            add(f"| {name} | {row['tokens_per_window']:.0f} | {row['wrist_position_mm']:.2f} | {row['wrist_rotation_deg']:.2f} | {row['fingertip_mm']:.2f} | {row['nmse']:.4f} |")  # fmt: skip
        shutil.copyfile(motion["plot"], images / "motion_rvq_reconstruction.png")
        add(f"\nTrained on {motion['training_windows']} windows of the pre-training mixture. The paper's tokenizer: 40 tokens per step from a 512-code codebook (ours: the same layout, tiny width).\n\n![motion_rvq reconstruction](images/motion_rvq_reconstruction.png)\n")  # fmt: skip
    if visual:
        v = visual["held_out"]
        add("## 3. Visual-dynamics tokenizer\n")
        add(f"On {v['pairs']} held-out frame pairs: predicted next-second features have cosine {v['cosine_predicted']:.3f} with the truth against {v['cosine_baseline']:.3f} for \"nothing changes\" ({100 * v['cosine_gap_closed']:.0f} % of the gap closed; MSE {100 * v['mse_reduction']:.0f} % lower); {v['codes_used']} of 16 codes used, perplexity {v['perplexity']:.1f}.\n")  # fmt: skip
        shutil.copyfile(visual["plot"], images / "visual_dynamics_vq.png")
        add("![visual_dynamics_vq](images/visual_dynamics_vq.png)\n")
    # -- training curves
    curves = plot_training_curves(work, ["pre_metis", "post_metis", "post_nodyn", "post_binned", "post_scratch"], images / "training_curves.png")  # fmt: skip
    if curves:
        add("## 4. Training curves\n\n![training curves](images/training_curves.png)\n")
        add("| run | steps | seconds | held-out fingertip mm | wrist mm | code accuracy |\n|---|---|---|---|---|---|")  # fmt: skip
        for step in ("05_pretrain", "06_posttrain", "08_ablations", "09_sample_efficiency", "11_cross_embodiment"):  # fmt: skip
            for name, run in steps.get(step, {}).get("runs", {}).items():
                e = run.get("evaluation", {})
                add(f"| {name} | {run.get('final_metrics', {}).get('step', '')} | {run['seconds']:.0f} | {e.get('fingertip_mm', float('nan')):.1f} | {e.get('wrist_mm', float('nan')):.1f} | {e.get('code_accuracy', float('nan')):.2f} |")  # fmt: skip
        add("")
    effects: list[tuple[str, str]] = []
    # -- main results
    main = steps.get("07_evaluate")
    if main:
        add("## 5. Closed-loop success: METIS and the baselines (Table 2 analogue)\n")
        names = main["policies"]
        add("| policy | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " | pooled |\n|---|" + "---|" * (len(tasks) + 1))  # fmt: skip
        for run, label in names.items():
            add(f"| {label} (ours) | " + " | ".join(cell(main["results"][run].get(t)) for t in tasks) + f" | {cell(pooled(main['results'][run]))} |")  # fmt: skip
        for label, row in PAPER_TABLE2.items():
            add(f"| {label} (paper) | " + " | ".join(f"{row[t]:.0f}%" if t in row else "–" for t in tasks) + " | |")  # fmt: skip
        plot_bars({label: main["results"][run] for run, label in names.items()}, tasks, images / "main_results.png", "Closed-loop success, same seeds (ours: simulation, toy scale)")  # fmt: skip
        add("\n![main results](images/main_results.png)\n")
        add("Rollouts of METIS (six frames of the first evaluation episode per task):\n")
        for task in tasks:
            videos = main["results"]["post_metis"][task]["videos"]
            strip = rollout_strip(videos[0] if videos else "", images / f"rollout_{task}.png")
            if strip:
                outcome = main["results"]["post_metis"][task].get("per_seed_success", [None])[0]
                add(f"**{TASK_NAMES.get(task, task)}** (seed {main['results']['post_metis'][task]['seeds'][0]}, {'success' if outcome else 'failure'}): ![rollout {task}](images/{strip.name})\n")  # fmt: skip
    ablations = steps.get("08_ablations")
    if ablations:
        res = ablations["results"]
        add("## 6. Ablations\n")
        add("### Table 4: multi-source pre-training\n")
        add("| variant | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " | pooled | paper: Pick and Place | paper: Drawer + Bread |\n|---|" + "---|" * (len(tasks) + 3))  # fmt: skip
        for run, label in ablations["tables"]["table4"].items():
            paper = PAPER_TABLE4[label]
            add(f"| {label} | " + " | ".join(cell(res[run].get(t)) for t in tasks) + f" | {cell(pooled(res[run]))} | {paper[0]:.0f}% | {paper[1]:.0f}% |")  # fmt: skip
        add("\n### Table 5: motion-aware dynamics\n")
        add("| variant | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " | pooled | paper: Pick and Place | paper: Drawer + Bread |\n|---|" + "---|" * (len(tasks) + 3))  # fmt: skip
        for run, label in ablations["tables"]["table5"].items():
            paper = PAPER_TABLE5[label]
            add(f"| {label} | " + " | ".join(cell(res[run].get(t)) for t in tasks) + f" | {cell(pooled(res[run]))} | {paper[0]:.0f}% | {paper[1]:.0f}% |")  # fmt: skip
        add("")
        effects.append(("pre-training helps (FullPretrain vs NoPretrain)", verdict(pooled(res["post_metis"]), pooled(res["post_scratch"]))))  # fmt: skip
        effects.append(("multi-source beats human-only pre-training", verdict(pooled(res["post_metis"]), pooled(res["post_human"]))))  # fmt: skip
        effects.append(("motion-aware dynamics help (w/ vs w/o)", verdict(pooled(res["post_metis"]), pooled(res["post_nodyn"]))))  # fmt: skip
    if main:
        effects.append(("METIS beats the binned-action VLA", verdict(pooled(main["results"]["post_metis"]), pooled(main["results"]["post_binned"]))))  # fmt: skip
    efficiency = steps.get("09_sample_efficiency")
    if efficiency:
        add("## 7. Sample efficiency (Fig. 6 analogue)\n")
        res = efficiency["results"]
        add("| demonstrations | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " |\n|---|" + "---|" * len(tasks))  # fmt: skip
        for fraction in sorted(res, key=float):
            add(f"| {100 * float(fraction):.0f} % | " + " | ".join(cell(res[fraction]["tasks"].get(t)) for t in tasks) + " |")  # fmt: skip
        plot_sample_efficiency(res, tasks, images / "sample_efficiency.png")
        add("\nPaper (real robot): \"when fine-tuned with only 10 % of the data, METIS still achieves a 50 % success rate on the Pick and Place task\" (85 % with all of it).\n\n![sample efficiency](images/sample_efficiency.png)\n")  # fmt: skip
        smallest, full = min(res, key=float), max(res, key=float)
        effects.append((f"more demonstrations help ({100 * float(full):.0f} % vs {100 * float(smallest):.0f} %)", verdict(pooled(res[full]["tasks"]), pooled(res[smallest]["tasks"]))))  # fmt: skip
    ood = steps.get("10_ood")
    if ood:
        res = ood["results"]
        add("## 8. Out-of-distribution scenes (Table 3 analogue)\n")
        add("| scene | " + " | ".join(TASK_NAMES.get(t, t) for t in tasks) + " | pooled | paper (Drawer + Bread) |\n|---|" + "---|" * (len(tasks) + 2))  # fmt: skip
        for variant, rows in res.items():
            paper = PAPER_TABLE3.get(variant)
            add(f"| {variant} | " + " | ".join(cell(rows.get(t)) for t in tasks) + f" | {cell(pooled(rows))} | {f'{paper:.0f}%' if paper else '–'} |")  # fmt: skip
        unseen = {
            f"{v}/{t}": r for v, rows in res.items() if v != "default" for t, r in rows.items()
        }
        drop = pooled(res["default"])["progress_rate"] - pooled(unseen)["progress_rate"]
        effects.append(("robustness: unseen scenes keep the in-distribution performance", f"progress {pooled(unseen)['progress_rate']:.0%} on unseen scenes vs {pooled(res['default'])['progress_rate']:.0%} in distribution (drop {drop:+.0%}); success {pooled(unseen)['success_rate']:.0%} vs {pooled(res['default'])['success_rate']:.0%}"))  # fmt: skip
        add("")
    cross = steps.get("11_cross_embodiment")
    if cross and cross.get("results"):
        res = cross["results"]
        cross_tasks = sorted({t for rows in res.values() for t in rows})
        add("## 9. Cross-embodiment: SharpaWave hands (Fig. 7 analogue)\n")
        add("| policy | " + " | ".join(TASK_NAMES.get(t, t) for t in cross_tasks) + " | pooled |\n|---|" + "---|" * (len(cross_tasks) + 1))  # fmt: skip
        labels = {"post_metis": "METIS post-trained on Inspire demos, zero-shot on SharpaWave", "sharpa_metis": "METIS post-trained on SharpaWave demos", "sharpa_scratch": "no pre-training, post-trained on SharpaWave demos"}  # fmt: skip
        for run, rows in res.items():
            add(f"| {labels.get(run, run)} | " + " | ".join(cell(rows.get(t)) for t in cross_tasks) + f" | {cell(pooled(rows))} |")  # fmt: skip
        add("\nPaper (Sharpa Beta, 22-DoF SharpaWave hands): 85 % on Grasp Apple into Basket, 70 % on Tool Use.\n")  # fmt: skip
        effects.append(("pre-training transfers to a new hand (SharpaWave: pre-trained vs scratch)", verdict(pooled(res["sharpa_metis"]), pooled(res["sharpa_scratch"]))))  # fmt: skip
    served = steps.get("12_serve")
    if served:
        add("## 10. Serving: the simulator driven through `POST /act`\n")
        add("| task | served success | same outcome per seed as in process | requests | round trip median / p95 ms | server ms (median) |\n|---|---|---|---|---|---|")  # fmt: skip
        for task, row in served["results"].items():
            if task.startswith("_"):
                continue
            add(f"| {TASK_NAMES.get(task, task)} | {pct(row['success_rate'])} (n={row['episodes']}) | {'yes' if row['same_outcome_per_seed_as_in_process'] else 'no'} | {row['requests']} | {row['round_trip_ms_median']:.0f} / {row['round_trip_ms_p95']:.0f} | {row['server_ms_median']:.0f} |")  # fmt: skip
        add("")
    if effects:
        add("## 11. Which of the paper's effects this run reproduces\n")
        add("| effect (paper) | ours |\n|---|---|")
        for name, text in effects:
            add(f"| {name} | {text} |")
        add(f"\nAt this scale ({cfg['policy']['preset']} policy, {cfg['posttrain']['steps']} post-training steps, {cfg['evaluation']['episodes']} evaluation episodes per task and policy) the 95 % intervals are wide; an effect counts as reproduced only when the intervals separate, and as contradicted only when they separate the other way.\n")  # fmt: skip
    text = "\n".join(lines) + "\n"
    from metis_core.io import atomic_write

    with atomic_write(report / "README.md", "w") as handle:
        handle.write(text)
    with atomic_write(report / "effects.json", "w") as handle:
        handle.write(json.dumps(dict(effects), indent=2))
    return report / "README.md"


def main() -> None:
    args = parse_args(__doc__)
    banner("report", "write the reproduction report")
    path = build(Work(args.work), args.cfg)
    print(f"   wrote {path}", flush=True)


if __name__ == "__main__":
    main()
