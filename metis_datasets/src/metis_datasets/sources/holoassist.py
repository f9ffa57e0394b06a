"""HoloAssist (Wang et al., ICCV 2023): HoloLens 2 recordings of assisted tasks.

Reads ``<video_name>/Export_py/`` (see ``docs/sources/holoassist.md``): ``Video/Pose_sync.txt``
(time, ticks, 4×4 camera-to-world, \\psi "forward-left-up" axes), ``Hands/{Left,Right}_sync.txt``
(time, ticks, tracked flag, 26 joint-to-world 4×4 matrices, 26 valid flags, 26 tracked flags),
``Video/Intrinsics.txt`` (K, distortion, width, height), ``Video_pitchshift.mp4`` (ego frames),
and the annotation JSON (``data-annotation-*.json``): fine-grained actions become subtasks.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metis_core.episode import Episode
from metis_datasets.sources._common import (
    HOLOLENS_26,
    IndexedDatasetSource,
    SegmentSeconds,
    SkipEpisode,
    SourceConfig,
    build_episode,
    fit_image,
    fit_intrinsics,
    hands_to_contract,
    require_keys,
    require_path,
)

__all__ = ["FLU_TO_OPENCV", "HoloAssistConfig", "HoloAssistSource", "read_sync_table"]

#: OpenCV camera axes from \psi/MathNet "forward-left-up" axes (inverse of PyHoloAssist's
#: ``axis_transform``): x_cv = -y_flu, y_cv = -z_flu, z_cv = x_flu.
FLU_TO_OPENCV = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_HAND_COLUMNS = 3 + 26 * 16 + 26 + 26
_POSE_COLUMNS = 2 + 16
_FINE = "Fine grained action"
_COARSE = "Coarse grained action"


@dataclass(frozen=True, kw_only=True)
class HoloAssistConfig(SourceConfig):
    """Config of the HoloAssist adapter.

    Args:
        annotation_file: Path of the annotation JSON; empty = the first
            ``data-annotation-*.json`` directly under the raw directory (episodes then have no
            subtasks if there is none).
        video_name: Ego video inside ``Export_py`` (``Video_compress.mp4`` is the smaller one).
    """

    annotation_file: str = ""
    video_name: str = "Video_pitchshift.mp4"


def read_sync_table(path: Path, columns: int) -> np.ndarray:
    """A tab-separated ``*_sync.txt`` file as ``(T, columns)`` float64.

    ``Hands`` files of "version 2" exports carry two extra header columns; those are dropped.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If a line has another number of columns.
    """
    rows = []
    for number, line in enumerate(require_path(path, "a HoloAssist _sync.txt file").read_text().splitlines()):  # fmt: skip
        if not line.strip():
            continue
        values = line.split()
        if len(values) == columns + 2 and columns == _HAND_COLUMNS:
            values = values[:1] + values[3:]
        if len(values) != columns:
            raise ValueError(f"{path}:{number + 1}: expected {columns} tab-separated columns, found {len(values)}")  # fmt: skip
        rows.append(np.array(values, dtype=np.float64))
    if not rows:
        raise ValueError(f"{path}: empty; expected one line per video frame")
    return np.stack(rows)


class HoloAssistSource(IndexedDatasetSource):
    """HoloAssist recordings from the HoloLens PV camera (see the module docstring)."""

    name = "holoassist"
    config_class = HoloAssistConfig
    config: HoloAssistConfig

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Recording names: folders holding ``Export_py/Hands/Right_sync.txt``."""
        return sorted(p.parent.parent.parent.name for p in Path(raw_dir).glob("*/Export_py/Hands/Right_sync.txt"))  # fmt: skip

    def _annotation_path(self, raw_dir: Path) -> Path | None:
        if self.config.annotation_file:
            return require_path(Path(self.config.annotation_file), "the HoloAssist annotation JSON (config annotation_file)")  # fmt: skip
        found = sorted(Path(raw_dir).glob("data-annotation-*.json"))
        return found[0] if found else None

    def check_layout(self, raw_dir: Path) -> None:
        """Check ``<video>/Export_py/{Video/Pose_sync.txt, Video/Intrinsics.txt, Hands/*_sync.txt}``.

        Raises:
            FileNotFoundError: Naming the missing file.
            ValueError: For files with the wrong number of columns or a malformed annotation JSON.
        """
        raw_dir = require_path(Path(raw_dir), "the HoloAssist root holding <video_name>/Export_py/", directory=True)  # fmt: skip
        episodes = self.list_episodes(raw_dir)
        if not episodes:
            raise FileNotFoundError(f"{raw_dir}: no <video_name>/Export_py/Hands/Right_sync.txt found (entries {sorted(p.name for p in raw_dir.iterdir())[:10]}); expected HoloAssist's per-recording Export_py folders")  # fmt: skip
        export = raw_dir / episodes[0] / "Export_py"
        for name in ("Video/Pose_sync.txt", "Video/Intrinsics.txt", "Hands/Left_sync.txt"):
            require_path(export / name, "part of HoloAssist's Export_py layout")
        read_sync_table(export / "Video" / "Pose_sync.txt", _POSE_COLUMNS)
        read_sync_table(export / "Hands" / "Right_sync.txt", _HAND_COLUMNS)
        _intrinsics(export / "Video" / "Intrinsics.txt")
        path = self._annotation_path(raw_dir)
        if path is not None:
            _annotations(path)

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one recording."""
        config = self.config
        export = Path(raw_dir) / episode_id / "Export_py"
        pose = read_sync_table(export / "Video" / "Pose_sync.txt", _POSE_COLUMNS)
        hands = {side: read_sync_table(export / "Hands" / f"{side.title()}_sync.txt", _HAND_COLUMNS) for side in ("left", "right")}  # fmt: skip
        frames = min(len(pose), *(len(h) for h in hands.values()))
        times = pose[:frames, 0]
        if not np.all(np.diff(times) > 0):
            raise SkipEpisode(f"{export / 'Video' / 'Pose_sync.txt'}: times are not increasing")
        camera_to_world = pose[:frames, 2:].reshape(frames, 4, 4)
        world_to_camera = np.linalg.inv(camera_to_world)
        keypoints, present = {}, {}
        for side, table in hands.items():
            table = table[:frames]
            if np.max(np.abs(table[:, 0] - times)) > 1e-3:
                raise ValueError(f"{export / 'Hands'}/{side.title()}_sync.txt: its times differ from Video/Pose_sync.txt; expected one line per video frame")  # fmt: skip
            matrices = table[:, 3 : 3 + 26 * 16].reshape(frames, 26, 4, 4)
            world = np.concatenate([matrices[:, :, :3, 3], np.ones((frames, 26, 1))], axis=-1)
            in_camera = np.einsum("tij,tkj->tki", world_to_camera, world)[..., :3]
            keypoints[side] = in_camera @ FLU_TO_OPENCV.T
            valid = table[:, 3 + 26 * 16 : 3 + 26 * 16 + 26] > 0.5
            used = [HOLOLENS_26.wrist, HOLOLENS_26.index_mcp, HOLOLENS_26.middle_mcp, HOLOLENS_26.little_mcp, *HOLOLENS_26.fingertips]  # fmt: skip
            present[side] = (table[:, 2] > 0.5) & valid[:, used].all(axis=1)
        vectors, mask = hands_to_contract(keypoints["left"], keypoints["right"], layout=HOLOLENS_26, left_present=present["left"], right_present=present["right"])  # fmt: skip
        intrinsics, (width, height) = _intrinsics(export / "Video" / "Intrinsics.txt")
        segments, instruction, coarse = [], "", []
        path = self._annotation_path(Path(raw_dir))
        if path is not None:
            record = _annotations(path).get(episode_id)
            if record is not None:
                instruction = str(record.get("taskType", ""))
                for event in record.get("events", []):
                    attributes = event.get("attributes") or {}
                    text = " ".join(str(attributes[k]) for k in ("Verb", "Noun") if attributes.get(k))  # fmt: skip
                    # Note: event times are seconds from the start of the recording (M); the
                    # first synced frame is taken as that start.
                    span = (times[0] + float(event["start"]), times[0] + float(event["end"]))
                    if event.get("label") == _FINE and text:
                        segments.append(SegmentSeconds(*span, text))
                    elif event.get("label") == _COARSE:
                        coarse.append({"start_s": float(event["start"]), "end_s": float(event["end"]), "text": text})  # fmt: skip
        images = None
        metadata = {"holoassist_video": episode_id, "camera_intrinsics": intrinsics.tolist(), "coarse_actions": coarse}  # fmt: skip
        if config.with_images:
            video = export / config.video_name
            if not video.is_file():
                raise SkipEpisode(f"ego video {video} is missing (convert with with_images=False to keep only poses)")  # fmt: skip
            ego, source_hw = _read_video(video, frames, config.image_height, config.image_width)
            # Video_compress.mp4 may be smaller than the PV frames K belongs to: rescale first.
            scale = np.diag([source_hw[1] / width, source_hw[0] / height, 1.0])
            metadata["camera_intrinsics"] = fit_intrinsics(scale @ intrinsics, source_hw, config.image_height, config.image_width).tolist()  # fmt: skip
            images = {"ego": ego}
        return build_episode(
            vectors,
            mask,
            times,
            target_fps=config.target_fps,
            source=self.name,
            instruction=instruction,
            segments=segments,
            images=images,
            metadata=metadata,
            max_gap_s=0.1,
        )


def _intrinsics(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    values = np.array(require_path(path, "HoloAssist Video/Intrinsics.txt").read_text().split(), dtype=np.float64)  # fmt: skip
    if values.size != 25:
        raise ValueError(f"{path}: expected 25 fields (K 3x3, radial 6, tangential 2, FL, FLx, FLy, PPx, PPy, flag, W, H), found {values.size}")  # fmt: skip
    return values[:9].reshape(3, 3), (float(values[23]), float(values[24]))


@functools.lru_cache(maxsize=4)
def _annotations(path: Path) -> dict[str, dict]:
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from err
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of {{video_name, taskType, events}} records, got {type(records).__name__}")  # fmt: skip
    out = {}
    for number, record in enumerate(records):
        require_keys(record, ["video_name", "events"], f"{path} record {number}")
        out[str(record["video_name"])] = record
    return out


def _read_video(path: Path, frames: int, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:  # fmt: skip
    import av

    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    count, size = 0, (height, width)
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if count == frames:
                break
            image = frame.to_ndarray(format="rgb24")
            size = (int(image.shape[0]), int(image.shape[1]))
            out[count] = fit_image(image, height, width)
            count += 1
    if count < frames:
        raise SkipEpisode(f"{path} has {count} frames, the _sync files {frames}")
    return out, size
