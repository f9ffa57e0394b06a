"""PH2D adapter: human and H1 + Inspire fixtures in the 128-D layout, checked against ground truth."""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from metis_core.contract import LEFT, RIGHT
from metis_core.frames import wrist_frame_from_keypoints
from metis_core.registry import DATASET_SOURCES, EMBODIMENTS
from metis_core.rotations import axis_angle_to_matrix, geodesic_angle, rot6d_to_matrix
from metis_datasets.lerobot_format import LeRobotDataset, write_episodes
from metis_datasets.sources.ph2d import FLU_TO_OPENCV, PH2D_HAND_ORDER

FRAMES = 12
TASK = "303-grasp_coke_random-2024_12_12-19_13_53"
# Palm-fixed joint origins of the right Inspire hand (maker's URDF numbers): index, middle, little
# MCPs; the wrist is the base-link origin. The left hand is reflected through z (Unitree H1 URDF).
MCPS_RIGHT = np.array([[0.00028533, -0.13653, -0.032268], [0.00028533, -0.1371, -0.01295], [0.00028533, -0.13571, 0.025488]])  # fmt: skip


def _rotations(rng: np.random.Generator, frames: int, scale: float) -> np.ndarray:
    base = rng.normal(size=3) * scale
    drift = rng.normal(size=3) * 0.3
    t = np.linspace(0, 1, frames)[:, None]
    return np.asarray(axis_angle_to_matrix(torch.tensor(base + drift * t)))


def _rows6d(matrix: np.ndarray) -> np.ndarray:
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def _scene(seed: int, robot: bool) -> dict:
    """Raw 128-D arrays and the expected contract values (camera frame) for both hands."""
    rng = np.random.default_rng(seed)
    head = _rotations(rng, FRAMES, 0.3)
    array = np.zeros((FRAMES, 128))
    array[:, 3:9] = _rows6d(head)
    truth: dict = {"mask": np.ones((FRAMES, 2), dtype=bool)}
    t = np.linspace(0, 1, FRAMES)
    for side, wrist_slice, kp_slice, qpos_slice in (("left", slice(80, 89), slice(10, 28), slice(107, 113)), ("right", slice(30, 39), slice(40, 58), slice(120, 126))):  # fmt: skip
        sign = 1.0 if side == "left" else -1.0
        base_rot = _rotations(rng, FRAMES, 1.0)
        base_pos = np.stack([0.35 + 0.05 * t, sign * 0.2 + 0.02 * t, -0.3 + 0.03 * t], axis=1)
        array[:, wrist_slice] = np.concatenate([base_pos, _rows6d(base_rot)], axis=1)
        mirror = np.array([1.0, 1.0, -1.0 if side == "left" else 1.0])
        # Expected contract wrist frame: from the MCP keypoints moved to the camera.
        to_camera = FLU_TO_OPENCV @ np.swapaxes(head, 1, 2)
        points = [np.zeros(3), *(MCPS_RIGHT * mirror)]
        camera_points = [np.einsum("tij,tj->ti", to_camera, base_pos + np.einsum("tij,j->ti", base_rot, p)) for p in points]  # fmt: skip
        rotation, origin = wrist_frame_from_keypoints(*[torch.tensor(p) for p in camera_points])
        rotation, origin = rotation.numpy(), origin.numpy()
        hand = EMBODIMENTS.create("inspire", side=side)
        if robot:
            limits = hand.joint_limits.double().numpy()
            q = limits[:, 0] + (0.2 + 0.6 * t[:, None] * rng.uniform(0.5, 1.0, 6)) * (limits[:, 1] - limits[:, 0])  # fmt: skip
            tips = hand.forward_kinematics(torch.tensor(q)).numpy()
            order = [hand.joint_names.index(n) for n in PH2D_HAND_ORDER]
            opened = (limits[:, 1] - q) / (limits[:, 1] - limits[:, 0])
            array[:, 100:126][:, qpos_slice.start - 100 : qpos_slice.stop - 100] = opened[:, order]
        else:
            # Human fingertips given in the base-link frame of the hand.
            tips_camera = np.stack([origin + rng.normal(size=(FRAMES, 3)) * 0.02 + rotation[:, :, 2] * (0.12 + 0.03 * k) for k in range(5)], axis=1)  # fmt: skip
            tips = np.einsum("tji,tkj->tki", rotation, tips_camera - origin[:, None])
            tips_base_frame = np.einsum("tji,tkj->tki", base_rot, np.einsum("tji,tkj->tki", to_camera, tips_camera) - base_pos[:, None])  # fmt: skip
            keypoints = np.concatenate([np.zeros((FRAMES, 1, 3)), tips_base_frame], axis=1)
            array[:, kp_slice] = keypoints.reshape(FRAMES, 18)
        truth[side] = {"wrist": origin, "rotation": rotation, "tips": tips}
    return {"array": array.astype(np.float32), "truth": truth}


def _jpeg(frame: np.ndarray) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    # The authors' JPEGs hold BGR data (OpenCV encodes the RGB array as if it were BGR).
    Image.fromarray(np.ascontiguousarray(frame[..., ::-1])).save(buffer, format="JPEG", quality=95)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _write_episode(
    path: Path, scene: dict, embodiment: str, *, drop: str | None = None
) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.zeros((FRAMES, 48, 64, 3), dtype=np.uint8)
    frames[..., 0] = 200  # red images: a channel swap would turn them blue
    frames[:, :, :, 2] = np.arange(FRAMES)[:, None, None] * 10
    with h5py.File(path, "w") as handle:
        vlen = h5py.vlen_dtype(np.dtype("uint8"))
        for key in ("observation.image.left", "observation.image.right"):
            data = handle.create_dataset(key, (FRAMES,), dtype=vlen)
            for i in range(FRAMES):
                data[i] = _jpeg(frames[i])
        state = scene["array"].copy()
        if "human" in embodiment:
            state[1:] = scene["array"][:-1]  # human state = action shifted by one step
        handle["observation.state"] = scene["array"]
        handle["action"] = scene["array"]
        if drop:
            del handle[drop]
        handle.attrs["description"] = "grasp the coke can"
        handle.attrs["embodiment"] = embodiment
    return frames


@pytest.fixture(scope="module")
def ph2d_root(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ph2d")
    human, robot = _scene(0, robot=False), _scene(1, robot=True)
    folder = root / "processed" / TASK
    frames = _write_episode(folder / "processed_episode_0.hdf5", human, "human_avp")
    _write_episode(folder / "processed_episode_1.hdf5", robot, "h1_inspire")
    return {"root": root, "human": human, "robot": robot, "frames": frames}


def _errors(vectors: np.ndarray, truth: dict) -> tuple[float, float]:
    worst_mm, worst_deg = 0.0, 0.0
    for side, layout in (("left", LEFT), ("right", RIGHT)):
        expected = truth[side]
        wrist_mm = np.linalg.norm(vectors[:, layout.wrist_position] - expected["wrist"], axis=-1) * 1000  # fmt: skip
        tips_mm = np.linalg.norm(vectors[:, layout.fingertips].reshape(-1, 5, 3) - expected["tips"], axis=-1) * 1000  # fmt: skip
        rotation = rot6d_to_matrix(
            torch.tensor(vectors[:, layout.wrist_rot6d], dtype=torch.float64)
        )
        angle = np.degrees(geodesic_angle(rotation, torch.tensor(expected["rotation"])).numpy())
        worst_mm = max(worst_mm, float(wrist_mm.max()), float(tips_mm.max()))
        worst_deg = max(worst_deg, float(angle.max()))
    return worst_mm, worst_deg


@pytest.mark.parametrize("kind", ["human", "robot"])
def test_wrists_and_fingertips_land_on_ground_truth(ph2d_root: dict, kind: str) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64)
    source.check_layout(ph2d_root["root"])
    ids = source.list_episodes(ph2d_root["root"])
    assert ids == [f"{TASK}/processed_episode_0", f"{TASK}/processed_episode_1"]
    episode = source.load_episode(ph2d_root["root"], ids[0 if kind == "human" else 1])
    assert episode.embodiment == ("human_mano" if kind == "human" else "inspire")
    assert episode.instruction == "grasp the coke can"
    assert episode.hand_mask.all()
    mm, deg = _errors(episode.action.astype(np.float64), ph2d_root[kind]["truth"])
    assert mm < 1.0, (mm, deg)
    assert deg < 0.5, (mm, deg)


def test_images_are_rgb_and_resampling_keeps_exact_frames(ph2d_root: dict) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64, target_fps=15.0)
    episode = source.load_episode(ph2d_root["root"], f"{TASK}/processed_episode_1")
    assert episode.length == FRAMES // 2
    every_other = {s: {k: v[::2] for k, v in ph2d_root["robot"]["truth"][s].items()} for s in ("left", "right")}  # fmt: skip
    mm, deg = _errors(episode.action.astype(np.float64), every_other)
    assert mm < 1.0
    assert deg < 0.5
    ego = episode.images["ego"].astype(int)
    assert np.abs(ego[..., 0] - 200).max() < 12  # red stays red
    assert np.abs(ego[:, 20, 30, 2] - ph2d_root["frames"][::2, 20, 30, 2]).max() < 12


def test_write_and_read_back_with_lerobot(ph2d_root: dict, tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("ph2d", image_height=48, image_width=64, part="robot")
    episodes = list(source.iter_episodes(ph2d_root["root"]))
    assert len(episodes) == 1  # the human episode is skipped for part="robot"
    root = write_episodes(tmp_path / "ph2d_robot", episodes, fps=30.0, source="ph2d", embodiment="inspire", image_shape=(48, 64), progress=False)  # fmt: skip
    dataset = LeRobotDataset(root)
    back = dataset.episode(0, with_images=False)
    np.testing.assert_array_equal(back.action, episodes[0].action)
    mm, deg = _errors(back.action.astype(np.float64), ph2d_root["robot"]["truth"])
    assert mm < 1.0
    assert deg < 0.5


def test_wrong_layout_names_what_is_missing(tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("ph2d")
    with pytest.raises(FileNotFoundError, match="processed"):
        source.check_layout(tmp_path / "nowhere")
    (tmp_path / "processed" / TASK).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="processed_episode"):
        source.check_layout(tmp_path)
    _write_episode(tmp_path / "processed" / TASK / "processed_episode_0.hdf5", _scene(2, robot=False), "human_avp", drop="action")  # fmt: skip
    with pytest.raises(ValueError, match=r"missing key\(s\) \['action'\]"):
        source.check_layout(tmp_path)


def test_out_of_range_robot_hand_values_are_refused(tmp_path: Path) -> None:
    scene = _scene(3, robot=True)
    scene["array"][4, 109] = 3.0  # radians where normalised values are expected
    _write_episode(tmp_path / "processed" / TASK / "processed_episode_0.hdf5", scene, "h1_inspire")
    source = DATASET_SOURCES.create("ph2d", with_images=False)
    with pytest.raises(ValueError, match="pinky_proximal_joint at frame 4"):
        source.load_episode(tmp_path, f"{TASK}/processed_episode_0")
