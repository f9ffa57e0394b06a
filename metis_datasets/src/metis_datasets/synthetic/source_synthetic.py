"""A procedural egocentric source: a table, coloured objects and two hands seen from a head camera.

Each episode is a pick-and-place: one hand reaches an object, closes its fingers, carries the
object to a place on the table and opens again, while the other hand idles (or is out of view).
The object follows the hand only while it is grasped, so object state depends on the motion.
Frames are rendered by projecting the wrists and fingertips through real camera intrinsics.

The "raw dir" of this source is optional: either nothing (the config fields decide), or a JSON
file — or a directory holding ``synthetic.json`` — whose keys override config fields, e.g.
``{"episodes": 16, "seed": 3, "frames": 48}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from metis_core.config import ComponentConfig
from metis_core.contract import LEFT, RIGHT
from metis_core.episode import Episode, Subtask
from metis_core.interfaces import DatasetSource
from metis_core.rotations import axis_angle_to_matrix, matrix_to_rot6d

__all__ = [
    "D435_COLOR_INTRINSICS_640X480",
    "SyntheticConfig",
    "SyntheticSource",
    "make_dataset",
]

#: Intel RealSense D435 colour stream at 640×480 (the paper's head camera). Values are a typical
#: factory calibration as reported by librealsense (``rs-enumerate-devices -c``): fx ≈ fy ≈ 615 px,
#: principal point near the image centre; each unit differs by a few pixels.
D435_COLOR_INTRINSICS_640X480 = np.array(
    [[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]], dtype=np.float64
)

_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 40),
    "purple": (150, 60, 190),
}
_PLACES = {"on the left": -0.14, "in the middle": 0.0, "on the right": 0.14}
_TABLE_Y = 0.14  # metres below the optical axis
_OPEN_TIPS = np.array(  # fingertips in the wrist frame (x, y, z), thumb..little, open hand
    [
        [0.03, 0.05, 0.08],
        [0.0, 0.025, 0.17],
        [0.0, 0.0, 0.18],
        [0.0, -0.02, 0.17],
        [0.0, -0.04, 0.14],
    ]
)
_CLOSED_TIPS = np.array(
    [
        [0.04, 0.015, 0.10],
        [0.05, 0.02, 0.10],
        [0.05, 0.0, 0.10],
        [0.05, -0.018, 0.095],
        [0.045, -0.033, 0.085],
    ]
)


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(ComponentConfig):
    """Config of the synthetic source.

    Args:
        episodes: Number of episodes.
        frames: Frames per episode.
        seed: Seed of everything random.
        height: Image height in pixels (intrinsics are scaled from 640×480).
        width: Image width in pixels.
        fps: Frame rate in Hz.
        render: Render RGB frames (``images["ego"]``); False gives tabular-only episodes.
        absent_hand_probability: Chance that the idle hand is out of view for a whole episode.
    """

    episodes: int = 8
    frames: int = 64
    seed: int = 0
    height: int = 240
    width: int = 320
    fps: float = 30.0
    render: bool = True
    absent_hand_probability: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {self.episodes}")
        if self.frames < 8:
            raise ValueError(f"frames must be >= 8 (four subtasks of two frames), got {self.frames}")  # fmt: skip
        if self.height < 16 or self.width < 16 or self.height % 2 or self.width % 2:
            raise ValueError(f"height and width must be even and >= 16, got {self.height}x{self.width}")  # fmt: skip
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not 0.0 <= self.absent_hand_probability <= 1.0:
            raise ValueError(f"absent_hand_probability must be in [0, 1], got {self.absent_hand_probability}")  # fmt: skip


class SyntheticSource(DatasetSource):
    """Procedural egocentric two-hand pick-and-place episodes (see the module docstring)."""

    name = "synthetic"
    config_class = SyntheticConfig
    human = True

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config or SyntheticConfig()

    # -- raw dir ----------------------------------------------------------------------------

    def _spec_path(self, raw_dir: Path) -> Path:
        raw_dir = Path(raw_dir)
        return raw_dir / "synthetic.json" if raw_dir.is_dir() else raw_dir

    def check_layout(self, raw_dir: Path) -> None:
        """Check an optional JSON spec.

        Raises:
            FileNotFoundError: If the spec file is missing.
            ValueError: If it is not a JSON object of config fields.
        """
        self._config_from(raw_dir)

    def _config_from(self, raw_dir: Path | None) -> SyntheticConfig:
        if raw_dir is None:
            return self.config
        path = self._spec_path(Path(raw_dir))
        if not path.exists():
            raise FileNotFoundError(f"{path}: expected a JSON spec of the synthetic source (keys {[f.name for f in fields(SyntheticConfig)]})")  # fmt: skip
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg})") from err
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: expected a JSON object of config fields, got {type(spec).__name__}")  # fmt: skip
        unknown = set(spec) - {f.name for f in fields(SyntheticConfig)}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {[f.name for f in fields(SyntheticConfig)]}")  # fmt: skip
        return self.config.replace(**spec)

    @property
    def intrinsics(self) -> np.ndarray:
        """``(3, 3)`` K scaled from the D435 640×480 calibration to the configured image size."""
        return scaled_intrinsics(self.config.height, self.config.width)

    def iter_episodes(self, raw_dir: Path | None = None) -> Iterator[Episode]:
        """Yield the configured episodes (deterministic in ``seed``; episode ``i`` uses ``(seed, i)``)."""
        config = self._config_from(raw_dir)
        for index in range(config.episodes):
            yield generate_episode(config, index)


def scaled_intrinsics(height: int, width: int) -> np.ndarray:
    """The D435 colour intrinsics rescaled to an image of ``height``×``width`` pixels."""
    k = D435_COLOR_INTRINSICS_640X480.copy()
    k[0] *= width / 640.0
    k[1] *= height / 480.0
    k[2] = [0.0, 0.0, 1.0]
    return k


def _smooth(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _base_rotation(side: str) -> np.ndarray:
    """Wrist frame axes in the camera: fingers forward and down, palm down."""
    z = np.array([0.0, 0.45, 0.9])
    z /= np.linalg.norm(z)
    y = np.array([-1.0, 0.0, 0.0]) if side == "right" else np.array([1.0, 0.0, 0.0])
    y -= y.dot(z) * z
    y /= np.linalg.norm(y)
    return np.stack([np.cross(y, z), y, z], axis=1)


def generate_episode(config: SyntheticConfig, index: int) -> Episode:
    """Generate episode ``index`` of a config.

    Returns:
        An :class:`Episode` with ``(T, 48)`` state/action, masks, instruction, four subtasks,
        ``images["ego"]`` ``(T, H, W, 3)`` if ``config.render``, and metadata with the object's
        ``(T, 3)`` positions and per-frame ``grasped`` flags.
    """
    rng = np.random.default_rng([config.seed, index])
    frames = config.frames
    colour = list(_COLOURS)[rng.integers(len(_COLOURS))]
    place = list(_PLACES)[rng.integers(len(_PLACES))]
    active = "right" if rng.random() < 0.5 else "left"
    idle = "left" if active == "right" else "right"
    sign = 1.0 if active == "right" else -1.0
    obj_start = np.array([rng.uniform(-0.12, 0.12), _TABLE_Y - 0.03, rng.uniform(0.5, 0.62)])
    obj_goal = np.array([_PLACES[place] + rng.uniform(-0.02, 0.02), _TABLE_Y - 0.03, rng.uniform(0.45, 0.55)])  # fmt: skip
    rest = {"right": np.array([0.17, 0.02, 0.35]), "left": np.array([-0.17, 0.02, 0.35])}
    rest = {k: v + rng.normal(0, 0.01, 3) for k, v in rest.items()}

    # phase boundaries: reach, grasp, carry, release
    cuts = np.round(np.array([0.0, 0.3, 0.45, 0.8, 1.0]) * frames).astype(int)
    t = np.arange(frames)
    grasp_offset = _base_rotation(active) @ np.array([0.06, 0.0, 0.1])  # object sits between tips
    above_obj = obj_start - grasp_offset
    above_goal = obj_goal - grasp_offset
    wrist_active = np.empty((frames, 3))
    closure = np.zeros(frames)
    for i in range(frames):
        if i < cuts[1]:
            u = _smooth(np.array(i / max(cuts[1] - 1, 1)))
            wrist_active[i] = rest[active] + (above_obj - rest[active]) * u
        elif i < cuts[2]:
            wrist_active[i] = above_obj
            closure[i] = _smooth(np.array((i - cuts[1] + 1) / (cuts[2] - cuts[1])))
        elif i < cuts[3]:
            u = _smooth(np.array((i - cuts[2] + 1) / (cuts[3] - cuts[2])))
            lift = 0.06 * np.sin(np.pi * u)
            wrist_active[i] = above_obj + (above_goal - above_obj) * u - np.array([0, lift, 0])
            closure[i] = 1.0
        else:
            wrist_active[i] = above_goal
            closure[i] = 1.0 - _smooth(np.array((i - cuts[3] + 1) / (cuts[4] - cuts[3])))
    grasped = closure > 0.7
    obj_pos = np.empty((frames, 3))
    current = obj_start.copy()
    for i in range(frames):
        if grasped[i]:
            current = wrist_active[i] + grasp_offset
        obj_pos[i] = current
    yaw = sign * 0.5 * _smooth((t - cuts[2]) / max(cuts[3] - cuts[2], 1))
    sway = rng.uniform(0, 2 * np.pi)
    wrist_idle = rest[idle][None] + 0.01 * np.stack([np.sin(t / 9 + sway), np.cos(t / 11 + sway), np.zeros(frames)], 1)  # fmt: skip

    poses = np.zeros((frames + 1, 48), dtype=np.float64)
    t_ext = np.append(t, frames - 1)
    for side, wrist in ((active, wrist_active), (idle, wrist_idle)):
        layout = RIGHT if side == "right" else LEFT
        base = _base_rotation(side)
        angles = yaw if side == active else np.zeros(frames)
        rot = axis_angle_to_matrix(np.stack([np.zeros(frames), angles, np.zeros(frames)], 1)) @ base  # fmt: skip
        g = closure if side == active else np.full(frames, 0.15)
        tips = _OPEN_TIPS[None] * (1 - g[:, None, None]) + _CLOSED_TIPS[None] * g[:, None, None]
        poses[:, layout.wrist_position] = wrist[t_ext]
        poses[:, layout.wrist_rot6d] = matrix_to_rot6d(rot)[t_ext]
        poses[:, layout.fingertips] = tips.reshape(frames, 15)[t_ext]
    hand_mask = np.ones((frames, 2), dtype=bool)
    if rng.random() < config.absent_hand_probability:
        hand_mask[:, (RIGHT if idle == "right" else LEFT).index] = False
    state = poses[:frames].astype(np.float32)
    action = poses[1:].astype(np.float32)
    for layout in (LEFT, RIGHT):
        missing = ~hand_mask[:, layout.index]
        for block in (layout.wrist_position, layout.wrist_rot6d, layout.fingertips):
            state[missing, block] = 0.0
            action[missing, block] = 0.0
    obj_name = f"{colour} cube"
    subtasks = [
        Subtask(int(cuts[0]), int(cuts[1]), f"reach the {obj_name} with the {active} hand"),
        Subtask(int(cuts[1]), int(cuts[2]), f"grasp the {obj_name}"),
        Subtask(int(cuts[2]), int(cuts[3]), f"move the {obj_name} {place}"),
        Subtask(int(cuts[3]), int(cuts[4]), f"release the {obj_name}"),
    ]
    images = {}
    if config.render:
        k = scaled_intrinsics(config.height, config.width)
        images["ego"] = render_frames(state, hand_mask, obj_pos, _COLOURS[colour], k, config.height, config.width, seed=config.seed + index)  # fmt: skip
    return Episode(
        state=state,
        action=action,
        hand_mask=hand_mask,
        fps=float(config.fps),
        instruction=f"put the {obj_name} {place}",
        subtasks=subtasks,
        images=images,
        source="synthetic",
        embodiment="human_mano",
        metadata={
            "episode_seed": [config.seed, index],
            "active_hand": active,
            "object": obj_name,
            "object_positions": obj_pos.round(5).tolist(),
            "grasped": grasped.tolist(),
        },
    )


def fingertips_in_camera(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Wrist and fingertip positions in the camera frame.

    Args:
        vectors: ``(T, 48)`` contract vectors.

    Returns:
        ``{"left": (T, 6, 3), "right": (T, 6, 3)}``: wrist then thumb..little fingertips.
    """
    from metis_core.rotations import rot6d_to_matrix

    out = {}
    for layout in (LEFT, RIGHT):
        rot = np.asarray(rot6d_to_matrix(vectors[:, layout.wrist_rot6d].astype(np.float64)))
        wrist = vectors[:, layout.wrist_position].astype(np.float64)
        tips = vectors[:, layout.fingertips].reshape(-1, 5, 3).astype(np.float64)
        tips_cam = np.einsum("tij,tfj->tfi", rot, tips) + wrist[:, None]
        out[layout.side] = np.concatenate([wrist[:, None], tips_cam], axis=1)
    return out


def project(points: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pinhole projection ``(..., 3)`` camera points → ``(..., 2)`` pixels (u, v)."""
    z = np.clip(points[..., 2:3], 1e-3, None)
    uv = points[..., :2] / z
    return uv * np.array([intrinsics[0, 0], intrinsics[1, 1]]) + intrinsics[:2, 2]


def _background(height: int, width: int, intrinsics: np.ndarray, tint: np.ndarray) -> np.ndarray:
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    ray_y = (v - intrinsics[1, 2]) / intrinsics[1, 1]
    ray_x = (u - intrinsics[0, 2]) / intrinsics[0, 0]
    image = np.empty((height, width, 3), dtype=np.float64)
    image[:] = np.array([200.0, 205.0, 215.0]) * tint  # wall
    hits = ray_y > 1e-3
    depth = np.where(hits, _TABLE_Y / np.maximum(ray_y, 1e-3), 1e6)
    on_table = hits & (depth < 1.2)
    x, z = ray_x * depth, depth
    checker = ((np.floor(x / 0.1) + np.floor(z / 0.1)) % 2)[on_table]
    wood = np.array([150.0, 110.0, 70.0]) * tint
    image[on_table] = wood * (0.9 + 0.1 * checker[:, None])
    return image


def _disc(image: np.ndarray, centre: np.ndarray, radius: float, colour: np.ndarray) -> None:
    h, w = image.shape[:2]
    cu, cv = centre
    r = max(radius, 0.7)
    u0, u1 = int(max(np.floor(cu - r), 0)), int(min(np.ceil(cu + r) + 1, w))
    v0, v1 = int(max(np.floor(cv - r), 0)), int(min(np.ceil(cv + r) + 1, h))
    if u0 >= u1 or v0 >= v1:
        return
    vv, uu = np.mgrid[v0:v1, u0:u1]
    inside = (uu - cu) ** 2 + (vv - cv) ** 2 <= r * r
    image[v0:v1, u0:u1][inside] = colour


def _segment(image: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, colour: np.ndarray) -> None:  # fmt: skip
    steps = int(np.ceil(np.linalg.norm(b - a) / max(radius, 0.5))) + 1
    for s in np.linspace(0.0, 1.0, steps):
        _disc(image, a + (b - a) * s, radius, colour)


def render_frames(
    state: np.ndarray,
    hand_mask: np.ndarray,
    object_positions: np.ndarray,
    object_colour: tuple[int, int, int],
    intrinsics: np.ndarray,
    height: int,
    width: int,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Draw the scene for every frame.

    Args:
        state: ``(T, 48)`` hand poses.
        hand_mask: ``(T, 2)`` presence.
        object_positions: ``(T, 3)`` object centre in the camera frame.
        object_colour: RGB of the manipulated object.
        intrinsics: ``(3, 3)`` K for this image size.
        height, width: Image size.
        seed: Varies the lighting tint and the distractor objects.

    Returns:
        ``(T, H, W, 3)`` uint8.
    """
    rng = np.random.default_rng(seed)
    tint = rng.uniform(0.85, 1.1, 3)
    background = _background(height, width, intrinsics, tint)
    distractors = []
    for name in rng.choice(list(_COLOURS), size=2, replace=False):
        pos = np.array([rng.uniform(-0.25, 0.25), _TABLE_Y - 0.025, rng.uniform(0.6, 0.85)])
        distractors.append((pos, np.array(_COLOURS[name], dtype=np.float64) * 0.8))
    keypoints = fingertips_in_camera(state)
    focal = intrinsics[0, 0]
    skin = {"left": np.array([225.0, 180.0, 150.0]), "right": np.array([210.0, 165.0, 135.0])}
    frames = np.empty((state.shape[0], height, width, 3), dtype=np.uint8)
    for t in range(state.shape[0]):
        image = background.copy()
        items = [(p, 0.025, c) for p, c in distractors]
        items.append((object_positions[t], 0.03, np.array(object_colour, dtype=np.float64)))
        for pos, size, colour in sorted(items, key=lambda item: -item[0][2]):
            _disc(image, project(pos, intrinsics), focal * size / pos[2], colour)
        for layout in (LEFT, RIGHT):
            if not hand_mask[t, layout.index]:
                continue
            points = keypoints[layout.side][t]
            pixels = project(points, intrinsics)
            thickness = focal * 0.008 / points[0, 2]
            _disc(image, pixels[0], focal * 0.03 / points[0, 2], skin[layout.side] * 0.9)
            for tip in range(1, 6):
                _segment(image, pixels[0], pixels[tip], thickness, skin[layout.side])
                _disc(image, pixels[tip], thickness * 1.4, skin[layout.side] * 0.8)
        frames[t] = np.clip(image, 0, 255).astype(np.uint8)
    return frames


def make_dataset(
    out_dir: str | os.PathLike[str],
    *,
    episodes: int = 8,
    seed: int = 0,
    frames: int = 64,
    image_size: tuple[int, int] | None = (240, 320),
    fps: float = 30.0,
    episodes_per_file: int = 50,
    progress: bool = False,
) -> Path:
    """Generate synthetic episodes and write them as a LeRobot v3 dataset (resumable).

    Args:
        out_dir: Dataset directory.
        episodes: Number of episodes.
        seed: Seed; the same seed gives the same dataset.
        frames: Frames per episode.
        image_size: ``(H, W)`` of rendered frames, or None for a tabular-only dataset.
        fps: Frame rate.
        episodes_per_file: Episodes per data/video file.
        progress: Show a progress bar.

    Returns:
        The dataset root (open it with :class:`~metis_datasets.lerobot_format.LeRobotDataset`).
    """
    from metis_datasets.lerobot_format import write_episodes

    height, width = image_size if image_size is not None else (240, 320)
    config = SyntheticConfig(episodes=episodes, seed=seed, frames=frames, height=height, width=width, fps=fps, render=image_size is not None)  # fmt: skip
    source = SyntheticSource(config)
    return write_episodes(
        out_dir,
        source.iter_episodes(),
        fps=fps,
        source="synthetic",
        embodiment="human_mano",
        camera_intrinsics=source.intrinsics,
        image_shape=tuple(image_size) if image_size is not None else None,
        episodes_per_file=episodes_per_file,
        total=episodes,
        progress=progress,
    )
