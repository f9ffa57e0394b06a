"""Run the whole reproduction, step 01 to step 12, then write the report (``make demo``).

Each step is its own script (``examples/NN_*.py``) run in a fresh process with the same
``--config``/``--work``/``--set`` arguments; a step whose outputs exist is skipped, so an
interrupted run continues where it stopped. At toy scale (the default) the chain takes about
25 minutes on 2 CPU cores and ends with ``runs/reproduce-toy/report/README.md``.

    python examples/run_all.py                      # toy scale, CPU
    python examples/run_all.py --config paper --set policy.text_tokenizer=/models/llama2
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from pipeline import EXAMPLES, parse_args

STEPS = [
    "01_build_mixture",
    "02_motion_tokenizer",
    "03_visual_tokenizer",
    "04_annotate",
    "05_pretrain",
    "06_posttrain",
    "07_evaluate",
    "08_ablations",
    "09_sample_efficiency",
    "10_ood",
    "11_cross_embodiment",
    "12_serve",
    "report",
]


def main() -> None:
    args = parse_args(__doc__)
    forwarded = ["--config", args.config, "--work", str(args.work)] + [x for s in args.sets for x in ("--set", s)]  # fmt: skip
    timings_file = Path(args.work) / "results" / "timings.json"
    timings_file.parent.mkdir(parents=True, exist_ok=True)
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    started = time.perf_counter()
    for number, step in enumerate(STEPS, 1):
        print(f"\n##### [{number}/{len(STEPS)}] {step}  ({(time.perf_counter() - started) / 60:.1f} min elapsed)", flush=True)  # fmt: skip
        result = Path(args.work) / "results" / f"{step}.json"
        existed = result.is_file()
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(EXAMPLES / f"{step}.py"), *forwarded])
        if step != "report" and code == 0 and not (existed and step in timings):
            timings[step] = (
                time.perf_counter() - start
            )  # a step found complete keeps its first timing
            timings_file.write_text(json.dumps(timings, indent=2))
        if code != 0:
            print(f"step {step} failed (exit code {code}); fix it and rerun: finished steps are skipped", flush=True)  # fmt: skip
            sys.exit(code)
    print(f"\nreproduction finished in {(time.perf_counter() - started) / 60:.1f} min; report: {Path(args.work) / 'report' / 'README.md'}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
