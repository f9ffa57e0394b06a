"""Step 11: cross-embodiment transfer to SharpaWave hands (the paper's Fig. 7).

METIS predicts wrist poses and fingertip positions, not joint angles, so the same contract
actions drive any hand through its own IK. Three policies on the SharpaWave scenes (22-DoF
hands), same seeds:

* ``post_metis`` zero-shot: post-trained on Inspire demonstrations only;
* ``sharpa_metis``: post-trained from ``pre_metis`` on the SharpaWave demonstrations;
* ``sharpa_scratch``: the same post-training from no pre-training.

    python examples/11_cross_embodiment.py            # toy: about 3 minutes on 2 cores
"""

from __future__ import annotations

import json

from pipeline import (
    Cell,
    Work,
    banner,
    evaluate_cells,
    parse_args,
    summarize,
    train_runs,
    training_overrides,
)


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("11", "cross-embodiment transfer to SharpaWave hands (Fig. 7)")
    built = work.result("01_build_mixture")["datasets"]["sharpawave"]
    annotated = work.result("04_annotate")["datasets"]["metis"]
    if not built:
        print("   no SharpaWave demonstrations (downstream.sharpawave_episodes = 0): skipped")
        work.save_result("11_cross_embodiment", {"results": {}, "runs": {}})
        return
    datasets = {name: annotated[name] for name in built}
    tasks = [name.removeprefix("sharpa_") for name in built]
    motion = work.result("02_motion_tokenizer")["motion_rvq"]
    visual = work.result("03_visual_tokenizer")["visual_dynamics_vq"]
    common = {"data.heldout_fraction": 0.1}
    jobs = {
        "sharpa_metis": training_overrides(
            cfg, "posttrain", datasets=datasets, init_from=work.runs / "pre_metis", extra=common
        ),
        "sharpa_scratch": training_overrides(
            cfg,
            "posttrain",
            datasets=datasets,
            motion=motion,
            visual=visual,
            extra={"data.heldout_fraction": 0.1},
        ),
    }
    runs = train_runs(work, cfg, jobs)
    episodes = int(cfg["evaluation"]["ood_episodes"])
    cells = []
    for name in ("post_metis", "sharpa_metis", "sharpa_scratch"):
        policy = work.runs / name / "final"
        single = len(json.loads((policy / "normalization.json").read_text(encoding="utf-8"))["stats"]) == 1  # fmt: skip
        for task in tasks:
            key = f"down_{task}" if name == "post_metis" else f"sharpa_{task}"
            cells.append(Cell(name, str(policy), task, episodes, embodiment="sharpawave", unnorm_key=None if single else key))  # fmt: skip
    results: dict[str, dict[str, dict]] = {name: {} for name in ("post_metis", "sharpa_metis", "sharpa_scratch")}  # fmt: skip
    for cell, report in zip(cells, evaluate_cells(work, cfg, cells), strict=True):
        results[cell.name][cell.task] = summarize(report)
    work.save_result("11_cross_embodiment", {"runs": runs, "results": results})


if __name__ == "__main__":
    main()
