"""Step 7: evaluate METIS and both baselines closed loop in ``metis-sim``.

Every policy runs on the same seeds of every downstream task (seeds no demonstration used):
reset the scene, then ask the policy for a chunk from the ego image, the instruction and the
48-D state, execute it through the hand's IK at 30 Hz, until success, failure or the time
limit. Success rate with its 95 % Wilson interval, and progress rate (the mean fraction of the
task's four stages reached: the paper's PSR).

    python examples/07_evaluate.py                    # toy: about 4 minutes on 2 cores
"""

from __future__ import annotations

from pipeline import Cell, Work, banner, evaluate_cells, parse_args, summarize

POLICIES = {"post_metis": "METIS", "post_nodyn": "chunked regression (no tokens)", "post_binned": "binned-action VLA"}  # fmt: skip


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("07", "closed-loop evaluation in metis-sim: METIS and both baselines")
    tasks = cfg["downstream"]["tasks"]
    episodes = int(cfg["evaluation"]["episodes"])
    cells = [Cell(run, str(work.runs / run / "final"), task, episodes) for run in POLICIES for task in tasks]  # fmt: skip
    reports = evaluate_cells(work, cfg, cells)
    results: dict[str, dict[str, dict]] = {run: {} for run in POLICIES}
    for cell, report in zip(cells, reports, strict=True):
        results[cell.name][cell.task] = summarize(report)
    work.save_result("07_evaluate", {"policies": POLICIES, "results": results})


if __name__ == "__main__":
    main()
