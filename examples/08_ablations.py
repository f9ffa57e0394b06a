"""Step 8: the ablations of Tables 4 and 5.

Table 4 (multi-source pre-training): the same post-training from no pre-training
(``post_scratch``: a new policy with the same tokenizers), from human-only pre-training
(``post_human``, from ``pre_human``) and from the full mixture (``post_metis``, step 6).
Table 5 (motion-aware dynamics): ``post_metis`` against ``post_nodyn`` (step 6), where
post-training supervises only the continuous actions. All closed loop on the same seeds.

    python examples/08_ablations.py                   # toy: about 4 minutes on 2 cores
"""

from __future__ import annotations

import importlib

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
    banner("08", "ablations: Table 4 (pre-training) and Table 5 (motion-aware dynamics)")
    downstream = importlib.import_module("06_posttrain").downstream(work)
    motion = work.result("02_motion_tokenizer")["motion_rvq"]
    visual = work.result("03_visual_tokenizer")["visual_dynamics_vq"]
    common = {"data.heldout_fraction": 0.1}
    jobs = {
        "post_scratch": training_overrides(
            cfg, "posttrain", datasets=downstream, motion=motion, visual=visual, extra=common
        ),
        "post_human": training_overrides(
            cfg, "posttrain", datasets=downstream, init_from=work.runs / "pre_human", extra=common
        ),
    }
    runs = train_runs(work, cfg, jobs)
    tables = {"table4": {"post_scratch": "METIS-NoPretrain", "post_human": "METIS-HumanPretrain", "post_metis": "METIS-FullPretrain"}, "table5": {"post_nodyn": "METIS w/o motion-aware dynamics", "post_metis": "METIS w/ motion-aware dynamics"}}  # fmt: skip
    episodes = int(cfg["evaluation"]["episodes"])
    names = ("post_scratch", "post_human", "post_metis", "post_nodyn")
    cells = [Cell(run, str(work.runs / run / "final"), task, episodes) for run in names for task in cfg["downstream"]["tasks"]]  # fmt: skip
    results: dict[str, dict[str, dict]] = {run: {} for run in names}
    for cell, report in zip(cells, evaluate_cells(work, cfg, cells), strict=True):
        results[cell.name][cell.task] = summarize(report)
    work.save_result("08_ablations", {"tables": tables, "runs": runs, "results": results})


if __name__ == "__main__":
    main()
