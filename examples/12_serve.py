"""Step 12: serve the trained policy and drive the simulator through the server.

Starts ``metis serve`` on the post-trained METIS policy (``POST /act``, json-numpy arrays — a
drop-in for the authors' server and OpenVLA-OFT-style clients) in its own process, then runs
the closed-loop evaluation with a robot-side client: every control cycle sends the ego image,
the instruction and the 48-D state with a per-episode ``session_id`` (the server keeps the
subtask between calls) and executes the returned chunk. The greedy policy is deterministic, so
the outcome of each seed must equal the in-process evaluation of step 7; the report gives both
and the latency of a request (round trip and server-side stages).

    python examples/12_serve.py                       # toy: about 1 minute on 2 cores
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
from pipeline import Work, banner, evaluation_seeds, parse_args


class ServedPolicy:
    """A robot-side loop's view of the server: one session per episode."""

    def __init__(self, url: str, unnorm_key: str | None) -> None:
        from metis_core.serve.client import PolicyClient

        self.client = PolicyClient(url, session_id=uuid.uuid4().hex)
        self.unnorm_key = unnorm_key
        self.round_trip_ms: list[float] = []
        self.server_ms: list[float] = []

    def reset(self, *, seed: int | None = None) -> None:
        self.client.reset()

    def predict_action(self, images: Any, instruction: str, state: Any) -> np.ndarray:
        chunk = self.client.act(images, instruction, state, unnorm_key=self.unnorm_key)
        self.round_trip_ms.append(self.client.last.round_trip_ms)
        stages = self.client.last.stages_ms
        self.server_ms.append(stages.get("total", max(stages.values(), default=float("nan"))))
        return np.asarray(chunk, dtype=np.float32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    args = parse_args(__doc__)
    cfg, work = args.cfg, Work(args.work)
    banner("12", "serve the policy (POST /act) and drive the simulator through it")
    from metis_core.serve.client import PolicyClient
    from metis_sim.evaluate import evaluate

    policy_dir = work.runs / "post_metis" / "final"
    port = int(cfg["serve"].get("port") or 0) or free_port()
    url = f"http://127.0.0.1:{port}"
    threads = str(max(int(cfg.get("threads") or 1), 1))
    log = open(work.root / "server.log", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    server = subprocess.Popen([sys.executable, "-m", "metis_core", "serve", str(policy_dir), "--port", str(port), "--threads", threads, "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    results: dict[str, Any] = {}
    try:
        deadline = time.time() + 300
        while True:
            try:
                health = PolicyClient(url, timeout_s=2).health()
                break
            except (ConnectionError, OSError):
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the policy server did not start; see {work.root / 'server.log'}") from None  # fmt: skip
                time.sleep(0.5)
        print(f"   server up at {url} ({health.get('policy', health.get('status'))})", flush=True)
        episodes = int(cfg["serve"]["episodes"])
        in_process = work.result("07_evaluate")["results"]["post_metis"]
        for task in cfg["downstream"]["tasks"]:
            keys_file = policy_dir / "normalization.json"
            import json

            several = len(json.loads(keys_file.read_text(encoding="utf-8"))["stats"]) > 1
            policy = ServedPolicy(url, f"down_{task}" if several else None)
            seeds = evaluation_seeds(cfg, task, episodes)
            report = evaluate(task, policy, episodes=episodes, seeds=seeds, out=work.eval / "served" / task, videos=0, policy_name=f"{url}/act")  # fmt: skip
            reference = in_process[task]
            same = [bool(e.success) for e in report.episodes] == [bool(s) for s in _per_seed(work, task, seeds)]  # fmt: skip
            results[task] = {
                "success_rate": report.success_rate,
                "success_interval": list(report.success_interval),
                "progress_rate": report.progress_rate,
                "episodes": len(report.episodes),
                "seeds": seeds,
                "in_process_success_rate_all_seeds": reference["success_rate"],
                "same_outcome_per_seed_as_in_process": same,
                "requests": len(policy.round_trip_ms),
                "round_trip_ms_median": float(np.median(policy.round_trip_ms)),
                "round_trip_ms_p95": float(np.percentile(policy.round_trip_ms, 95)),
                "server_ms_median": float(np.median(policy.server_ms)),
            }
            print(f"   {task}: success {report.success_rate:.0%} over {len(report.episodes)} served episodes (same outcome per seed as in process: {same}); request round trip median {results[task]['round_trip_ms_median']:.0f} ms, p95 {results[task]['round_trip_ms_p95']:.0f} ms", flush=True)  # fmt: skip
        results["_metrics"] = PolicyClient(url).metrics()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    work.save_result("12_serve", {"url": url, "results": results})


def _per_seed(work: Work, task: str, seeds: list[int]) -> list[bool]:
    """Step 7's per-seed outcomes of ``post_metis`` on ``task`` for ``seeds``."""
    import json

    folder = next((work.eval / "post_metis").glob(f"{task}-default-inspire"))
    episodes = {e["seed"]: e["success"] for e in json.loads((folder / "report.json").read_text(encoding="utf-8"))["episodes"]}  # fmt: skip
    return [bool(episodes[s]) for s in seeds]


if __name__ == "__main__":
    main()
