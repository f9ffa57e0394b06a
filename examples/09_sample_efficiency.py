"""Step 9: sample efficiency — post-training on 10 % … 100 % of the downstream demonstrations
(the paper's Fig. 6).

The fractions are seeded subsets of the training episodes (a smaller fraction's episodes are a
subset of a larger one's); 100 % is ``post_metis`` of step 6. Same steps and batch for every
fraction; closed loop on the same seeds.

    python examples/09_sample_efficiency.py           # toy: about 3 minutes on 2 cores
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


def run_name(fraction: float) -> str:
    return "post_metis" if fraction >= 1.0 else f"post_frac{round(100 * fraction):03d}"


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("09", "sample efficiency: 10 %-100 % of the downstream demonstrations (Fig. 6)")
    downstream = importlib.import_module("06_posttrain").downstream(work)
    fractions = sorted(float(f) for f in cfg["sample_efficiency"])
    jobs = {run_name(f): training_overrides(cfg, "posttrain", datasets=downstream, init_from=work.runs / "pre_metis", extra={"data.heldout_fraction": 0.1, "data.demo_fraction": f}) for f in fractions if f < 1.0}  # fmt: skip
    runs = train_runs(work, cfg, jobs)
    episodes = int(cfg["evaluation"]["episodes"])
    cells = [Cell(run_name(f), str(work.runs / run_name(f) / "final"), task, episodes) for f in fractions for task in cfg["downstream"]["tasks"]]  # fmt: skip
    results: dict[str, dict] = {str(f): {"run": run_name(f), "tasks": {}} for f in fractions}
    for cell, report in zip(cells, evaluate_cells(work, cfg, cells), strict=True):
        fraction = next(f for f in fractions if run_name(f) == cell.name)
        results[str(fraction)]["tasks"][cell.task] = summarize(report)
    work.save_result(
        "09_sample_efficiency", {"fractions": fractions, "runs": runs, "results": results}
    )


if __name__ == "__main__":
    main()
