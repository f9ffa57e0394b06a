"""metis-sim benchmark: expert success, recording time, contract replay, evaluation, IK speed.

Measures the figures of issue 11's "Done when" list on this machine and writes
``benchmarks/results/sim.json``:

* scripted expert success over N seeds per task (physics only; rendering does not change it),
  and per out-of-distribution variant, and with SharpaWave hands;
* wall time to record 100 demonstrations of pick and place (2 workers), opening the dataset;
* replay of the recorded contract actions of 50 demonstrations through the contract and IK;
* ``metis-sim eval`` of a random and a nearest-neighbour replay policy, in process and through
  a loopback ``/act`` server;
* IK time of a 30-step two-hand chunk.

Usage: ``python benchmarks/sim.py [--seeds 100] [--demos 100] [--replays 50] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.pool
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LP_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

import metis_sim
from metis_sim.evaluate import evaluate, wilson_interval

RESULTS = Path(__file__).parent / "results" / "sim.json"


def _expert_once(args: tuple[str, int, dict]) -> tuple[int, bool, str]:
    from metis_sim.experts import expert_for, run_expert
    from metis_sim.record import _env

    task, seed, config = args
    env = _env(task, {"render": False, "terminate_on_success": False, **config})
    env.reset(seed=seed)
    info = {}
    for result, _ in run_expert(env, expert_for(env, np.random.default_rng(seed + 1_000_000))):
        info = result.info
    return seed, bool(info.get("success")), info.get("diverged", "")


def expert_success(
    task: str, seeds: int, pool: multiprocessing.pool.Pool, **config: object
) -> dict:
    jobs = [(task, s, dict(config)) for s in range(seeds)]
    started = time.perf_counter()
    results = pool.map(_expert_once, jobs, chunksize=1)
    successes = sum(ok for _, ok, _ in results)
    low, high = wilson_interval(successes, seeds)
    return {"task": task, **config, "seeds": seeds, "success": successes / seeds, "ci95": [low, high], "failed_seeds": [s for s, ok, _ in results if not ok], "diverged": sum(bool(d) for _, _, d in results), "seconds": time.perf_counter() - started}  # fmt: skip


def ik_timing(repeats: int = 10) -> dict:
    import torch

    from metis_core.registry import ENVS

    torch.set_num_threads(1)
    env = ENVS.create("bimanual_drawer", render=False)
    observation, _ = env.reset(seed=0)
    chunk = np.repeat(observation["state"][None], 30, axis=0).astype(np.float64)
    chunk[:, 33:48] += np.random.default_rng(0).normal(0, 0.003, (30, 15))
    chunk[:, 18:33] += np.random.default_rng(1).normal(0, 0.003, (30, 15))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for rig in env.rigs.values():
            env._solve_ik(rig, chunk)
        times.append(time.perf_counter() - started)
    return {"two_hand_chunk30_ik_s_median": float(np.median(times)), "max": float(np.max(times))}


def save(results: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--variant-seeds", type=int, default=10)
    parser.add_argument("--demos", type=int, default=100)
    parser.add_argument("--replays", type=int, default=50)
    parser.add_argument("--evals", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="10 seeds, 10 demos, 5 replays")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.variant_seeds, args.demos, args.replays, args.evals = 10, 3, 10, 5, 3
    import mujoco

    results: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "python": platform.python_version(), "mujoco": mujoco.__version__}}  # fmt: skip
    rows = []
    results["ik"] = ik_timing()
    print(f"IK, 30-step two-hand chunk: {results['ik']['two_hand_chunk30_ik_s_median'] * 1000:.0f} ms (median)", flush=True)  # fmt: skip
    from metis_datasets.lerobot_format import LeRobotDataset
    from metis_sim.policies import NearestNeighbourReplay
    from metis_sim.record import record
    from metis_sim.server import PolicyServer

    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "pick_place"
        report = record("pick_place", episodes=args.demos, out=dataset, workers=args.workers, progress=False)  # fmt: skip
        opened = LeRobotDataset(dataset)
        size = sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())
        results["record"] = {**report.to_dict(), "opened_episodes": len(opened.episodes), "frames_per_episode": report.frames / max(report.recorded, 1), "bytes": size}  # fmt: skip
        print(f"record {args.demos} pick_place demos ({report.frames / max(report.recorded, 1) / 30:.1f} s each): {report.seconds:.0f} s with {args.workers} workers, {size / 1e6:.1f} MB, {len(report.failed_seeds)} failed", flush=True)  # fmt: skip
        replay = evaluate("pick_place", f"schedule:{dataset}", episodes=args.replays, workers=args.workers, videos=0)  # fmt: skip
        results["contract_replay"] = {"episodes": len(replay.episodes), "success": replay.success_rate, "ci95": replay.success_interval, "progress": replay.progress_rate, "seconds": replay.seconds}  # fmt: skip
        print(f"replay of recorded contract actions through IK: {replay.success_rate:.0%} of {len(replay.episodes)}", flush=True)  # fmt: skip
        cross = evaluate("pick_place", f"schedule:{dataset}", episodes=args.evals, workers=args.workers, videos=0, embodiment="sharpawave")  # fmt: skip
        results["cross_embodiment_replay"] = {"embodiment": "sharpawave", "episodes": len(cross.episodes), "success": cross.success_rate, "progress": cross.progress_rate}  # fmt: skip
        print(f"Inspire demos replayed on SharpaWave through the contract: {cross.success_rate:.0%} of {len(cross.episodes)} (progress {cross.progress_rate:.0%})", flush=True)  # fmt: skip
        evals = {}
        for name, spec in (("random", "random"), ("nn_replay", f"replay:{dataset}")):
            r = evaluate("pick_place", spec, episodes=args.evals, workers=args.workers, videos=0)
            evals[f"{name}_in_process"] = {"success": r.success_rate, "progress": r.progress_rate, "episodes": len(r.episodes)}  # fmt: skip
        policy = NearestNeighbourReplay(dataset)
        with PolicyServer(policy) as server:
            r = evaluate("pick_place", server.url, episodes=args.evals, seeds=policy.seeds[: args.evals], videos=0)  # fmt: skip
            evals["nn_replay_http"] = {"success": r.success_rate, "progress": r.progress_rate, "episodes": len(r.episodes), "requests": server.requests}  # fmt: skip
        with PolicyServer(metis_sim.policies.RandomPolicy()) as server:
            r = evaluate("pick_place", server.url, episodes=args.evals, videos=0)
            evals["random_http"] = {"success": r.success_rate, "progress": r.progress_rate, "episodes": len(r.episodes)}  # fmt: skip
        results["eval"] = evals
        for key, value in evals.items():
            print(f"eval {key:20s} success {value['success']:.0%}  progress {value['progress']:.0%}  ({value['episodes']} episodes)", flush=True)  # fmt: skip
    save(results, args.out)
    results["experts"] = []
    pool = multiprocessing.get_context("spawn").Pool(args.workers)
    for task in metis_sim.TASKS:
        row = expert_success(task, args.seeds, pool)
        results["experts"].append(row)
        rows.append(row)
        save(results, args.out)
        print(f"expert {task:16s} {row['success']:.0%} of {row['seeds']} seeds  CI {row['ci95'][0]:.0%}-{row['ci95'][1]:.0%}  diverged {row['diverged']}  {row['seconds']:.0f} s", flush=True)  # fmt: skip
    results["variants"] = []
    for task in metis_sim.TASKS:
        for variant in ("background", "lighting", "object", "clutter"):
            row = expert_success(task, args.variant_seeds, pool, variant=variant)
            results["variants"].append(row)
            print(f"expert {task:16s} {variant:10s} {row['success']:.0%} of {row['seeds']}", flush=True)  # fmt: skip
    results["sharpawave"] = []
    for task in ("open_drawer", "close_laptop"):
        row = expert_success(task, args.variant_seeds, pool, embodiment="sharpawave")
        results["sharpawave"].append(row)
        print(f"expert {task:16s} sharpawave {row['success']:.0%} of {row['seeds']}", flush=True)
    pool.close()
    pool.join()

    results["machine"]["load_avg_end"] = os.getloadavg()
    save(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
