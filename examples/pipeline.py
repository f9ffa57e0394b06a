"""Shared plumbing of the numbered reproduction scripts (``examples/01_*.py`` … ``12_*.py``).

Every script takes ``--config toy|paper|FILE.yaml`` (default ``toy``), ``--work DIR`` (default
``runs/reproduce-<config name>``) and ``--set key.path=value`` overrides, reads what the
earlier steps wrote under the work directory and writes its own results to
``WORK/results/NN_name.json``; ``examples/report.py`` turns them into the report. A step that
finds its outputs complete skips the work (delete them to redo it); training runs resume from
their last checkpoint.

Layout of the work directory::

    data/        LeRobot datasets (pre-training mixture, downstream demonstrations, copies
                 annotated with the binned-action codes)
    tokenizers/  motion_rvq, visual_dynamics_vq (with its feature extractor), binning
    runs/        training runs (metis train layout: final/, adapter/, metrics.jsonl, curves.png)
    eval/        closed-loop evaluations (report.json, report.md, videos/)
    results/     one JSON per step
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent
REPO = EXAMPLES.parent
CONFIGS = EXAMPLES / "configs"

# Evaluation seeds: task t, episode i -> seed_offset + 1000 * t + i (never a demonstration seed).
# Demonstration seeds: downstream from 0, SharpaWave from 50_000, pre-training tasks from 20_000.
SHARPA_SEEDS = 50_000
PRETRAIN_SEEDS = 20_000

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# -- configuration ---------------------------------------------------------------------------


def load_config(name: str, sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The config ``name`` (``toy``, ``paper`` or a YAML file) with ``key.path=value`` overrides.

    Raises:
        FileNotFoundError: For an unknown name or a missing file.
        KeyError: For an override of a key the config does not have.
    """
    import yaml

    from metis_core.vla.training.config import parse_override_value

    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
        raise FileNotFoundError(f"--config {name}: no such config (expected one of {known} or a .yaml file)")  # fmt: skip
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key.path=value")
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise KeyError(f"--set {item!r}: the config has no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise KeyError(f"--set {item!r}: the config has no key {key!r} (keys there: {sorted(node)})")  # fmt: skip
        node[parts[-1]] = parse_override_value(value)
    return config


def parse_args(description: str) -> argparse.Namespace:
    """``--config``, ``--work``, ``--set``; the config is loaded into ``args.cfg``."""
    parser = argparse.ArgumentParser(description=description.strip().split("\n\n")[0])
    parser.add_argument("--config", default="toy", help="toy (CPU, default), paper (GPUs) or a YAML file")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="work directory (default runs/reproduce-<config>)")  # fmt: skip
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")  # fmt: skip
    args = parser.parse_args()
    args.cfg = load_config(args.config, args.sets)
    if args.work is None:
        args.work = REPO / "runs" / f"reproduce-{args.cfg['name']}"
    args.work = args.work.resolve()
    return args


# -- the work directory ----------------------------------------------------------------------


@dataclass
class Work:
    """Paths of a work directory and its step results."""

    root: Path

    def __post_init__(self) -> None:
        for name in ("data", "tokenizers", "runs", "eval", "results"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def tokenizers(self) -> Path:
        return self.root / "tokenizers"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    def result_path(self, step: str) -> Path:
        return self.root / "results" / f"{step}.json"

    def has_result(self, step: str) -> bool:
        return self.result_path(step).is_file()

    def save_result(self, step: str, data: Mapping[str, Any]) -> Path:
        """Write ``results/<step>.json`` atomically, with the machine it was measured on."""
        from metis_core.io import write_json

        payload = {**data, "machine": machine()}
        path = self.result_path(step)
        write_json(path, payload)
        return path

    def result(self, step: str) -> dict[str, Any]:
        """A step's results.

        Raises:
            FileNotFoundError: Naming the script to run first.
        """
        path = self.result_path(step)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run examples/{step}.py first (or examples/run_all.py)")  # fmt: skip
        return json.loads(path.read_text(encoding="utf-8"))


def machine() -> dict[str, Any]:
    """Where a figure was measured: CPU count, load, torch threads, GPU."""
    import platform

    import torch

    return {
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "platform": platform.platform(),
    }


def banner(step: str, title: str) -> None:
    print(f"\n=== {step}: {title} ===", flush=True)


@contextlib.contextmanager
def timed(what: str) -> Iterator[dict[str, float]]:
    """Print how long ``what`` took; the dict gets ``seconds``."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    print(f"-- {what} ...", flush=True)
    yield out
    out["seconds"] = time.perf_counter() - start
    print(f"-- {what}: {out['seconds']:.0f} s", flush=True)


def dataset_names(work: Work, kind: str) -> dict[str, Path]:
    """The datasets step 01 wrote of a kind (``pretrain``, ``downstream``, ``sharpawave``,
    ``fixtures``), as listed in its results."""
    built = work.result("01_build_mixture")
    return {name: Path(path) for name, path in built["datasets"][kind].items()}


# -- policy configs and training -------------------------------------------------------------


def policy_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``MetisConfig`` fields for a new policy of ``cfg['policy']`` (the image size)."""
    from metis_core.vla.configuration_metis import MetisConfig

    policy = cfg["policy"]
    preset = {"tiny": MetisConfig.tiny, "paper": MetisConfig.paper}[policy["preset"]]()
    backbone = copy.deepcopy(preset.backbone_config)
    size = int(policy["image_size"])
    backbone["image_size"] = size
    for tower in ("dino", "siglip"):
        if isinstance(backbone.get(tower), dict):
            backbone[tower]["image_size"] = size
    fields: dict[str, Any] = {"backbone_config": backbone}
    if policy.get("text_tokenizer"):
        fields["text_tokenizer"] = str(policy["text_tokenizer"])
    return fields


def training_overrides(
    cfg: Mapping[str, Any],
    stage: str,
    *,
    datasets: Mapping[str, Path],
    init_from: Path | None = None,
    motion: Path | None = None,
    visual: Path | None = None,
    model: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """``(recipe, key=value overrides)`` of one training run (see ``metis train``)."""
    recipe = f"{stage}_tiny" if cfg["policy"]["preset"] == "tiny" else stage
    section = cfg[stage]
    items = [f"data.datasets.{name}={path}" for name, path in datasets.items()]
    items += [
        f"run.max_steps={int(section['steps'])}",
        f"run.global_batch={int(section['batch'])}",
        f"run.micro_batch={min(int(section['batch']), 8)}",
        f"optim.lr={float(section['lr'])}",
        f"run.seed={int(cfg['seed'])}",
        f"run.threads={int(cfg.get('threads', 0))}",
        "run.progress=false",
        "run.plot=true",
        f"run.checkpoint_every={max(int(section['steps']) // 2, 1)}",
        "run.eval_samples=32",
    ]
    if init_from is not None:
        items.append(f"model.init_from={init_from}")
    else:
        items += [f"model.motion_tokenizer={motion}", f"model.visual_tokenizer={visual}"]
        fields = {**policy_model_config(cfg), **(model or {})}
        items.append(f"model.config={json.dumps(fields)}")
    if init_from is not None and model:
        items.append(f"model.config={json.dumps(dict(model))}")
    extra = dict(extra or {})
    if len(datasets) > 1 and not any(k.startswith("data.weights") for k in extra):
        from metis_datasets import TABLE6_WEIGHTS

        if not set(datasets) <= set(TABLE6_WEIGHTS):  # the downstream tasks: equal weights
            extra.update({f"data.weights.{name}": 1.0 for name in datasets})
    for key, value in extra.items():
        items.append(f"{key}={json.dumps(value) if isinstance(value, (dict, list, bool)) else value}")  # fmt: skip
    return recipe, items


def _train_job(job: tuple[str, str, list[str]]) -> dict[str, Any]:
    try:
        return _train(job)
    except BaseException as err:  # some exceptions do not pickle back to the parent: send text
        import traceback

        raise RuntimeError(f"{Path(job[0]).name}: {type(err).__name__}: {err}\n{traceback.format_exc()}") from None  # fmt: skip


def _train(job: tuple[str, str, list[str]]) -> dict[str, Any]:
    name, recipe, items = job
    out = Path(name)
    done = out / "result.json"
    if done.is_file() and (out / "final").is_dir():
        return json.loads(done.read_text(encoding="utf-8"))
    import torch

    from metis_core.vla.training import Trainer
    from metis_core.vla.training import load_config as load_train_config

    start = time.perf_counter()
    config = load_train_config(recipe, items)
    command = " ".join(["torchrun --nproc-per-node N -m metis_core.vla.training.cli", recipe, *(f"'{i}'" for i in items), "-o", str(out)])  # fmt: skip
    with open(out.parent / f"{out.name}.log", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # fmt: skip
        print(f"# the same run on N GPUs:\n# {command}", flush=True)
        result = Trainer(config, out).run()
    metrics = {
        "run": str(out),
        "recipe": recipe,
        "overrides": items,
        "seconds": time.perf_counter() - start,
        "evaluation": result.evaluation,
        "final_metrics": {
            k: v for k, v in result.final_metrics.items() if isinstance(v, (int, float))
        },
        "torch_threads": torch.get_num_threads(),
    }
    from metis_core.io import write_json

    write_json(done, metrics)
    return metrics


def train_runs(work: Work, cfg: Mapping[str, Any], jobs: Mapping[str, tuple[str, list[str]]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Run (or resume, or skip when finished) the named training runs, ``parallel_runs`` at a
    time in separate processes; each run logs to ``runs/<name>.log``. Returns their summaries."""
    import multiprocessing

    parallel = max(1, int(cfg.get("parallel_runs", 1)))
    pending = [(str(work.runs / name), recipe, items) for name, (recipe, items) in jobs.items()]
    results: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    for name in jobs:
        print(f"   training {name} (log: {work.runs / name}.log)", flush=True)
    if parallel == 1 or len(pending) == 1:
        outputs = [_train_job(job) for job in pending]
    else:
        with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:  # fmt: skip
            futures = {pool.submit(_train_job, job): Path(job[0]).name for job in pending}
            outputs = []
            for future in _as_completed(futures, start):
                outputs.append(future.result())
    for name, output in zip(jobs, sorted(outputs, key=lambda o: list(jobs).index(Path(o["run"]).name)), strict=True):  # fmt: skip
        results[name] = output
    return results


def _as_completed(futures: dict, start: float) -> Iterator[Any]:
    from concurrent.futures import as_completed

    for future in as_completed(futures):
        name = futures[future]
        error = future.exception()
        if error is not None:
            print(f"   {name}: FAILED ({type(error).__name__}: {error}); see its log", flush=True)
            raise error
        summary = future.result()
        evaluation = summary.get("evaluation", {})
        print(f"   {name}: done in {summary['seconds']:.0f} s (held-out fingertip {evaluation.get('fingertip_mm', float('nan')):.1f} mm, wrist {evaluation.get('wrist_mm', float('nan')):.1f} mm; {time.perf_counter() - start:.0f} s since start)", flush=True)  # fmt: skip
        yield future


# -- closed-loop evaluation ------------------------------------------------------------------


def evaluation_seeds(cfg: Mapping[str, Any], task: str, episodes: int) -> list[int]:
    """The seeds every policy is evaluated on for ``task`` (the same for all of them)."""
    tasks = list(cfg["downstream"]["tasks"])
    index = tasks.index(task) if task in tasks else len(tasks)
    first = int(cfg["evaluation"]["seed_offset"]) + 1000 * index
    return list(range(first, first + episodes))


@dataclass
class Cell:
    """One closed-loop evaluation: a policy on a task's shared seeds (variant, hand)."""

    name: str
    policy: str
    task: str
    episodes: int
    variant: str = "default"
    embodiment: str = "inspire"
    videos: int | None = None
    unnorm_key: str | None = None

    def out(self, work: Work) -> Path:
        return work.eval / self.name / f"{self.task}-{self.variant}-{self.embodiment}"


_WORKER_CACHE: dict[str, Any] = {}


def _init_eval_worker() -> None:
    os.environ.setdefault("LP_NUM_THREADS", "1")
    import torch

    import metis_sim  # noqa: F401 - registers the tasks, selects headless rendering

    torch.set_num_threads(1)


def _episode_job(job: tuple) -> dict[str, Any]:
    """One episode in a worker process; environments and policies stay loaded between jobs."""
    from dataclasses import asdict

    from metis_core.registry import ENVS
    from metis_sim.evaluate import run_episode
    from metis_sim.policies import load_policy

    task, variant, embodiment, policy, unnorm_key, seed, video = job
    envs = _WORKER_CACHE.setdefault("envs", {})
    policies = _WORKER_CACHE.setdefault("policies", {})
    env_key, policy_key = (task, variant, embodiment), (policy, unnorm_key, embodiment)
    if env_key not in envs:
        if len(envs) >= 4:  # a few scenes at a time (each holds a renderer)
            envs.pop(next(iter(envs))).close()
        envs[env_key] = ENVS.create(task, terminate_on_success=True, variant=variant, embodiment=embodiment)  # fmt: skip
    if policy_key not in policies:
        if len(policies) >= 2:
            policies.pop(next(iter(policies)))
        policies[policy_key] = load_policy(policy, embodiment=embodiment, unnorm_key=unnorm_key)
    result = run_episode(envs[env_key], policies[policy_key], seed, video_path=Path(video) if video else None)  # fmt: skip
    return asdict(result)


def evaluate_cells(work: Work, cfg: Mapping[str, Any], cells: list[Cell]) -> list[dict[str, Any]]:
    """Evaluate several (policy, task) cells closed loop in ``metis-sim``, every episode of all of
    them spread over ``workers`` processes that keep scenes and policies loaded; each cell runs on
    the task's shared seeds and is cached in ``eval/<name>/<task>-<variant>-<embodiment>/``
    (``report.json``, ``report.md``, ``videos/``). Returns the reports, in order.

    A multi-task policy (statistics of several datasets) un-normalises with ``down_<task>``
    unless the cell names its ``unnorm_key``.
    """
    import multiprocessing

    import mujoco

    from metis_core.io import atomic_write, write_json
    from metis_sim.evaluate import EpisodeResult, EvalReport

    reports: list[dict[str, Any] | None] = [None] * len(cells)
    jobs: list[tuple[int, tuple]] = []
    for index, cell in enumerate(cells):
        report_file = cell.out(work) / "report.json"
        if report_file.is_file():
            reports[index] = json.loads(report_file.read_text(encoding="utf-8"))
            continue
        if cell.unnorm_key is None and (Path(cell.policy) / "normalization.json").is_file():
            keys = json.loads((Path(cell.policy) / "normalization.json").read_text(encoding="utf-8"))["stats"]  # fmt: skip
            cell.unnorm_key = f"down_{cell.task}" if len(keys) > 1 else None
        videos = int(cfg["evaluation"]["videos"]) if cell.videos is None else cell.videos
        (cell.out(work) / "videos").mkdir(parents=True, exist_ok=True)
        for number, seed in enumerate(evaluation_seeds(cfg, cell.task, cell.episodes)):
            video = str(cell.out(work) / "videos" / f"{cell.task}_seed{seed}.mp4") if number < videos else None  # fmt: skip
            jobs.append((index, (cell.task, cell.variant, cell.embodiment, cell.policy, cell.unnorm_key, seed, video)))  # fmt: skip
    if not jobs:
        return [r for r in reports if r is not None]
    start = time.perf_counter()
    # a policy's episodes next to each other: each worker loads few policies
    jobs.sort(key=lambda job: (job[1][3], job[1][0], job[1][1], job[1][2]))
    workers = max(1, min(int(cfg["workers"]), len(jobs)))
    done: dict[int, list[dict[str, Any]]] = {}
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_eval_worker) as pool:
        futures = [(index, pool.submit(_episode_job, job)) for index, job in jobs]
        remaining = {index: sum(1 for i, _ in jobs if i == index) for index, _ in jobs}
        for index, future in futures:
            done.setdefault(index, []).append(future.result())
            remaining[index] -= 1
            if remaining[index] == 0:
                cell = cells[index]
                episodes = sorted(done[index], key=lambda e: e["seed"])
                report = EvalReport(task=cell.task, variant=cell.variant, embodiment=cell.embodiment, policy=cell.name, episodes=[EpisodeResult(**e) for e in episodes], mujoco_version=mujoco.__version__).summarize()  # fmt: skip
                report.seconds = time.perf_counter() - start
                write_json(cell.out(work) / "report.json", report.to_dict())
                with atomic_write(cell.out(work) / "report.md", "w") as handle:
                    handle.write(report.markdown())
                reports[index] = json.loads(json.dumps(report.to_dict()))  # as the cache reads it
                low, high = report.success_interval
                print(f"   {cell.name:<16} {cell.task:<13} {cell.variant:<10} {cell.embodiment:<10} success {report.success_rate:4.0%} [{low:.0%}, {high:.0%}]  progress {report.progress_rate:4.0%}  (n={len(episodes)}, {time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    return [r for r in reports if r is not None]


def summarize(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of an evaluation report the results keep."""
    episodes = report["episodes"]
    return {
        "success_rate": report["success_rate"],
        "success_interval": list(report["success_interval"]),
        "progress_rate": report["progress_rate"],
        "successes": int(sum(e["success"] for e in episodes)),
        "episodes": len(episodes),
        "seeds": [e["seed"] for e in episodes],
        "per_seed_success": [bool(e["success"]) for e in episodes],
        "per_seed_progress": [float(e["progress"]) for e in episodes],
        "diverged": int(sum(bool(e["diverged"]) for e in episodes)),
        "policy_seconds_per_episode": sum(e["policy_seconds"] for e in episodes)
        / max(len(episodes), 1),
        "videos": [e["video"] for e in episodes if e.get("video")],
    }


def add_examples_to_path() -> None:
    """Make ``import pipeline`` work from any script of this folder."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
