"""The pre-training tasks lift_cube and close_drawer: registration, randomisation, experts, stages."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metis_sim
from metis_core.registry import ENVS
from metis_sim.experts import expert_for, run_expert
from metis_sim.tasks.close_drawer import CloseDrawerEnv
from metis_sim.tasks.lift_cube import LiftCubeEnv

SEEDS = range(10)


@pytest.fixture(scope="module")
def runs():  # type: ignore[no-untyped-def]
    """The Inspire expert of each task at 10 seeds: last info and the subtask of every step."""
    out = {}
    for task in metis_sim.PRETRAIN_TASKS:
        env = ENVS.create(task, render=False, terminate_on_success=False)
        try:
            for seed in SEEDS:
                env.reset(seed=seed)
                subtasks, info = [], {}
                for result, _ in run_expert(env, expert_for(env, np.random.default_rng(seed + 1_000_000))):  # fmt: skip
                    info = result.info
                    subtasks.append(info["subtask"])
                out[task, seed] = (info, subtasks, env.stage_labels)
        finally:
            env.close()
    return out


def test_pretrain_tasks_are_registered() -> None:
    assert set(metis_sim.PRETRAIN_TASKS) == {"lift_cube", "close_drawer"}
    assert not set(metis_sim.PRETRAIN_TASKS) & set(metis_sim.TASKS)
    assert set(metis_sim.ALL_TASKS) <= set(ENVS.names())
    for env_id, cls, instruction in (("metis_sim/LiftCube-v0", LiftCubeEnv, "pick up the cube"), ("metis_sim/CloseDrawer-v0", CloseDrawerEnv, "close the drawer")):  # fmt: skip
        env = gym.make(env_id, render=False)
        try:
            assert type(env.unwrapped) is cls
            observation, info = env.reset(seed=0)
            assert observation["state"].shape == (48,)
            assert info["instruction"] == instruction
            assert info["subtask"] == env.unwrapped.stage_labels[0]
            assert len(env.unwrapped.stage_labels) == env.unwrapped.num_stages == 4
        finally:
            env.close()


def test_seeds_randomise_poses_masses_frictions_and_the_opening() -> None:
    lift = ENVS.create("lift_cube", render=False)
    close = ENVS.create("close_drawer", render=False)
    try:
        seen = []
        for seed in (0, 1):
            lift.reset(seed=seed)
            close.reset(seed=seed)
            assert 0.12 <= close.start_opening <= 0.16
            assert abs(close.drawer_opening() - close.start_opening) < 1e-3  # it starts open
            seen.append((lift.object_pose()[0], lift.model.body_mass[lift.model.body("object").id], lift.model.geom_friction[lift.model.geom("object").id, 0], close.start_opening, close.handle_position(), close.model.body_mass[close.model.body("drawer").id]))  # fmt: skip
        for a, b in zip(*seen, strict=True):
            assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-4
        lift.reset(seed=0)
        first = lift.object_pose()[0]
        lift.reset(seed=0)
        np.testing.assert_array_equal(lift.object_pose()[0], first)
    finally:
        lift.close()
        close.close()


@pytest.mark.parametrize("variant", ["background", "lighting", "object", "clutter"])
def test_variants_build(variant: str) -> None:
    for task in metis_sim.PRETRAIN_TASKS:
        env = ENVS.create(task, render=False, variant=variant)
        try:
            _, info = env.reset(seed=0)
            if variant == "object" and task == "lift_cube":
                assert env.model.geom("object").type == mujoco.mjtGeom.mjGEOM_CYLINDER
                assert info["instruction"] == "pick up the cylinder"
            if variant == "clutter":
                assert sum(env.model.body(b).name.startswith("clutter") for b in range(env.model.nbody)) == 4  # fmt: skip
        finally:
            env.close()


@pytest.mark.parametrize("task", ["lift_cube", "close_drawer"])
def test_inspire_expert_succeeds_on_nine_of_ten_seeds(runs, task: str) -> None:  # type: ignore[no-untyped-def]
    infos = [runs[task, seed][0] for seed in SEEDS]
    successes = sum(bool(i["success"]) and not i["diverged"] for i in infos)
    assert successes >= 9, (
        f"{task}: {successes}/10 ({[(i['stage'], i['diverged']) for i in infos]})"
    )


@pytest.mark.parametrize("task", ["lift_cube", "close_drawer"])
def test_subtask_follows_the_four_stages(runs, task: str) -> None:  # type: ignore[no-untyped-def]
    for seed in SEEDS:
        info, subtasks, labels = runs[task, seed]
        if not info["success"]:
            continue
        order = [labels.index(s) for s in subtasks]
        assert order == sorted(order), f"{task} seed {seed}: subtasks go back: {subtasks}"
        assert sorted(set(subtasks), key=subtasks.index) == list(labels)
        assert info["stage"] == 4
        assert info["progress"] == 1.0


def test_lift_cube_needs_the_object_held_up_for_half_a_second() -> None:
    env = ENVS.create("lift_cube", render=False, terminate_on_success=False)
    try:
        env.reset(seed=0)
        held_at = None
        for step, (result, _) in enumerate(run_expert(env, expert_for(env, np.random.default_rng(1_000_000)))):  # fmt: skip
            if held_at is None and env._held_steps == 1:
                held_at = step
            if result.info["success"]:
                assert held_at is not None
                assert step - held_at >= 14
                break
        else:
            pytest.fail("the expert never held the object up")
    finally:
        env.close()
