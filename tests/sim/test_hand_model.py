"""URDF → MJCF: simulated fingertips equal the embodiment's FK; couplings, limits, actuators."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

import metis_sim  # noqa: F401  (headless GL backend)
from metis_core.registry import EMBODIMENTS
from metis_sim.hand_model import HandModelConfig, build_hand_model, standalone_xml


def _compile(name: str, side: str):  # type: ignore[no-untyped-def]
    embodiment = EMBODIMENTS.create(name, side=side)
    hand = build_hand_model(embodiment)
    model = mujoco.MjModel.from_xml_string(standalone_xml(hand))
    return embodiment, hand, model, mujoco.MjData(model)


def _worst_fk_deviation(name: str, side: str, count: int) -> float:
    embodiment, hand, model, data = _compile(name, side)
    joints = embodiment.sample_joints(count, generator=torch.Generator().manual_seed(3))
    expected = embodiment.forward_kinematics(joints).numpy()
    full = embodiment.expand_joints(joints).numpy()
    adr = [model.jnt_qposadr[model.joint(hand.prefix + n).id] for n in hand.urdf_joint_names]
    sites = [model.site(s).id for s in hand.fingertip_sites]
    worst = 0.0
    for i in range(len(joints)):
        data.qpos[:] = 0.0
        data.qpos[3] = 1.0  # identity root orientation: the world frame is the wrist frame
        data.qpos[adr] = full[i]
        mujoco.mj_kinematics(model, data)
        worst = max(worst, float(np.abs(data.site_xpos[sites] - expected[i]).max()))
    return worst


@pytest.mark.parametrize(("name", "side"), [("inspire", "right"), ("inspire", "left"), ("sharpawave", "right"), ("sharpawave", "left")])  # fmt: skip
def test_simulated_fingertips_equal_fk(name: str, side: str) -> None:
    worst = _worst_fk_deviation(name, side, 200)
    assert worst < 1e-5, f"{name} {side}: worst fingertip deviation {worst * 1000:.4f} mm"


def test_every_registered_robot_hand_converts_without_code_changes() -> None:
    """Other plugins (Fourier, LEAP with its missing little finger, ...) build the same way."""
    others = [n for n in EMBODIMENTS.names() if n not in ("inspire", "sharpawave") and not EMBODIMENTS.get(n).is_human]  # fmt: skip
    assert others, "expected more robot hands in the registry"
    for name in others:
        worst = _worst_fk_deviation(name, "right", 50)
        assert worst < 1e-5, f"{name}: worst fingertip deviation {worst * 1000:.4f} mm"


def test_left_hand_is_the_mirror_of_the_right() -> None:
    _, right, model_r, data_r = _compile("inspire", "right")
    _, left, model_l, data_l = _compile("inspire", "left")
    for model, data, hand in ((model_r, data_r, right), (model_l, data_l, left)):
        data.qpos[:] = 0.0
        data.qpos[3] = 1.0
        data.qpos[[model.jnt_qposadr[model.joint(hand.prefix + n).id] for n in hand.urdf_joint_names]] = 0.3  # fmt: skip
        mujoco.mj_kinematics(model, data)
    tips_r = data_r.site_xpos[[model_r.site(s).id for s in right.fingertip_sites]]
    tips_l = data_l.site_xpos[[model_l.site(s).id for s in left.fingertip_sites]]
    assert np.abs(tips_l - tips_r * np.array([-1.0, 1.0, 1.0])).max() < 1e-9


def test_couplings_actuators_and_limits_come_from_the_urdf() -> None:
    embodiment, hand, model, _ = _compile("inspire", "right")
    # 6 actuators with the URDF limits as control range, kp 3 and ±1 N m
    assert model.nu == 6
    for i, name in enumerate(embodiment.joint_names):
        actuator = model.actuator(hand.prefix + name)
        np.testing.assert_allclose(
            actuator.ctrlrange, embodiment.joint_limits[i].numpy(), atol=1e-9
        )
        assert actuator.gainprm[0] == pytest.approx(3.0)
        np.testing.assert_allclose(actuator.forcerange, [-1.0, 1.0])
    # 6 mimic joints as joint equalities + the wrist weld
    joint_eq = [i for i in range(model.neq) if model.eq_type[i] == mujoco.mjtEq.mjEQ_JOINT]
    assert len(joint_eq) == 6
    index_intermediate = model.joint(hand.prefix + "index_intermediate_joint").id
    row = next(i for i in joint_eq if model.eq_obj1id[i] == index_intermediate)
    np.testing.assert_allclose(model.eq_data[row, :2], [-0.04545, 1.06399], atol=1e-6)
    assert sum(model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD for i in range(model.neq)) == 1
    # every moving body is gravity compensated; no hand-hand collisions (contype 2 / conaffinity 1)
    assert (model.body_gravcomp[1:] == 1).sum() == model.nbody - 2  # all but world and mocap
    hand_geoms = [g for g in range(model.ngeom) if model.geom(g).name.startswith(hand.prefix)]
    assert len(hand_geoms) >= 11
    assert all(model.geom_contype[g] == 2 and model.geom_conaffinity[g] == 1 for g in hand_geoms)


def test_position_actuators_track_targets_under_physics() -> None:
    """Driven to random targets, the coupled joints settle and the fingertips match FK within 2 mm."""
    embodiment, hand, model, data = _compile("inspire", "right")
    model.opt.gravity[:] = 0.0
    targets = embodiment.sample_joints(5, generator=torch.Generator().manual_seed(0))
    sites = [model.site(s).id for s in hand.fingertip_sites]
    worst = 0.0
    for target in targets:
        mujoco.mj_resetData(model, data)
        data.qpos[3] = 1.0
        data.mocap_quat[0] = (1, 0, 0, 0)
        data.ctrl[:] = target.numpy()
        for _ in range(960):  # 2 s
            mujoco.mj_step(model, data)
        expected = embodiment.forward_kinematics(target[None])[0].numpy()
        position = data.xpos[model.body(hand.root_body).id]
        rotation = data.xmat[model.body(hand.root_body).id].reshape(3, 3)
        measured = (data.site_xpos[sites] - position) @ rotation
        worst = max(worst, float(np.linalg.norm(measured - expected, axis=1).max()))
    assert worst < 2e-3, f"worst fingertip tracking error {worst * 1000:.2f} mm"


def test_human_hands_and_bad_configs_are_rejected() -> None:
    with pytest.raises(ValueError, match="only robot hands"):
        build_hand_model(EMBODIMENTS.create("human_mano"))
    with pytest.raises(ValueError, match="kp"):
        HandModelConfig(kp=0.0)
