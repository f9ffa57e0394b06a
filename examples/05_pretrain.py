"""Step 5: pre-train the policy on the multi-source mixture (and the variants the ablations need).

Three pre-training runs on the same data, steps and batch (the ``pretrain`` recipe: all
parameters, AdamW, no weight decay, gradient clip 1.0; the tiny recipe at toy scale):

* ``pre_metis`` — METIS: next-token loss on the reasoning text and the 44 dynamics codes, plus
  the L1 loss of the action head, on the whole mixture (human and robot);
* ``pre_human`` — the same on the human data only (``data.sources=human``; Table 4's
  "HumanPretrain");
* ``pre_binned`` — the binned-action VLA baseline: the same VLA whose action tokens are 144 (toy)
  per-value bins of the upcoming second, decoded into the chunk (no action head).

    python examples/05_pretrain.py                    # toy: about 3 minutes on 2 cores
    python examples/05_pretrain.py --config paper     # one process (a GPU); for several, run
                                                      # the torchrun command each run's log starts with
"""

from __future__ import annotations

from pipeline import Work, banner, parse_args, train_runs, training_overrides


def mixture_weights(cfg, names):  # type: ignore[no-untyped-def]
    """Sampling weights: ``mixture.weights`` shares split evenly within human/robot/other."""
    shares = cfg["mixture"].get("weights") or {"synthetic": 0.2, "human": 0.5, "robot": 0.3}
    groups = {"human": [n for n in names if n.startswith("human_")], "robot": [n for n in names if n.startswith("inspire_")]}  # fmt: skip
    weights = {}
    for name in names:
        group = next((g for g, members in groups.items() if name in members), None)
        if group is None:
            weights[name] = float(shares.get(name, shares.get("other", 0.2)))
        else:
            weights[name] = float(shares[group]) / len(groups[group])
    return weights


def jobs(cfg, work):  # type: ignore[no-untyped-def]
    annotated = work.result("04_annotate")["datasets"]
    built = work.result("01_build_mixture")["datasets"]
    pretrain = {n: p for n, p in annotated["metis"].items() if n in built["pretrain"]}
    binned = {n: p for n, p in annotated["binned"].items() if n in built["pretrain"]}
    motion = work.result("02_motion_tokenizer")
    visual = work.result("03_visual_tokenizer")["visual_dynamics_vq"]
    weights = {f"data.weights.{n}": w for n, w in mixture_weights(cfg, list(pretrain)).items()}
    common = {"data.heldout_fraction": 0.05, **weights}
    # Table 4's human-only pre-training: the human datasets, and only their human episodes
    human = {n: p for n, p in pretrain.items() if not n.startswith("inspire_")}
    human_weights = {f"data.weights.{n}": w for n, w in mixture_weights(cfg, list(human)).items()}
    return {
        "pre_metis": training_overrides(
            cfg,
            "pretrain",
            datasets=pretrain,
            motion=motion["motion_rvq"],
            visual=visual,
            extra=common,
        ),
        "pre_human": training_overrides(
            cfg,
            "pretrain",
            datasets=human,
            motion=motion["motion_rvq"],
            visual=visual,
            extra={**human_weights, "data.heldout_fraction": 0.05, "data.sources": "human"},
        ),
        "pre_binned": training_overrides(
            cfg,
            "pretrain",
            datasets=binned,
            motion=motion["binning"],
            visual=visual,
            model={"actions_from": "motion_tokens", "action_loss_weight": 0.0},
            extra=common,
        ),
    }


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("05", "pre-train on the mixture: METIS, human-only, binned-action baseline")
    runs = train_runs(work, cfg, jobs(cfg, work))
    work.save_result("05_pretrain", {"runs": runs})


if __name__ == "__main__":
    main()
