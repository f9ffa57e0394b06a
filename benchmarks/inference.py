"""Inference benchmark of the METIS policy: time per action chunk, side by side in one run.

Run: ``.venv/bin/python benchmarks/inference.py [--threads 1] [--repeats 20]``. Prints a table and
writes ``benchmarks/results/inference.json``.

All rows use the same tiny Prismatic backbone (``MetisConfig.tiny()``, random weights; speed
does not depend on what the weights learned) at batch 1:

* **METIS**: one image + prompt, constrained generation of ``[BOD]`` + 4 visual + 40 motion codes
  + ``[EOD]``, then the MAP action head → a (30, 48) chunk. KV cache on, and off (every step
  recomputes the whole sequence; the vision towers still run once).
* **Server**: the METIS row's call through ``metis serve``'s app on loopback (``PolicyClient``:
  json-numpy request with the 224×224 image, HTTP, the service's lock and worker thread).
* **Binning** (RT-2 / OpenVLA style): the same backbone generates one token per action value,
  30 × 48 = 1,440 tokens (constrained to 256 bin tokens), decoded by the ``binning`` tokenizer —
  KV cache on.
* **Control-loop tail**: what runs after generation for a two-hand chunk — motion
  detokenisation (``motion_rvq.decode`` of the 40 codes from the current state), the action
  head, and IK of both Inspire hands for the 30 steps (one batched solve), warm-started from the
  previous chunk's solution: re-planning every control step (the solution shifted by one frame)
  and after executing a whole chunk (its final frame).

Median and p99 over ``--repeats`` runs (after warm-up); the chunk timings run round-robin, so that
a change of the host's speed during the run affects every row alike. The KV-cache comparison is repeated with
a wider language model (256 wide, 4 layers): at the tiny config's 64-wide 2-layer LM a decoding
step costs about as much in per-call framework overhead as in arithmetic, so the cache's gain is
bounded by that overhead; the wider LM shows the gain once positions cost compute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "inference.json"
# benchmarks/tokenizers.py would shadow the `tokenizers` package that transformers imports
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]


def _stats(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(np.ceil(0.99 * len(ordered))) - 1)]
    return {"median_ms": 1e3 * statistics.median(times), "p99_ms": 1e3 * p99, "runs": len(times)}


def _interleaved(jobs: dict[str, tuple], warmup: int = 1) -> dict[str, list[float]]:
    """Time several ``label: (fn, repeats)`` jobs round-robin, so that a change of the host's
    speed during the run (shared machines drift by 2× within minutes) affects every job alike
    and the ratios between them stay fair."""
    for fn, _ in jobs.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {label: [] for label in jobs}
    rounds = max(repeats for _, repeats in jobs.values())
    for index in range(rounds):  # a job with fewer repeats runs evenly spread over the rounds
        for label, (fn, repeats) in jobs.items():
            while len(times[label]) < -(-(index + 1) * repeats // rounds):
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
    return times


@torch.no_grad()
def binning_chunk(policy, pixels, prompt, bin_ids: torch.Tensor, binning, chunk_len: int, start_state) -> np.ndarray:  # fmt: skip
    """Generate ``chunk_len × 48`` bin tokens with the KV cache and decode them."""
    backbone = policy.backbone
    images = backbone.embed_images(pixels)
    tokens = backbone.embed_tokens(prompt[None])
    embeds = torch.cat([tokens[:, :1], images, tokens[:, 1:]], 1)
    out = backbone.run_language_model(embeds, use_cache=True)
    cache, logits = out.cache, out.logits[:, -1]
    length = embeds.shape[1]
    allowed = torch.full((logits.shape[-1],), float("-inf"))
    allowed[bin_ids] = 0.0
    generated = []
    for step in range(chunk_len * 48):
        next_id = (logits + allowed).argmax(-1)
        generated.append(int(next_id))
        if step == chunk_len * 48 - 1:
            break
        mask = torch.ones(1, length + step + 1, dtype=torch.long)
        out = backbone.run_language_model(
            backbone.embed_tokens(next_id[:, None]),
            attention_mask=mask,
            position_ids=torch.tensor([[length + step]]),
            cache=cache,
            use_cache=True,
        )
        cache, logits = out.cache, out.logits[:, -1]
    lookup = {int(t): i for i, t in enumerate(bin_ids.tolist())}
    codes = torch.tensor([[lookup[t] for t in generated]])
    start = torch.as_tensor(start_state, dtype=torch.float32)[None]
    return binning.decode(codes, start=start).numpy()[0, 1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--binning-repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    from metis_core.registry import EMBODIMENTS, TOKENIZERS
    from metis_core.vla import MetisConfig, MetisPolicy
    from metis_datasets.synthetic.source_synthetic import SyntheticConfig, SyntheticSource

    episode = next(iter(SyntheticSource(SyntheticConfig(episodes=1, frames=64, height=224, width=224)).iter_episodes()))  # fmt: skip
    image, state = episode.images["ego"][0], episode.state[0]
    instruction = episode.instruction
    torch.manual_seed(0)
    policy = MetisPolicy(MetisConfig.tiny(norm_mode="identity")).eval()
    # a fitted motion tokenizer so that detokenisation runs (weights need no training for timing)
    from metis_tokenizers import generate_motion_windows

    windows = generate_motion_windows(512, seed=0)
    motion = policy.motion_tokenizer
    motion.fit_normalization(windows.actions, windows.hand_mask)
    motion.train()
    with torch.no_grad():  # k-means initialises the codebook (what the trainer's first step does)
        motion.reconstruct(windows.actions[:256], windows.hand_mask[:256], update_codebook=True)
    motion.eval()

    # The same comparison with a wider language model (256 wide, 4 layers; towers unchanged),
    # where per-position compute rather than per-call overhead sets the cost of a step.
    from metis_core.vla.backbones.prismatic import PrismaticConfig

    wider_llm = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 8}  # fmt: skip
    base = PrismaticConfig.from_preset("tiny")
    wider = MetisPolicy(
        MetisConfig.tiny(
            norm_mode="identity",
            backbone_config=base.replace(llm={**base.llm, **wider_llm}).to_dict(),
        )
    ).eval()

    pixels = policy.backbone.preprocess(torch.from_numpy(image[None]))
    prompt = policy.prompt_ids(instruction)
    chunk = policy.config.chunk_len
    # the current state + 30 future actions: 30 × 48 = 1,440 bin tokens
    binning = TOKENIZERS.create("binning", window_len=chunk + 1)
    actions = torch.as_tensor(np.asarray(episode.action), dtype=torch.float32)
    masks = torch.as_tensor(np.asarray(episode.hand_mask))
    spans = range(actions.shape[0] - chunk - 1)
    binning.fit(
        torch.stack([actions[i : i + chunk + 1] for i in spans]),
        torch.stack([masks[i : i + chunk + 1].all(0) for i in spans]),
    )
    bin_ids = torch.arange(4, 4 + 256)  # the tiny tokenizer's 256 byte tokens stand for the bins

    labels = {
        "on": "METIS (44 codes), KV cache on",
        "off": "METIS (44 codes), KV cache off",
        "wide_on": "METIS, 256-wide 4-layer LM, KV cache on",
        "wide_off": "METIS, 256-wide 4-layer LM, KV cache off",
        "binning": "Binning (1,440 tokens), KV cache on",
    }

    def metis(model, cache: bool):
        return lambda: model.predict_action(image, instruction, state, use_cache=cache, reason=False)  # fmt: skip

    def bins():
        return binning_chunk(policy, pixels, prompt, bin_ids, binning, chunk, state)

    wide_repeats = max(args.repeats // 2, 3)
    jobs = {
        labels["on"]: (metis(policy, True), args.repeats),
        labels["off"]: (metis(policy, False), args.repeats),
        labels["wide_on"]: (metis(wider, True), wide_repeats),
        labels["wide_off"]: (metis(wider, False), wide_repeats),
        labels["binning"]: (bins, args.binning_repeats),
    }
    # The policy server on loopback: the same call through POST /act (json-numpy, HTTP, the
    # service's lock and worker thread) against the in-process call it makes.
    server = None
    try:
        from metis_core.serve import PolicyClient, ServerConfig
        from metis_core.serve.app import BackgroundServer

        server = BackgroundServer(policy, ServerConfig(port=0, predict_options={"reason": False})).start()  # fmt: skip
        client = PolicyClient(server.url)
        labels["served"] = "METIS through the server (loopback POST /act)"
        jobs[labels["served"]] = (lambda: client.act(image, instruction, state), args.repeats)
    except ImportError:
        print("metis-core[serve] is not installed: no server round-trip row")
    rows: dict[str, dict] = {}
    try:
        for label, times in _interleaved(jobs).items():
            rows[label] = {**_stats(times), "tokens": chunk * 48 if label == labels["binning"] else 45}  # fmt: skip
    finally:
        if server is not None:
            server.stop()

    # the control-loop tail at batch 1
    result = policy.predict_action(image, instruction, state, reason=False)
    gen_states = torch.randn(1, 44, policy.backbone.hidden_size)
    image_states = torch.randn(1, policy.backbone.num_image_tokens, policy.backbone.hidden_size)
    proprio = torch.zeros(1, 48)
    codes = torch.as_tensor(result.motion_codes)[None]
    start_state = torch.as_tensor(state, dtype=torch.float32)[None]
    hands = {side: EMBODIMENTS.create("inspire", side=side) for side in ("left", "right")}
    # a reachable two-hand trajectory: Inspire FK of smooth joint motion through random poses
    gen = torch.Generator().manual_seed(0)
    keyframes = 10
    tips: dict[str, torch.Tensor] = {}
    for side, hand in hands.items():
        poses = hand.sample_joints(keyframes, generator=gen)
        u = torch.linspace(0, 1, chunk + 1, dtype=torch.float64)[:-1, None]
        path = torch.cat([poses[i] + u * (poses[i + 1] - poses[i]) for i in range(keyframes - 1)])
        tips[side] = hand.forward_kinematics(path).double()
    frames = tips["left"].shape[0]
    pair = type(hands["right"]).inverse_kinematics_pair

    def tail_runs(replan_every: int | None, runs: int) -> list[dict[str, float]]:
        """``replan_every=1``: the policy re-plans every control step (chunk k covers frames
        k..k+29, warm start = the last solution shifted by one frame); ``None``: the whole chunk
        is executed (chunk k covers frames 30k.., warm start = the last solution's final frame)."""
        warm: dict[str, torch.Tensor | None] = {"left": None, "right": None}
        samples = []
        for k in range(runs + 3):
            begin = (k * (replan_every or chunk)) % (frames - chunk)
            parts: dict[str, float] = {}
            start = time.perf_counter()
            t = time.perf_counter()
            motion.decode(codes, start=start_state)
            parts["detokenize"] = time.perf_counter() - t
            t = time.perf_counter()
            with torch.no_grad():
                policy.action_head(gen_states, proprio, image_states=image_states)
            parts["action_head"] = time.perf_counter() - t
            t = time.perf_counter()
            left, right = pair(
                hands["left"], hands["right"],
                tips["left"][begin : begin + chunk], tips["right"][begin : begin + chunk],
                left_initial=warm["left"], right_initial=warm["right"],
            )  # fmt: skip
            parts["ik"] = time.perf_counter() - t
            parts["total"] = time.perf_counter() - start
            parts["ik_max_error_mm"] = 1e3 * float(max(left.fingertip_error.max(), right.fingertip_error.max()))  # fmt: skip
            shift = replan_every or chunk
            index = torch.clamp(torch.arange(chunk) + shift, max=chunk - 1)
            warm = {"left": left.joints[index], "right": right.joints[index]}
            if k >= 3:  # warm-up
                samples.append(parts)
        return samples

    runs = max(args.repeats * 5, 60)
    ik_error = 0.0
    for replan, label in ((1, "re-plan every step"), (None, "whole chunk executed")):
        samples = tail_runs(replan, runs)
        for part in ("detokenize", "action_head", "ik", "total"):
            rows[f"Tail ({label}): {part}"] = _stats([s[part] for s in samples])
        ik_error = max(ik_error, max(s["ik_max_error_mm"] for s in samples))

    metis = rows["METIS (44 codes), KV cache on"]["median_ms"]
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_1min": os.getloadavg()[0],
        },
        "torch": torch.__version__,
        "rows": rows,
        "speedup_vs_binning": rows["Binning (1,440 tokens), KV cache on"]["median_ms"] / metis,
        "speedup_kv_cache": rows["METIS (44 codes), KV cache off"]["median_ms"] / metis,
        "speedup_kv_cache_wider_lm": rows["METIS, 256-wide 4-layer LM, KV cache off"]["median_ms"]
        / rows["METIS, 256-wide 4-layer LM, KV cache on"]["median_ms"],
        "server_overhead_ms": (
            rows[labels["served"]]["median_ms"] - metis if "served" in labels else None
        ),
        "tail_ik_worst_fingertip_error_mm": ik_error,
        "targets": {"metis_vs_binning": ">= 20x", "kv_cache": ">= 3x", "tail_median_ms": "<= 10"},
    }
    print(f"{'':52s} {'median ms':>10s} {'p99 ms':>10s} {'runs':>5s}")
    for label, row in rows.items():
        print(f"{label:52s} {row['median_ms']:10.2f} {row['p99_ms']:10.2f} {row['runs']:5d}")
    print(f"METIS vs binning: {report['speedup_vs_binning']:.1f}x faster (target >= 20x)")
    print(f"KV cache on vs off: {report['speedup_kv_cache']:.1f}x faster (target >= 3x); with the 256-wide 4-layer LM {report['speedup_kv_cache_wider_lm']:.1f}x")  # fmt: skip
    if report["server_overhead_ms"] is not None:
        print(f"server round trip adds {report['server_overhead_ms']:.1f} ms (median) to the in-process chunk")  # fmt: skip
    tail_ms = rows["Tail (re-plan every step): total"]["median_ms"]
    whole_ms = rows["Tail (whole chunk executed): total"]["median_ms"]
    print(f"control-loop tail: {tail_ms:.2f} ms median re-planning every step (target <= 10 ms), {whole_ms:.2f} ms after a whole chunk; IK worst fingertip error {ik_error:.3f} mm; load {report['machine']['load_1min']:.2f}")  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(RESULTS)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
