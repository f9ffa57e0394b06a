"""The reproduction scripts' shared plumbing (examples/pipeline.py) and report (examples/report.py).

The chain itself runs end to end in ``make demo`` (CI); here: configs and overrides, the seeds
every policy shares, the training configs the steps build, and the report's statistics and
sections on results of known value.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
pipeline = importlib.import_module("pipeline")
report = importlib.import_module("report")


def test_configs_load_and_overrides_are_checked() -> None:
    toy = pipeline.load_config("toy")
    paper = pipeline.load_config("paper")
    for cfg in (toy, paper):
        assert {"mixture", "downstream", "tokenizers", "policy", "pretrain", "posttrain", "evaluation"} <= set(cfg)  # fmt: skip
    assert paper["downstream"]["episodes"] == 100
    assert paper["evaluation"]["episodes"] == 20
    assert paper["pretrain"]["batch"] == 768
    assert paper["pretrain"]["lr"] == pytest.approx(2e-5)
    changed = pipeline.load_config("toy", ["posttrain.steps=7", "evaluation.variants=[lighting]", "policy.text_tokenizer=/x"])  # fmt: skip
    assert changed["posttrain"]["steps"] == 7
    assert changed["evaluation"]["variants"] == ["lighting"]
    assert changed["policy"]["text_tokenizer"] == "/x"
    with pytest.raises(KeyError, match="no key 'posttrain.stepz'"):
        pipeline.load_config("toy", ["posttrain.stepz=7"])
    with pytest.raises(KeyError, match="no section"):
        pipeline.load_config("toy", ["nothing.here=1"])
    with pytest.raises(ValueError, match="key.path=value"):
        pipeline.load_config("toy", ["posttrain.steps"])
    with pytest.raises(FileNotFoundError, match="toy"):
        pipeline.load_config("toyy")


@pytest.mark.parametrize("name", ["toy", "paper"])
def test_evaluation_seeds_are_shared_and_never_demonstration_seeds(name: str) -> None:
    cfg = pipeline.load_config(name)
    episodes = int(cfg["evaluation"]["episodes"])
    demo = set(range(int(cfg["downstream"]["episodes"])))
    demo |= set(range(pipeline.SHARPA_SEEDS, pipeline.SHARPA_SEEDS + int(cfg["downstream"]["sharpawave_episodes"])))  # fmt: skip
    for index in range(len(cfg["mixture"]["pretrain_tasks"])):
        first = pipeline.PRETRAIN_SEEDS + 1000 * index
        demo |= set(range(first, first + int(cfg["mixture"]["human_episodes"])))
        demo |= set(range(first + 500, first + 500 + int(cfg["mixture"]["robot_episodes"])))
    seen: set[int] = set()
    for task in cfg["downstream"]["tasks"]:
        seeds = pipeline.evaluation_seeds(cfg, task, episodes)
        assert seeds == pipeline.evaluation_seeds(cfg, task, episodes)  # the same for every policy
        assert len(set(seeds)) == episodes
        assert not set(seeds) & demo
        assert not set(seeds) & seen  # tasks do not share seeds
        seen |= set(seeds)
    # fewer episodes (out-of-distribution, serving) are the first seeds of the same list
    task = cfg["downstream"]["tasks"][0]
    assert pipeline.evaluation_seeds(cfg, task, 3) == pipeline.evaluation_seeds(cfg, task, episodes)[:3]  # fmt: skip


def test_training_overrides_build_the_configs_the_steps_need(tmp_path: Path) -> None:
    from metis_core.vla.training import load_config

    cfg = pipeline.load_config("toy")
    data = {"down_close_laptop": tmp_path / "a", "down_open_drawer": tmp_path / "b"}
    recipe, items = pipeline.training_overrides(cfg, "pretrain", datasets=data, motion=tmp_path / "m", visual=tmp_path / "v", model={"actions_from": "motion_tokens", "action_loss_weight": 0.0}, extra={"data.weights.down_close_laptop": 0.25})  # fmt: skip
    assert recipe == "pretrain_tiny"
    config = load_config(recipe, items)
    assert config.run.max_steps == cfg["pretrain"]["steps"]
    assert config.run.global_batch == cfg["pretrain"]["batch"]
    assert config.optim.lr == pytest.approx(cfg["pretrain"]["lr"])
    assert config.model.config["actions_from"] == "motion_tokens"
    assert config.model.config["action_loss_weight"] == 0.0
    backbone = config.model.config["backbone_config"]
    assert backbone["image_size"] == backbone["dino"]["image_size"] == backbone["siglip"]["image_size"] == 112  # fmt: skip
    assert config.data.datasets == {k: str(v) for k, v in data.items()}
    assert config.data.weights == {"down_close_laptop": 0.25}
    recipe, items = pipeline.training_overrides(cfg, "posttrain", datasets=data, init_from=tmp_path / "pre", extra={"model.dynamics_tokens": False, "data.demo_fraction": 0.1})  # fmt: skip
    config = load_config(recipe, items)
    assert recipe == "posttrain_tiny"
    assert config.model.init_from == str(tmp_path / "pre")
    assert config.model.dynamics_tokens is False
    assert config.data.demo_fraction == pytest.approx(0.1)
    assert config.lora is not None
    assert config.lora["r"] == 32


def _result(successes: int, episodes: int, progress: float) -> dict:
    from metis_sim.evaluate import wilson_interval

    return {"success_rate": successes / episodes, "success_interval": list(wilson_interval(successes, episodes)), "progress_rate": progress, "successes": successes, "episodes": episodes, "seeds": list(range(episodes)), "videos": []}  # fmt: skip


def test_pooled_rates_and_verdicts() -> None:
    from metis_sim.evaluate import wilson_interval

    pooled = report.pooled({"a": _result(3, 8, 0.5), "b": _result(1, 4, 0.25)})
    assert pooled["success_rate"] == pytest.approx(4 / 12)
    assert pooled["progress_rate"] == pytest.approx((0.5 * 8 + 0.25 * 4) / 12)
    assert pooled["success_interval"] == pytest.approx(list(wilson_interval(4, 12)))
    assert report.verdict(_result(19, 20, 0.97), _result(2, 20, 0.3)).startswith("**reproduced**")
    assert report.verdict(_result(4, 8, 0.6), _result(3, 8, 0.5)).startswith("same direction")
    assert report.verdict(_result(0, 8, 0.4), _result(0, 8, 0.2)).startswith("same direction")
    assert report.verdict(_result(2, 8, 0.4), _result(5, 8, 0.5)).startswith("opposite direction, not significant")  # fmt: skip
    assert report.verdict(_result(1, 20, 0.2), _result(18, 20, 0.9)).startswith("**not reproduced: the opposite**")  # fmt: skip
    assert report.verdict(_result(0, 8, 0.0), _result(0, 8, 0.0)).startswith("no difference")
    assert report.cell(_result(3, 8, 0.5)) == "38% [14%–69%] · 50% (n=8)"


def _png(path: Path) -> str:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 16, 3), 200, dtype=np.uint8)).save(path)
    return str(path)


def test_report_holds_every_table_with_the_numbers_of_the_results(tmp_path: Path) -> None:
    cfg = pipeline.load_config("toy")
    work = pipeline.Work(tmp_path / "work")
    tasks = cfg["downstream"]["tasks"]
    rng = np.random.default_rng(0)

    def per_task() -> dict:
        return {t: _result(int(rng.integers(0, 9)), 8, float(rng.uniform())) for t in tasks}

    row = {"dataset": "human_lift_cube", "trajectories": 8, "frames": 900, "human_pct": 100.0, "robot_pct": 0.0, "subtask": True}  # fmt: skip
    work.save_result("01_build_mixture", {"datasets": {}, "tables": {"pretrain": [row]}, "strips": {"human_lift_cube": _png(tmp_path / "s.png")}})  # fmt: skip
    tokenizer_row = {"tokens_per_window": 40, "wrist_position_mm": 1.5, "wrist_rotation_deg": 0.7, "fingertip_mm": 2.25, "nmse": 0.01, "windows": 100}  # fmt: skip
    work.save_result("02_motion_tokenizer", {"held_out": {"motion_rvq": tokenizer_row, "binning": {**tokenizer_row, "tokens_per_window": 240}}, "training_windows": 1000, "plot": _png(tmp_path / "m.png")})  # fmt: skip
    work.save_result("03_visual_tokenizer", {"held_out": {"pairs": 50, "cosine_predicted": 0.9, "cosine_baseline": 0.8, "cosine_gap_closed": 0.5, "mse_reduction": 0.3, "codes_used": 12, "usage": 0.75, "perplexity": 9.0}, "plot": _png(tmp_path / "v.png")})  # fmt: skip
    main = {"post_metis": per_task(), "post_nodyn": per_task(), "post_binned": per_task()}
    work.save_result("07_evaluate", {"policies": {"post_metis": "METIS", "post_nodyn": "chunked regression (no tokens)", "post_binned": "binned-action VLA"}, "results": main})  # fmt: skip
    ablations = {"post_scratch": per_task(), "post_human": per_task(), "post_metis": main["post_metis"], "post_nodyn": main["post_nodyn"]}  # fmt: skip
    work.save_result("08_ablations", {"tables": {"table4": {"post_scratch": "METIS-NoPretrain", "post_human": "METIS-HumanPretrain", "post_metis": "METIS-FullPretrain"}, "table5": {"post_nodyn": "METIS w/o motion-aware dynamics", "post_metis": "METIS w/ motion-aware dynamics"}}, "runs": {}, "results": ablations})  # fmt: skip
    work.save_result("09_sample_efficiency", {"fractions": [0.1, 1.0], "runs": {}, "results": {"0.1": {"tasks": per_task()}, "1.0": {"tasks": main["post_metis"]}}})  # fmt: skip
    work.save_result("10_ood", {"results": {v: per_task() for v in ("default", *cfg["evaluation"]["variants"])}})  # fmt: skip
    work.save_result("11_cross_embodiment", {"runs": {}, "results": {n: {"open_drawer": _result(1, 4, 0.5)} for n in ("post_metis", "sharpa_metis", "sharpa_scratch")}})  # fmt: skip
    served = {"success_rate": 0.5, "success_interval": [0.1, 0.9], "progress_rate": 0.5, "episodes": 2, "same_outcome_per_seed_as_in_process": True, "requests": 20, "round_trip_ms_median": 80.0, "round_trip_ms_p95": 120.0, "server_ms_median": 70.0}  # fmt: skip
    work.save_result("12_serve", {"results": {t: served for t in tasks}})
    path = report.build(work, cfg)
    text = path.read_text(encoding="utf-8")
    for heading in ("Table 1 analogue", "Motion tokenizer", "Visual-dynamics tokenizer", "Table 2 analogue", "Table 4", "Table 5", "Fig. 6 analogue", "Table 3 analogue", "Fig. 7 analogue", "Serving", "effects this run reproduces"):  # fmt: skip
        assert heading in text, heading
    # our numbers are those of the results; the paper's are labelled as the paper's
    metis = main["post_metis"][tasks[0]]
    assert f"| METIS (ours) | {report.cell(metis)}" in text
    assert "| METIS (paper) | 95%" in text or "| METIS (paper) | 90%" in text
    assert report.PAPER_LABEL in text
    assert report.OURS_LABEL in text
    assert "| METIS-NoPretrain | " in text
    assert "| 60% | 35% |" in text
    assert (path.parent / "images" / "sample_efficiency.png").stat().st_size > 1000
    assert (path.parent / "images" / "main_results.png").stat().st_size > 1000
    effects = json.loads((path.parent / "effects.json").read_text())
    assert set(effects) >= {"pre-training helps (FullPretrain vs NoPretrain)", "motion-aware dynamics help (w/ vs w/o)", "METIS beats the binned-action VLA"}  # fmt: skip
    expected = report.verdict(report.pooled(ablations["post_metis"]), report.pooled(ablations["post_nodyn"]))  # fmt: skip
    assert effects["motion-aware dynamics help (w/ vs w/o)"] == expected


def test_batched_evaluation_equals_metis_sim_evaluate_on_the_shared_seeds(tmp_path: Path) -> None:
    """evaluate_cells spreads the episodes of several cells over the workers; each cell's
    report equals metis_sim.evaluate's on the same seeds, and a second call reads the cache."""
    import time

    from metis_sim.evaluate import evaluate

    cfg = pipeline.load_config("toy", ["workers=2", "evaluation.videos=0"])
    work = pipeline.Work(tmp_path / "work")
    cells = [pipeline.Cell("random", "random", task, 2) for task in ("close_laptop", "open_drawer")]
    reports = pipeline.evaluate_cells(work, cfg, cells)
    for cell, report in zip(cells, reports, strict=True):
        seeds = pipeline.evaluation_seeds(cfg, cell.task, 2)
        assert [e["seed"] for e in report["episodes"]] == seeds
        reference = evaluate(cell.task, "random", episodes=2, seeds=seeds, videos=0)
        assert [e["progress"] for e in report["episodes"]] == [e.progress for e in reference.episodes]  # fmt: skip
        assert [e["steps"] for e in report["episodes"]] == [e.steps for e in reference.episodes]
        assert (cell.out(work) / "report.md").is_file()
    start = time.perf_counter()
    again = pipeline.evaluate_cells(work, cfg, cells)
    assert time.perf_counter() - start < 2.0
    assert again == reports
