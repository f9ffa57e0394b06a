"""Step 10: out-of-distribution variants (the paper's Table 3).

``post_metis`` (trained on the default scenes only) on unseen backgrounds (table texture),
unseen lighting (a coloured, flickering light), unseen objects (a cylinder for the cube, a
thicker handle, a larger lid) and cluttered scenes (distractor objects), beside its in-
distribution success on the same seeds.

    python examples/10_ood.py                         # toy: about 3 minutes on 2 cores
"""

from __future__ import annotations

from pipeline import Cell, Work, banner, evaluate_cells, parse_args, summarize


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("10", "out-of-distribution variants (Table 3)")
    episodes = int(cfg["evaluation"]["ood_episodes"])
    variants = ["default", *cfg["evaluation"]["variants"]]
    policy = str(work.runs / "post_metis" / "final")
    cells = [Cell("post_metis", policy, task, episodes, variant=variant, videos=0) for variant in variants for task in cfg["downstream"]["tasks"]]  # fmt: skip
    results: dict[str, dict[str, dict]] = {variant: {} for variant in variants}
    for cell, report in zip(cells, evaluate_cells(work, cfg, cells), strict=True):
        results[cell.variant][cell.task] = summarize(report)
    work.save_result("10_ood", {"episodes": episodes, "results": results})


if __name__ == "__main__":
    main()
