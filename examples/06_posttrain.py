"""Step 6: post-train with LoRA on the simulated downstream tasks — METIS and both baselines.

One multi-task policy per method on the downstream demonstrations (Inspire hand), from the
pre-trained policy of step 5, with the ``posttrain`` recipe (LoRA r = 32 on the language model,
both vision towers and the projector; the action head trained in full; AdamW with weight decay
1e-3 and the ×0.1 step at 80 %). Same data, steps and batch for all three:

* ``post_metis`` — METIS: reasoning text + dynamics codes + action L1;
* ``post_nodyn`` — the chunked-action regression baseline, which is also Table 5's "w/o
  motion-aware dynamics": the autoregressive supervision of the dynamics is removed in
  post-training and only the continuous actions are supervised (``model.dynamics_tokens=false``);
* ``post_binned`` — the binned-action VLA baseline (from ``pre_binned``): next-token loss on 144 (toy)
  per-value bins per step, actions decoded from the generated bins.

    python examples/06_posttrain.py                   # toy: about 3 minutes on 2 cores
"""

from __future__ import annotations

from pipeline import Work, banner, parse_args, train_runs, training_overrides


def downstream(work, kind="metis"):  # type: ignore[no-untyped-def]
    built = work.result("01_build_mixture")["datasets"]["downstream"]
    annotated = work.result("04_annotate")["datasets"][kind]
    return {f"down_{task}": annotated[task] for task in built}


def jobs(cfg, work):  # type: ignore[no-untyped-def]
    runs = work.runs
    common = {"data.heldout_fraction": 0.1}
    return {
        "post_metis": training_overrides(
            cfg, "posttrain", datasets=downstream(work), init_from=runs / "pre_metis", extra=common
        ),
        "post_nodyn": training_overrides(
            cfg,
            "posttrain",
            datasets=downstream(work),
            init_from=runs / "pre_metis",
            extra={**common, "model.dynamics_tokens": False},
        ),
        "post_binned": training_overrides(
            cfg,
            "posttrain",
            datasets=downstream(work, "binned"),
            init_from=runs / "pre_binned",
            extra=common,
        ),
    }


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("06", "post-train with LoRA on the downstream tasks: METIS and both baselines")
    runs = train_runs(work, cfg, jobs(cfg, work))
    work.save_result("06_posttrain", {"runs": runs})


if __name__ == "__main__":
    main()
