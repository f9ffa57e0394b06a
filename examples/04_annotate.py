"""Step 4: annotate every dataset with its dynamics codes (``metis annotate``).

Each frame gets the 44 codes the policy learns to emit — 4 visual-dynamics codes, then 40
motion codes of the upcoming second — stored as the per-frame feature ``dynamics.codes`` with
the fingerprints of the tokenizers. The binned-action baseline trains on copies of the same
datasets annotated with its own codes instead: the same 4 visual codes, then 144 per-value bins (toy; 240 in the paper config)
(48 values at 3 future frames of the second; 5 in the paper config).

    python examples/04_annotate.py                    # toy: about 1-2 minutes on 2 cores
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline import Work, banner, dataset_names, parse_args, timed


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("04", "annotate the datasets with their dynamics codes")
    from metis_core.vla.annotate import annotate_dataset, load_annotation_tokenizers
    from metis_datasets.annotation import AnnotationConflictError

    visual = work.result("03_visual_tokenizer")["visual_dynamics_vq"]
    motion_dir = work.result("02_motion_tokenizer")["motion_rvq"]
    binning_dir = work.result("02_motion_tokenizer")["binning"]
    kinds = {kind: dataset_names(work, kind) for kind in ("pretrain", "downstream", "sharpawave")}
    workers = int(cfg["workers"])
    motion, visual_tok, extractor = load_annotation_tokenizers(motion_dir, visual)
    binning, _, _ = load_annotation_tokenizers(binning_dir, visual)
    annotated: dict[str, dict[str, str]] = {"metis": {}, "binned": {}}
    with timed("annotate with motion_rvq + visual_dynamics_vq") as t1:
        for entries in kinds.values():
            for name, path in entries.items():
                annotate_dataset(path, motion_tokenizer=motion, visual_tokenizer=visual_tok, feature_extractor=extractor, workers=workers, progress=False)  # fmt: skip
                annotated["metis"][name] = str(path)
    with timed("annotate copies with the binned-action codes (the visual codes reused)") as t2:
        for kind in ("pretrain", "downstream"):
            for name, path in kinds[kind].items():
                copy = work.data / "binned" / Path(path).name
                if not copy.exists():
                    staging = copy.with_name(copy.name + ".copying")
                    shutil.rmtree(staging, ignore_errors=True)
                    shutil.copytree(path, staging)
                    staging.rename(copy)
                options = {"motion_tokenizer": binning, "visual_tokenizer": visual_tok, "feature_extractor": extractor, "progress": False, "visual_codes_from": path}  # fmt: skip
                try:
                    annotate_dataset(copy, **options)
                except AnnotationConflictError:  # the copy still holds the original's codes
                    annotate_dataset(copy, **options, overwrite=True)
                annotated["binned"][name] = str(copy)
    print(f"   {len(annotated['metis'])} datasets with 4 + {motion.tokens_per_window} codes per frame, {len(annotated['binned'])} copies with 4 + {binning.tokens_per_window}")  # fmt: skip
    work.save_result("04_annotate", {"datasets": annotated, "codes_per_frame": {"metis": 4 + motion.tokens_per_window, "binned": 4 + binning.tokens_per_window}, "seconds": {"metis": t1["seconds"], "binned": t2["seconds"]}})  # fmt: skip


if __name__ == "__main__":
    main()
