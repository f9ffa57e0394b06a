"""Kinematics benchmark: FK throughput, batched IK vs dex-retargeting, fingertip errors.

Run: ``.venv/bin/python benchmarks/kinematics.py [--threads 1] [--repeats 30]``. Prints tables
and writes ``benchmarks/results/kinematics.json``.

* FK throughput at batch 1, 30 and 1024 for ``inspire`` and ``sharpawave`` (ours: the
  pytorch-kinematics chain plus couplings and calibration), next to pytorch-kinematics' own
  ``Chain.forward_kinematics`` (all links as ``Transform3d``) for reference.
* IK for a 30-step two-hand Inspire chunk (60 frames): our batched Levenberg–Marquardt solver
  on all frames at once, warm-started from the chunk's start state, against dex-retargeting's
  position optimiser frame by frame (each frame warm-started from the previous one), at several
  NLopt tolerances; the speed-up is taken against the fastest dex-retargeting setting that
  reaches our fingertip error level.
* FK → IK → FK fingertip errors (median, p99, worst) over 300 random in-limit poses, default
  config, for every built-in hand and the plugin template (``tendon_hand``). Target: worst
  <= 1 mm.
* A 30-step two-hand chunk, warm-started from the previous chunk's solution: a policy re-plans
  every control step, so chunk ``k`` covers frames ``k .. k+29`` and starts from chunk
  ``k-1``'s solution shifted by one frame. Median and p90 over ``--repeats`` chunks of random
  smooth motions, one hand per call and both hands in one batch
  (``inverse_kinematics_two_hands``). Target: <= 10 ms median on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from metis_core.registry import EMBODIMENTS
from metis_embodiments.urdf_hand import inverse_kinematics_two_hands

HANDS = ("inspire", "fourier", "sharpawave", "leap", "human_mano", "human_manus", "tendon_hand")
TEMPLATE_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugin_template" / "src"


def _register_template() -> None:
    """Make the plugin template's hand available without installing it."""
    if "tendon_hand" in EMBODIMENTS:
        return
    sys.path.insert(0, str(TEMPLATE_SRC))
    from metis_tendon_hand.tendon_hand.embodiment_tendon_hand import TendonHand

    EMBODIMENTS.register(TendonHand)


RESULTS = Path(__file__).parent / "results" / "kinematics.json"


def _timed(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def fk_throughput(repeats: int) -> list[dict]:
    """Median time per FK call and configurations per second."""
    rows = []
    for name in ("inspire", "sharpawave"):
        hand = EMBODIMENTS.create(name)
        chain = hand.kinematics.chain(torch.float32)
        for batch in (1, 30, 1024):
            joints = hand.sample_joints(batch, generator=torch.Generator().manual_seed(0)).float()
            urdf_joints = hand.expand_joints(joints)
            with torch.no_grad():
                ours = statistics.median(_timed(lambda: hand.forward_kinematics(joints), repeats))  # noqa: B023
                pk_all = statistics.median(
                    _timed(lambda: chain.forward_kinematics(urdf_joints), repeats)  # noqa: B023
                )
            rows.append(
                {
                    "hand": name,
                    "batch": batch,
                    "ours_ms": ours * 1e3,
                    "ours_configs_per_s": batch / ours,
                    "pk_all_links_ms": pk_all * 1e3,
                }
            )
    return rows


def _chunk(hand, steps: int, seed: int) -> torch.Tensor:
    """A smooth ``(steps, J)`` joint trajectory (cosine blend between two random poses)."""
    generator = torch.Generator().manual_seed(seed)
    start, end = hand.sample_joints(2, generator=generator)
    phase = 0.5 - 0.5 * torch.cos(torch.linspace(0, torch.pi, steps, dtype=torch.float64))
    return start + (end - start) * phase[:, None]


def ik_chunk(repeats: int, steps: int = 30) -> dict:
    """Our batched IK vs dex-retargeting on a two-hand chunk of ``steps`` frames."""
    hands = {side: EMBODIMENTS.create("inspire", side=side) for side in ("right", "left")}
    truth = {side: _chunk(hand, steps, seed=i) for i, (side, hand) in enumerate(hands.items())}
    targets = {side: hands[side].forward_kinematics(truth[side]) for side in hands}
    starts = {side: truth[side][0] for side in hands}

    # Ours: both hands' 30 frames in one call per hand (they are different kinematic trees).
    def ours() -> dict:
        return {
            side: hands[side].inverse_kinematics(targets[side], initial_joints=starts[side])
            for side in hands
        }

    ours_times = _timed(ours, repeats)
    ours_result = ours()
    ours_errors = torch.cat([r.fingertip_error.reshape(-1) for r in ours_result.values()])
    result = {
        "frames": 2 * steps,
        "ours": {
            "median_ms": statistics.median(ours_times) * 1e3,
            "p90_ms": sorted(ours_times)[int(0.9 * len(ours_times))] * 1e3,
            "median_error_mm": float(ours_errors.median()) * 1e3,
            "max_error_mm": float(ours_errors.max()) * 1e3,
            "iterations": max(r.iterations for r in ours_result.values()),
        },
        "dex_retargeting": [],
    }
    # dex-retargeting: sequential, per frame; a few NLopt tolerances (its default is 1e-5).
    for ftol in (1e-5, 1e-7, 1e-9, 1e-11):
        dex_hands = {
            side: EMBODIMENTS.create(
                "inspire", side=side, ik_backend="dex_retargeting", dex_ftol_abs=ftol
            )
            for side in hands
        }

        def dex(dex_hands=dex_hands) -> dict:
            return {
                side: dex_hands[side].inverse_kinematics(targets[side], initial_joints=starts[side])
                for side in hands
            }

        dex_times = _timed(dex, max(3, repeats // 10), warmup=1)
        dex_result = dex()
        errors = torch.cat([r.fingertip_error.reshape(-1) for r in dex_result.values()])
        result["dex_retargeting"].append(
            {
                "ftol_abs": ftol,
                "median_ms": statistics.median(dex_times) * 1e3,
                "median_error_mm": float(errors.median()) * 1e3,
                "max_error_mm": float(errors.max()) * 1e3,
            }
        )
    # Equal error: the fastest dex setting whose worst fingertip is within our worst error
    # (or within our solver's 0.01 mm tolerance, whichever is larger).
    level = max(result["ours"]["max_error_mm"], 0.01)
    matching = [d for d in result["dex_retargeting"] if d["max_error_mm"] <= level]
    if matching:
        best = min(matching, key=lambda d: d["median_ms"])
        result["equal_error"] = {
            "error_level_mm": level,
            "dex_ftol_abs": best["ftol_abs"],
            "speedup": best["median_ms"] / result["ours"]["median_ms"],
        }
    else:
        closest = min(result["dex_retargeting"], key=lambda d: d["max_error_mm"])
        result["equal_error"] = {
            "error_level_mm": level,
            "dex_ftol_abs": None,
            "note": "no dex-retargeting setting reached our error; speed-up vs the most accurate",
            "speedup": closest["median_ms"] / result["ours"]["median_ms"],
        }
    return result


def round_trip(samples: int = 300) -> list[dict]:
    """FK → IK → FK fingertip errors (mm) for random joints inside the limits, every hand."""
    rows = []
    for name in HANDS:
        for side in ("right", "left"):
            hand = EMBODIMENTS.create(name, side=side)
            joints = hand.sample_joints(samples, generator=torch.Generator().manual_seed(7))
            target = hand.forward_kinematics(joints)
            start = time.perf_counter()
            result = hand.inverse_kinematics(target)
            elapsed = time.perf_counter() - start
            error = (hand.forward_kinematics(result.joints.double()) - target).norm(dim=-1) * 1e3
            rows.append(
                {
                    "hand": name,
                    "side": side,
                    "joints": hand.num_joints,
                    "samples": samples,
                    "median_error_mm": float(error.median()),
                    "p99_error_mm": float(error.quantile(0.99)),
                    "max_error_mm": float(error.max()),
                    "ik_ms": elapsed * 1e3,
                }
            )
    return rows


def chunk_timing(repeats: int, steps: int = 30) -> list[dict]:
    """Warm-started 30-step two-hand chunks: per-hand calls and one batched call."""
    rows = []
    for name in HANDS:
        left, right = EMBODIMENTS.create(name, side="left"), EMBODIMENTS.create(name, side="right")
        chunks = []
        for repeat in range(repeats + 3):
            per_hand = []
            for h, hand in enumerate((left, right)):
                truth = _chunk(hand, steps + 1, seed=100 + 2 * repeat + h)
                target = hand.forward_kinematics(truth)
                previous = hand.inverse_kinematics(target[:steps], initial_joints=truth[0]).joints
                per_hand.append((target[1:], torch.cat([previous[1:], previous[-1:]]).double()))
            chunks.append(per_hand)
        for mode in ("per_hand", "batched"):
            times, worst = [], 0.0
            for index, ((t_left, w_left), (t_right, w_right)) in enumerate(chunks):
                start = time.perf_counter()
                if mode == "per_hand":
                    r_left = left.inverse_kinematics(t_left, initial_joints=w_left)
                    r_right = right.inverse_kinematics(t_right, initial_joints=w_right)
                else:
                    r_left, r_right = inverse_kinematics_two_hands(
                        left, right, t_left, t_right, left_initial=w_left, right_initial=w_right
                    )
                elapsed = time.perf_counter() - start
                if index >= 3:  # warm-up
                    times.append(elapsed)
                for hand, result, target in ((left, r_left, t_left), (right, r_right, t_right)):
                    reached = hand.forward_kinematics(result.joints.double())
                    worst = max(worst, float((reached - target).norm(dim=-1).max()))
            ordered = sorted(times)
            rows.append(
                {
                    "hand": name,
                    "mode": mode,
                    "frames": 2 * steps,
                    "median_ms": statistics.median(times) * 1e3,
                    "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1e3,
                    "max_error_mm": worst * 1e3,
                }
            )
    return rows


def main() -> None:
    """Run everything, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=30, help="timed repetitions")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _register_template()

    fk = fk_throughput(args.repeats)
    ik = ik_chunk(args.repeats)
    rt = round_trip()
    chunks = chunk_timing(args.repeats)

    print(f"\nFK throughput (torch threads = {args.threads})")
    print(f"{'hand':<11}{'batch':>6}{'ours ms':>10}{'configs/s':>12}{'pk all links ms':>17}")
    for row in fk:
        print(f"{row['hand']:<11}{row['batch']:>6}{row['ours_ms']:>10.3f}{row['ours_configs_per_s']:>12.0f}{row['pk_all_links_ms']:>17.3f}")  # fmt: skip
    print(f"\nIK, 30-step two-hand Inspire chunk ({ik['frames']} frames)")
    print(f"{'solver':<28}{'median ms':>10}{'median err mm':>15}{'max err mm':>12}")
    o = ik["ours"]
    print(f"{'ours (batched LM)':<28}{o['median_ms']:>10.2f}{o['median_error_mm']:>15.5f}{o['max_error_mm']:>12.5f}")  # fmt: skip
    for d in ik["dex_retargeting"]:
        label = f"dex-retargeting ftol={d['ftol_abs']:.0e}"
        print(f"{label:<28}{d['median_ms']:>10.2f}{d['median_error_mm']:>15.5f}{d['max_error_mm']:>12.5f}")  # fmt: skip
    eq = ik["equal_error"]
    print(f"speed-up at equal error (<= {eq['error_level_mm']:.4f} mm): {eq['speedup']:.1f}x (dex ftol {eq['dex_ftol_abs']})")  # fmt: skip
    print(
        "\nFK -> IK -> FK fingertip error, 300 random poses inside the limits (target: max <= 1 mm)"
    )
    print(
        f"{'hand':<13}{'side':<7}{'J':>3}{'median mm':>11}{'p99 mm':>10}{'max mm':>10}{'IK ms':>9}"
    )
    for row in rt:
        print(f"{row['hand']:<13}{row['side']:<7}{row['joints']:>3}{row['median_error_mm']:>11.6f}{row['p99_error_mm']:>10.5f}{row['max_error_mm']:>10.5f}{row['ik_ms']:>9.1f}")  # fmt: skip
    print(
        f"\n30-step two-hand chunk, warm-started (target: median <= 10 ms, {args.threads} thread)"
    )
    print(f"{'hand':<13}{'mode':<10}{'median ms':>10}{'p90 ms':>9}{'max err mm':>12}")
    for row in chunks:
        print(f"{row['hand']:<13}{row['mode']:<10}{row['median_ms']:>10.2f}{row['p90_ms']:>9.2f}{row['max_error_mm']:>12.5f}")  # fmt: skip

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average": list(os.getloadavg()),
            "cpus": os.cpu_count(),
        },
        "fk_throughput": fk,
        "ik_chunk": ik,
        "round_trip": rt,
        "chunk_timing": chunks,
    }
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(RESULTS)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
