"""The tasks: registration, contract observations, experts at a few seeds, divergence, variants."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import metis_sim
from metis_core.contract import LEFT, RIGHT
from metis_core.registry import ENVS
from metis_core.rotations import rot6d_to_matrix
from metis_sim.experts import expert_for, run_expert


@pytest.fixture(scope="module")
def envs():  # type: ignore[no-untyped-def]
    built = {}
    yield built
    for env in built.values():
        env.close()


def _env(envs, task: str, **config):  # type: ignore[no-untyped-def]
    key = (task, tuple(sorted(config.items())))
    if key not in envs:
        envs[key] = ENVS.create(task, **{"render": False, "terminate_on_success": False, **config})
    return envs[key]


def _run_expert(env, seed: int) -> dict:  # type: ignore[no-untyped-def]
    env.reset(seed=seed)
    info: dict = {}
    for result, _ in run_expert(env, expert_for(env, np.random.default_rng(seed + 1_000_000))):
        info = result.info
    return info


def test_tasks_are_registered_with_the_registry_and_gymnasium() -> None:
    assert set(metis_sim.TASKS) <= set(ENVS.names())
    env = gym.make("metis_sim/PickPlace-v0", render=False)
    try:
        assert env.unwrapped.name == "pick_place"
        observation, info = env.reset(seed=0)
        assert observation["state"].shape == (48,)
        assert observation["state"].dtype == np.float32
        assert list(observation["hand_mask"]) == [False, True]
        assert info["instruction"] == "pick up the cube and place it on the plate"
    finally:
        env.close()


@pytest.mark.parametrize("task", ["pick_place", "open_drawer", "close_laptop", "bimanual_drawer"])
def test_scripted_expert_succeeds_and_reaches_every_stage(envs, task: str) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, task)
    for seed in (0,) if task == "bimanual_drawer" else (0, 1):
        info = _run_expert(env, seed)
        assert info["success"], f"{task} seed {seed}: {info}"
        assert info["diverged"] == ""
        assert info["progress"] == 1.0


def test_ego_image_and_state_follow_the_contract(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "bimanual_drawer", render=True)
    observation, _ = env.reset(seed=3)
    image = observation["image"]
    assert image.shape == (224, 224, 3)
    assert image.dtype == np.uint8
    assert image.std() > 10  # a rendered scene, not a blank buffer
    state = observation["state"].astype(np.float64)
    for layout, side in ((LEFT, "left"), (RIGHT, "right")):
        position, rotation = env.wrist_pose(side)
        # wrist pose in the ego camera (OpenCV) frame, back to the world
        world = env.camera_rotation @ state[layout.wrist_position] + env.camera_position
        np.testing.assert_allclose(world, position, atol=1e-5)
        np.testing.assert_allclose(env.camera_rotation @ rot6d_to_matrix(state[layout.wrist_rot6d]), rotation, atol=1e-5)  # fmt: skip
        # fingertips in the wrist frame equal the embodiment's FK of the measured joints
        import torch

        joints = torch.as_tensor(env.joints(side), dtype=torch.float64)
        fk = env.rigs[side].embodiment.forward_kinematics(joints.clamp(*env.rigs[side].embodiment.joint_limits.T)).numpy()  # fmt: skip
        assert np.abs(state[layout.fingertips].reshape(5, 3) - fk).max() < 2e-3
    # the wrists are in front of the camera; the task objects project inside the image
    for layout in (LEFT, RIGHT):
        assert state[layout.wrist_position][2] > 0.2
    for point in (env.handle_position(), env.object_pose()[0]):
        in_camera = env.camera_rotation.T @ (point - env.camera_position)
        pixel = env.camera_intrinsics @ in_camera / in_camera[2]
        assert 0 <= pixel[0] < 224
        assert 0 <= pixel[1] < 224


def test_reset_is_deterministic_per_seed_and_seeds_differ(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "pick_place")
    env.reset(seed=5)
    first = env.object_pose()[0]
    mass = env.model.body_mass[env.model.body("object").id]
    env.reset(seed=5)
    np.testing.assert_array_equal(env.object_pose()[0], first)
    assert env.model.body_mass[env.model.body("object").id] == mass
    env.reset(seed=6)
    assert np.linalg.norm(env.object_pose()[0] - first) > 1e-3


def test_contract_actions_move_the_hand_through_ik(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "pick_place")
    observation, _ = env.reset(seed=0)
    target = observation["state"].astype(np.float64).copy()
    target[RIGHT.wrist_position] += np.array([0.05, 0.0, 0.0])  # 5 cm to the camera's right
    tips = target[RIGHT.fingertips].reshape(5, 3)
    import torch

    closed = env.rigs["right"].embodiment.forward_kinematics(torch.tensor([1.0, 0.3, 0.8, 0.8, 0.8, 0.8], dtype=torch.float64)).numpy()  # fmt: skip
    tips[:] = closed
    target[RIGHT.fingertips] = tips.reshape(15)
    results = env.step_chunk(np.repeat(target[None], 30, axis=0))
    assert len(results) == 30
    state = results[-1].observation["state"]
    assert np.linalg.norm(state[RIGHT.wrist_position] - target[RIGHT.wrist_position]) < 0.01
    assert np.abs(state[RIGHT.fingertips].reshape(5, 3) - closed).max() < 0.01
    with pytest.raises(ValueError, match=r"\(C, 48\)"):
        env.step_chunk(np.zeros((30, 47)))
    with pytest.raises(ValueError, match="NaN"):
        env.step_chunk(np.full((2, 48), np.nan))


def test_divergence_ends_the_episode_as_a_failure(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "pick_place", terminate_on_success=True)
    observation, _ = env.reset(seed=0)
    env.data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number = 1  # what MuJoCo sets when it resets
    observation, reward, terminated, truncated, info = env.step(observation["state"])
    assert terminated
    assert not truncated
    assert "BADQACC" in info["diverged"]
    assert info["success"] is False
    assert reward == 0.0


@pytest.mark.parametrize("variant", ["background", "lighting", "object", "clutter"])
def test_variants_change_the_scene_and_keep_the_task_solvable(envs, variant: str) -> None:  # type: ignore[no-untyped-def]
    default = _env(envs, "pick_place", render=True)
    env = _env(envs, "pick_place", render=True, variant=variant)
    base_image = default.reset(seed=2)[0]["image"].astype(float)
    image = env.reset(seed=2)[0]["image"].astype(float)
    changed = int((np.abs(image - base_image).max(axis=-1) > 30).sum())
    assert changed > 40, f"{variant} looks like the default scene ({changed} pixels differ)"
    if variant == "object":
        assert env.model.geom("object").type == mujoco.mjtGeom.mjGEOM_CYLINDER
        assert "cylinder" in env.instruction
    if variant == "clutter":
        assert (
            sum(env.model.body(b).name.startswith("clutter") for b in range(env.model.nbody)) == 4
        )
    assert _run_expert(env, 2)["success"]


def test_sharpawave_scene_runs_the_same_tasks(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "open_drawer", embodiment="sharpawave")
    assert env.rigs["right"].embodiment.name == "sharpawave"
    assert env.model.nu == 22
    info = _run_expert(env, 0)
    assert info["success"], info
    env = _env(envs, "bimanual_drawer", embodiment="sharpawave")
    observation, _ = env.reset(seed=0)
    assert env.model.nu == 44
    assert list(observation["hand_mask"]) == [True, True]


def test_unknown_variant_is_rejected() -> None:
    with pytest.raises(ValueError, match="variant must be one of"):
        ENVS.create("pick_place", variant="fog")


def test_inspire_tuned_experts_refuse_other_hands(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "pick_place", embodiment="sharpawave")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="tuned for"):
        expert_for(env, np.random.default_rng(0))
