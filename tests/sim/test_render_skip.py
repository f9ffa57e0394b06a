"""``step_chunk(render_every_step=False)``: only the image a policy sees next is rendered, and
nothing else about the episode changes."""

from __future__ import annotations

import numpy as np

from metis_core.registry import ENVS


def _run(render_every_step: bool, seed: int) -> list:
    env = ENVS.create("close_laptop", terminate_on_success=True)
    try:
        observation, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(3):
            chunk = np.repeat(observation["state"][None], 12, 0)
            chunk[:, 9:12] += rng.normal(scale=0.01, size=(12, 3))  # move the right wrist a little
            results = env.step_chunk(chunk, render_every_step=render_every_step)
            out.append(results)
            observation = results[-1].observation
        return out
    finally:
        env.close()


def test_skipping_renders_changes_nothing_but_the_intermediate_images() -> None:
    for seed in (0, 3):
        full, last_only = _run(True, seed), _run(False, seed)
        for a, b in zip(full, last_only, strict=True):
            assert len(a) == len(b) == 12
            for step_a, step_b in zip(a[:-1], b[:-1], strict=True):
                assert step_b.observation["image"] is None
                np.testing.assert_array_equal(step_a.observation["state"], step_b.observation["state"])  # fmt: skip
                assert step_a.info["progress"] == step_b.info["progress"]
            np.testing.assert_array_equal(a[-1].observation["image"], b[-1].observation["image"])
            np.testing.assert_array_equal(a[-1].observation["state"], b[-1].observation["state"])
            assert a[-1].observation["image"].shape == (224, 224, 3)
