"""H2O (Kwon et al., ICCV 2021): two hands manipulating objects, head-mounted camera ``cam4``.

Reads ``subjectN/<scene>/<k>/cam4/`` of the published download (see ``docs/sources/h2o.md``):
``hand_pose/%06d.txt`` (128 floats: left valid flag, 21×3 left joints, right flag, 21×3 right
joints, in the camera frame, metres, OpenPose order), ``cam_intrinsics.txt`` (fx fy cx cy w h),
``action_label/%06d.txt`` (per-frame action id → subtasks) and ``rgb/%06d.png`` (ego frames).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metis_core.episode import Episode
from metis_datasets.sources._common import (
    OPENPOSE_21,
    IndexedDatasetSource,
    SegmentSeconds,
    SkipEpisode,
    SourceConfig,
    build_episode,
    hands_to_contract,
    load_ego_images,
    require_path,
)

__all__ = ["H2O_ACTIONS", "H2OConfig", "H2OSource", "read_action_segments"]

#: Action ids of H2O's ``action_label`` files (README of taeinkwon/h2odataset); 0 = background.
H2O_ACTIONS = (
    "background",
    *[
        f"grab {o}"
        for o in ("book", "espresso", "lotion", "spray", "milk", "cocoa", "chips", "cappuccino")
    ],
    *[
        f"place {o}"
        for o in ("book", "espresso", "lotion", "spray", "milk", "cocoa", "chips", "cappuccino")
    ],
    "open lotion",
    "open milk",
    "open chips",
    "close lotion",
    "close milk",
    "close chips",
    "pour milk",
    "take out espresso",
    "take out cocoa",
    "take out chips",
    "take out cappuccino",
    "put in espresso",
    "put in cocoa",
    "put in cappuccino",
    "apply lotion",
    "apply spray",
    "read book",
    "read espresso",
    "spray spray",
    "squeeze lotion",
)
_SEQUENCE = re.compile(r"^subject\d+$")
_HAND_POSE_VALUES = 128


@dataclass(frozen=True, kw_only=True)
class H2OConfig(SourceConfig):
    """Config of the H2O adapter.

    Args:
        source_fps: Capture rate of the annotations (Azure Kinect, 30 Hz; not stated in the
            README, SOURCES.md confidence M).
        camera: Camera folder read as the ego view (``cam4`` is the head-mounted one).
    """

    source_fps: float = 30.0
    camera: str = "cam4"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.source_fps > 0:
            raise ValueError(f"source_fps must be positive, got {self.source_fps}")


def _numbers(path: Path, count: int | None = None) -> np.ndarray:
    try:
        values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: expected whitespace-separated numbers ({err})") from err
    if count is not None and values.size != count:
        raise ValueError(f"{path}: expected {count} numbers, found {values.size}")
    return values


def _frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("*.txt") if p.stem.isdigit()), key=lambda p: int(p.stem))


def read_action_segments(folder: Path, fps: float) -> list[SegmentSeconds]:
    """Runs of equal non-zero ids in ``action_label/%06d.txt`` → segments (seconds = frame / fps)."""
    segments: list[SegmentSeconds] = []
    files = _frame_files(folder)
    labels = [(int(p.stem), int(_numbers(p, 1)[0])) for p in files]
    run_start, run_label, previous = None, 0, None
    for frame, label in [*labels, (None, 0)]:
        contiguous = frame is not None and previous is not None and frame == previous + 1
        if run_label and (label != run_label or not contiguous):
            segments.append(SegmentSeconds(run_start / fps, (previous + 1) / fps, _action_text(run_label, folder)))  # fmt: skip
            run_label = 0
        if label and label != run_label:
            run_start, run_label = frame, label
        previous = frame
    return segments


def _action_text(label: int, where: Path) -> str:
    if not 0 <= label < len(H2O_ACTIONS):
        raise ValueError(f"{where}: action id {label} is not one of H2O's 0..{len(H2O_ACTIONS) - 1}")  # fmt: skip
    return H2O_ACTIONS[label]


class H2OSource(IndexedDatasetSource):
    """H2O egocentric two-hand sequences (see the module docstring)."""

    name = "h2o"
    config_class = H2OConfig
    config: H2OConfig

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Ids ``subjectN/<scene>/<k>`` of every sequence with a ``hand_pose`` folder."""
        raw_dir = Path(raw_dir)
        found = []
        for subject in sorted(p for p in raw_dir.iterdir() if p.is_dir() and _SEQUENCE.match(p.name)):  # fmt: skip
            for pose_dir in sorted(subject.glob(f"*/*/{self.config.camera}/hand_pose")):
                sequence = pose_dir.parent.parent
                found.append(sequence.relative_to(raw_dir).as_posix())
        return sorted(found, key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)])  # fmt: skip

    def check_layout(self, raw_dir: Path) -> None:
        """Check for ``subjectN/<scene>/<k>/cam4/{hand_pose/*.txt, cam_intrinsics.txt}``.

        Raises:
            FileNotFoundError: Naming the missing folder or file.
            ValueError: If a hand-pose file does not hold 128 numbers.
        """
        raw_dir = require_path(Path(raw_dir), "the H2O root holding subject1/, subject2/, ...", directory=True)  # fmt: skip
        episodes = self.list_episodes(raw_dir)
        if not episodes:
            subjects = [p.name for p in raw_dir.iterdir()][:10]
            raise FileNotFoundError(f"{raw_dir}: no subjectN/<scene>/<k>/{self.config.camera}/hand_pose/ folder found (found entries {subjects}); expected the H2O layout subject1/h1/0/{self.config.camera}/hand_pose/000000.txt")  # fmt: skip
        camera = raw_dir / episodes[0] / self.config.camera
        require_path(camera / "cam_intrinsics.txt", "H2O camera intrinsics 'fx fy cx cy width height'")  # fmt: skip
        _numbers(camera / "cam_intrinsics.txt", 6)
        files = _frame_files(camera / "hand_pose")
        if not files:
            raise FileNotFoundError(f"{camera / 'hand_pose'} holds no %06d.txt hand-pose files")
        _numbers(files[0], _HAND_POSE_VALUES)

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one sequence ``subjectN/<scene>/<k>``."""
        config = self.config
        camera = Path(raw_dir) / episode_id / config.camera
        files = _frame_files(require_path(camera / "hand_pose", "H2O hand_pose/ folder", directory=True))  # fmt: skip
        if len(files) < 2:
            raise SkipEpisode(f"{len(files)} hand-pose file(s) in {camera / 'hand_pose'}")
        frames = np.array([int(p.stem) for p in files])
        rows = np.stack([_numbers(p, _HAND_POSE_VALUES) for p in files])
        left_valid, left = rows[:, 0] > 0.5, rows[:, 1:64].reshape(-1, 21, 3)
        right_valid, right = rows[:, 64] > 0.5, rows[:, 65:128].reshape(-1, 21, 3)
        if np.abs(rows[:, 1:64][left_valid]).max(initial=0) > 10 or np.abs(rows[:, 65:][right_valid]).max(initial=0) > 10:  # fmt: skip
            raise ValueError(f"{camera / 'hand_pose'}: coordinates above 10 m; expected metres")
        vectors, mask = hands_to_contract(left, right, layout=OPENPOSE_21, left_present=left_valid, right_present=right_valid)  # fmt: skip
        fx, fy, cx, cy, _, _ = _numbers(camera / "cam_intrinsics.txt", 6)
        intrinsics = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        segments = []
        if (camera / "action_label").is_dir():
            segments = read_action_segments(camera / "action_label", config.source_fps)
        images = None
        if config.with_images:
            paths = [camera / "rgb" / f"{frame:06d}.png" for frame in frames]
            images, intrinsics = load_ego_images(paths, config, intrinsics)
        instruction = ", then ".join(dict.fromkeys(s.text for s in segments))
        return build_episode(
            vectors,
            mask,
            frames / config.source_fps,
            target_fps=config.target_fps,
            source=self.name,
            instruction=instruction,
            segments=segments,
            images=images,
            metadata={"camera_intrinsics": intrinsics.tolist(), "h2o_sequence": episode_id},
            max_gap_s=1.5 / config.source_fps,
        )
