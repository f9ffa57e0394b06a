"""Kinematic human-hand demonstrations: success on every task, drawn hand = contract, skin, dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metis_sim
from metis_core.contract import HAND_LAYOUTS
from metis_core.registry import ENVS
from metis_core.rotations import rot6d_to_matrix
from metis_datasets.lerobot_format import LeRobotDataset
from metis_sim.human import HumanDemo
from metis_sim.record import demo_steps, record

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def envs():  # type: ignore[no-untyped-def]
    built: dict = {}
    yield built
    for env in built.values():
        env.close()


def _env(envs, task: str, **config):  # type: ignore[no-untyped-def]
    key = (task, tuple(sorted(config.items())))
    if key not in envs:
        envs[key] = ENVS.create(task, **{"render": False, "terminate_on_success": False, "embodiment": "human_mano", **config})  # fmt: skip
    return envs[key]


def _drawn_keypoints(env, side: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``(21, 3)`` world keypoints read back from the drawn bone capsules (not from the script)."""
    hand = env.kinematic_hands[side]
    points = np.full((21, 3), np.nan)
    for i, (a, b) in enumerate(hand.bones):
        geom = env.model.geom(f"{hand.prefix}bone{i}")
        centre = env.data.geom_xpos[geom.id]
        axis = env.data.geom_xmat[geom.id].reshape(3, 3)[:, 2]
        half = env.model.geom_size[geom.id][1]
        points[a], points[b] = centre - half * axis, centre + half * axis
    return points


@pytest.mark.parametrize("task", [*metis_sim.TASKS, *metis_sim.PRETRAIN_TASKS])
def test_human_demo_succeeds_on_every_seed(envs, task: str) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, task)
    assert env.is_human
    for seed in SEEDS:
        _observation, steps = demo_steps(env, seed)
        info: dict = {}
        stages = []
        for result, _ in steps:
            info = result.info
            stages.append(info["stage"])
        assert info["success"], f"{task} seed {seed}: {info}"
        assert info["diverged"] == ""
        assert info["progress"] == 1.0
        assert stages == sorted(stages)


def test_human_scene_has_kinematic_hands_and_no_robot_hand(envs) -> None:  # type: ignore[no-untyped-def]
    human = _env(envs, "bimanual_drawer")
    robot = ENVS.create("bimanual_drawer", render=False)
    try:
        human_bodies = {human.model.body(b).name for b in range(human.model.nbody)}
        robot_hand_bodies = {robot.model.body(b).name for b in range(robot.model.nbody)} - {"world", "object", "cabinet", "drawer"}  # fmt: skip
        assert robot_hand_bodies
        assert not robot_hand_bodies & human_bodies
    finally:
        robot.close()
    assert human.model.nu == 0
    assert human.model.neq == 0
    assert list(human.hand_mask) == [True, True]
    for side, hand in human.kinematic_hands.items():
        assert len(hand.bones) == 20
        geoms = hand.geom_ids
        assert len(geoms) == 21  # 20 bone capsules and the palm
        assert (human.model.geom_contype[geoms] == 0).all()
        assert (human.model.geom_conaffinity[geoms] == 0).all()
        assert (human.model.body_mocapid[human.model.geom_bodyid[geoms]] >= 0).all()
        assert human.hand_geoms(side) == set(geoms.tolist())
    with pytest.raises(ValueError, match="step_keypoints"):
        human.step_chunk(np.zeros((1, 48)))


def test_state_is_the_contract_of_the_drawn_keypoints(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "bimanual_drawer")
    observation, steps = demo_steps(env, 4)
    states, actions, worst = [observation["state"]], [], 0.0
    for frame, (result, _) in enumerate(steps):
        actions.append(result.info["action"])
        states.append(result.observation["state"])
        if frame % 5:
            continue
        state = result.observation["state"].astype(np.float64)
        for side, hand in env.kinematic_hands.items():
            layout = HAND_LAYOUTS[side]
            drawn = _drawn_keypoints(env, side)
            in_camera = (drawn - env.camera_position) @ env.camera_rotation
            origin = state[layout.wrist_position]
            rotation = rot6d_to_matrix(state[layout.wrist_rot6d])
            tips = origin + state[layout.fingertips].reshape(5, 3) @ rotation.T
            worst = max(worst, float(np.abs(tips - in_camera[list(hand.embodiment.fingertip_keypoints)]).max()))  # fmt: skip
            assert np.abs(origin - in_camera[0]).max() < 1e-5
            # the same numbers as the embodiment's own contract of those keypoints
            expected = hand.embodiment.forward_kinematics(torch.as_tensor(in_camera.reshape(-1)))
            assert np.abs(state[layout.fingertips].reshape(5, 3) - expected.numpy()).max() < 1e-5
    assert worst < 1e-5, worst
    # the action is the contract of the next step's keypoints
    np.testing.assert_allclose(np.stack(actions), np.stack(states[1:]), atol=1e-6)


def _skin(patch: np.ndarray) -> bool:
    """Skin tone under white light: lit or shaded, with the chromaticity of SKIN_RGBA."""
    r, g, b = patch.reshape(-1, 3).mean(0)
    return bool(r > 60 and 0.70 < g / r < 0.88 and 0.57 < b / r < 0.74)


def test_rendered_hand_is_skin_coloured_at_its_keypoints(envs) -> None:  # type: ignore[no-untyped-def]
    env = _env(envs, "pick_place", render=True)
    observation, steps = demo_steps(env, 0)
    assert not _skin(observation["image"][200:210, 100:110])  # the table is not skin
    hand = env.kinematic_hands["right"]
    focal = env.camera_intrinsics
    visible = skin = 0
    for frame, (result, _) in enumerate(steps):
        if frame % 3:
            continue
        image = result.observation["image"]
        env._renderer.enable_depth_rendering()
        depth = env._renderer.render().copy()
        env._renderer.disable_depth_rendering()
        for k in (0, *hand.embodiment.fingertip_keypoints):
            point = env.camera_rotation.T @ (hand.keypoints[k] - env.camera_position)
            u, v, _ = focal @ point / point[2]
            x, y = round(u - 0.5), round(v - 0.5)
            if not (1 <= x < 223 and 1 <= y < 223) or point[2] - depth[y, x] > 0.013:
                continue  # out of view, or something is in front of the hand's surface there
            visible += 1
            skin += _skin(image[y - 1 : y + 2, x - 1 : x + 2])
    assert visible > 100
    assert skin / visible >= 0.9, f"{skin}/{visible} visible keypoints are skin coloured"


def test_recorded_human_dataset(tmp_path, envs) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "human_lift_cube"
    report = record("lift_cube", episodes=1, out=out, progress=False, embodiment="human_mano")
    assert report.recorded == 1
    assert report.failed_seeds == []
    dataset = LeRobotDataset(out)
    assert dataset.embodiment == "human_mano"
    episode = dataset.episode(0)
    assert episode.embodiment == "human_mano"
    assert episode.source == "metis_sim"
    assert episode.images["ego"].shape == (episode.length, 224, 224, 3)
    assert episode.hand_mask[:, 1].all()
    assert not episode.hand_mask[:, 0].any()
    assert episode.instruction == "pick up the cube"
    assert [s.text for s in episode.subtasks][:4] == ["reach the object", "grasp the object", "lift the object", "hold it up"]  # fmt: skip
    assert episode.metadata["seed"] == 0
    env = _env(envs, "lift_cube")
    observation, steps = demo_steps(env, 0)
    states = [observation["state"], *[result.observation["state"] for result, _ in steps][:-1]]
    np.testing.assert_allclose(episode.state, np.stack(states), atol=1e-6)


def test_human_path_rejects_what_it_cannot_draw(envs) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="human_mano"):
        ENVS.create("pick_place", embodiment="human_manus")
    robot = ENVS.create("pick_place", render=False)
    try:
        robot.reset(seed=0)
        with pytest.raises(ValueError, match="human_mano"):
            HumanDemo(robot, np.random.default_rng(0))
    finally:
        robot.close()
