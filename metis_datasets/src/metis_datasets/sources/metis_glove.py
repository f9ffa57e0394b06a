"""``metis_glove``: our on-disk format for the wearable rig of the METIS paper, its writer and adapter.

The rig: a Manus glove on each hand (25 raw-skeleton keypoints per hand), a 6-DoF tracker on
each wrist and one on the head-mounted ego camera (for calibration), recorded at 20 Hz, with the
ego camera video, a top-down third-person camera, a language instruction and subtask segments.

Layout, one directory per episode (format version 1; full description in
``docs/sources/metis_glove.md``)::

    <root>/<episode_id>/
        meta.json              format, version, instruction, rate, keypoint names, calibration,
                               camera intrinsics (see :class:`GloveRecordingWriter`)
        frames.parquet         one row per tick: timestamp_s; {left,right}_keypoints (75 float32:
                               25 × xyz in the glove's wrist frame, metres); {left,right}_valid;
                               {left_wrist,right_wrist,head}_pose (12 float64: a 3×4 row-major
                               [R | t] device → tracking-universe pose, OpenVR's
                               ``mDeviceToAbsoluteTracking``); {left_wrist,right_wrist,head}_valid
        subtasks.json          [{"start_s": ..., "end_s": ..., "text": ...}, ...]
        videos/ego.mp4         ego camera (H.264)
        videos/top.mp4         top-down third-person camera (optional)
        videos/timestamps.json {"ego": [seconds per frame], "top": [...]} on the frames' clock

Frames: a hand's keypoints reach the ego camera through
``T_cam←world · T_world←tracker · T_tracker←wrist · p``, where ``T_tracker←wrist`` (each wrist
tracker's mount) and ``T_head←camera`` (the ego camera in the head tracker's frame, OpenCV
axes) are the calibrations in ``meta.json``. Keypoint order is the ``human_manus``
embodiment's (``MANUS_KEYPOINT_NAMES`` of ``metis_embodiments.human_manus``): the recorder maps
Manus nodes by (chain type, joint type), never by node id (:func:`manus_node_order`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from metis_core.episode import Episode
from metis_core.io import CorruptFileError, atomic_directory, read_json
from metis_datasets.sources._common import (
    IndexedDatasetSource,
    KeypointLayout,
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
from metis_embodiments.human_manus.embodiment_human_manus import MANUS_KEYPOINT_NAMES

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANUS_25",
    "GloveRecordingWriter",
    "MetisGloveConfig",
    "MetisGloveSource",
    "manus_node_order",
]

FORMAT_NAME = "metis_glove"
FORMAT_VERSION = 1
#: Manus raw-skeleton order (``human_manus``): wrist, thumb 1-4, then 5 nodes per finger.
MANUS_25 = KeypointLayout("manus-25", 25, 0, 6, 11, 21, (4, 9, 14, 19, 24))
TRACKERS = ("left_wrist", "right_wrist", "head")
_COLUMNS = ("timestamp_s", *(f"{s}_{k}" for s in ("left", "right") for k in ("keypoints", "valid")), *(f"{t}_{k}" for t in TRACKERS for k in ("pose", "valid")))  # fmt: skip
_META_KEYS = ("format", "version", "episode_id", "instruction", "rate_hz", "keypoint_names", "calibration", "cameras")  # fmt: skip
_CALIBRATION_KEYS = ("left_wrist_tracker_to_wrist", "right_wrist_tracker_to_wrist", "head_tracker_to_ego_camera")  # fmt: skip
_EPISODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


_MANUS_CHAINS = {"thumb": "thumb", "index": "index", "middle": "middle", "ring": "ring", "pinky": "little"}  # fmt: skip
_MANUS_JOINTS = {
    "thumb": {"metacarpal": "cmc", "proximal": "mcp", "distal": "ip", "tip": "tip"},
    "finger": {
        "metacarpal": "metacarpal",
        "proximal": "mcp",
        "intermediate": "pip",
        "distal": "dip",
        "tip": "tip",
    },
}


def _manus_keypoint_name(chain_type: str, joint_type: str) -> str | None:
    chain = str(chain_type).removeprefix("ChainType_").lower()
    joint = str(joint_type).removeprefix("FingerJointType_").lower()
    if chain == "hand":
        return "wrist"
    finger = _MANUS_CHAINS.get(chain.removeprefix("finger"))
    if finger is None or not chain.startswith("finger"):
        return None
    name = _MANUS_JOINTS["thumb" if finger == "thumb" else "finger"].get(joint)
    return None if name is None else f"{finger}_{name}"


def manus_node_order(nodes: Sequence[tuple[str, str]]) -> list[int]:
    """Where each ``metis_glove`` keypoint sits in a Manus SDK raw-skeleton node list.

    Manus node ids are opaque, so the recorder maps nodes by their metadata
    (``NodeInfo.chainType`` and ``NodeInfo.fingerJointType`` from
    ``CoreSdk_GetRawSkeletonNodeInfoArray``): the ``Hand`` chain is the wrist; for the thumb the
    SDK's Metacarpal, Proximal, Distal and Tip nodes are the CMC, MCP, IP and tip; for the other
    fingers Metacarpal, Proximal, Intermediate, Distal and Tip are the metacarpal base, MCP, PIP,
    DIP and tip (the SDK names the bones, we name the joints at their bases).

    Args:
        nodes: Per SDK node, ``(chain_type, finger_joint_type)`` enum names, with or without the
            ``ChainType_`` / ``FingerJointType_`` prefixes (e.g. ``("ChainType_FingerIndex",
            "FingerJointType_Proximal")`` or ``("Hand", "Invalid")``).

    Returns:
        25 node positions: ``positions[manus_node_order(info)]`` is in the order of
        ``MANUS_KEYPOINT_NAMES`` of ``metis_embodiments.human_manus``.

    Raises:
        ValueError: If a keypoint has no node or more than one.
    """
    found: dict[str, list[int]] = {}
    for position, (chain_type, joint_type) in enumerate(nodes):
        name = _manus_keypoint_name(chain_type, joint_type)
        if name is not None:
            found.setdefault(name, []).append(position)
    missing = [n for n in MANUS_KEYPOINT_NAMES if n not in found]
    repeated = {n: p for n, p in found.items() if len(p) > 1}
    if missing or repeated:
        raise ValueError(f"Manus node info: expected one node per keypoint of {list(MANUS_KEYPOINT_NAMES)}; missing {missing}, repeated {repeated}")  # fmt: skip
    return [found[name][0] for name in MANUS_KEYPOINT_NAMES]


def _pose34(matrix: Any, what: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape == (4, 4):
        array = array[:3]
    if array.shape != (3, 4) or not np.isfinite(array).all():
        raise ValueError(f"{what}: expected a finite 3x4 [R | t] (or 4x4) pose, got shape {array.shape}")  # fmt: skip
    return array


def _homogeneous(pose34: np.ndarray) -> np.ndarray:
    out = np.zeros((*pose34.shape[:-2], 4, 4))
    out[..., :3, :] = pose34
    out[..., 3, 3] = 1.0
    return out


class GloveRecordingWriter:
    """Recorder-side writer of one ``metis_glove`` episode, atomic as a whole.

    Use it as a context manager; the episode directory appears only when the block ends
    without an error (it is built under a temporary name and renamed), so a crashed recording
    leaves nothing half-written::

        with GloveRecordingWriter(root, "ep_0001", instruction="put the cup in the basket",
                                  ego_intrinsics=K, ego_size=(480, 640), calibration=cal) as rec:
            rec.add_frame(t, left_keypoints=l, right_keypoints=r,
                          left_wrist_pose=lw, right_wrist_pose=rw, head_pose=h)
            rec.add_video_frame("ego", t, rgb)
            rec.add_subtask(0.0, 2.5, "grasp the cup")

    Args:
        root: Dataset directory (created if missing).
        episode_id: Directory name of the episode (letters, digits, ``_.-``).
        instruction: Language instruction of the episode.
        ego_intrinsics: ``(3, 3)`` pinhole K of the ego camera in pixels.
        ego_size: ``(height, width)`` of the ego frames.
        calibration: ``left_wrist_tracker_to_wrist`` and ``right_wrist_tracker_to_wrist`` (pose
            of the glove's wrist frame in each wrist tracker's frame) and
            ``head_tracker_to_ego_camera`` (pose of the OpenCV ego camera in the head
            tracker's frame), each 3×4 or 4×4.
        top_intrinsics: ``(3, 3)`` K of the top-down camera, if recorded.
        top_size: ``(height, width)`` of the top-down frames.
        rate_hz: Nominal tick rate (the rig records at 20 Hz).
        overwrite: Replace an existing episode directory.

    Raises:
        ValueError: For a bad episode id, calibration or intrinsics.
        FileExistsError: If the episode exists and ``overwrite`` is False.
    """

    def __init__(
        self,
        root: str | Path,
        episode_id: str,
        *,
        instruction: str,
        ego_intrinsics: Any,
        ego_size: tuple[int, int],
        calibration: Mapping[str, Any],
        top_intrinsics: Any = None,
        top_size: tuple[int, int] | None = None,
        rate_hz: float = 20.0,
        overwrite: bool = False,
    ) -> None:
        if not _EPISODE_ID.match(episode_id):
            raise ValueError(f"episode_id {episode_id!r}: use letters, digits, '_', '.', '-' (not starting with '.')")  # fmt: skip
        missing = [k for k in _CALIBRATION_KEYS if k not in calibration]
        if missing:
            raise ValueError(f"calibration lacks {missing}; expected {list(_CALIBRATION_KEYS)}")
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, got {rate_hz}")
        cameras: dict[str, Any] = {"ego": self._camera(ego_intrinsics, ego_size, "ego")}
        if top_intrinsics is not None or top_size is not None:
            cameras["top"] = self._camera(top_intrinsics, top_size, "top")
        self.path = Path(root) / episode_id
        self.meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "episode_id": episode_id,
            "instruction": str(instruction),
            "rate_hz": float(rate_hz),
            "keypoint_names": list(MANUS_KEYPOINT_NAMES),
            "keypoint_frame": "glove wrist frame (Manus world_space=false), metres",
            "tracker_convention": "OpenVR mDeviceToAbsoluteTracking: 3x4 row-major [R|t], device -> tracking universe, metres",
            "calibration": {k: _pose34(calibration[k], k).tolist() for k in _CALIBRATION_KEYS},
            "cameras": cameras,
        }
        self._overwrite = overwrite
        self._rows: dict[str, list] = {c: [] for c in _COLUMNS}
        self._subtasks: list[dict] = []
        self._video_times: dict[str, list[float]] = {}
        self._videos: dict[str, Any] = {}
        self._context: Any = None
        self._staging: Path | None = None

    @staticmethod
    def _camera(intrinsics: Any, size: tuple[int, int] | None, name: str) -> dict:
        k = np.asarray(intrinsics, dtype=np.float64)
        if k.shape != (3, 3) or not np.isfinite(k).all() or k[2, 2] != 1.0:
            raise ValueError(f"{name}_intrinsics: expected a 3x3 pinhole K with K[2,2] = 1, got {k.tolist() if k.size < 20 else k.shape}")  # fmt: skip
        if size is None or len(size) != 2 or min(size) < 2 or size[0] % 2 or size[1] % 2:
            raise ValueError(f"{name}_size: expected even (height, width), got {size}")
        return {"intrinsics": k.tolist(), "height": int(size[0]), "width": int(size[1])}

    # -- context -----------------------------------------------------------------------------

    def __enter__(self) -> GloveRecordingWriter:
        self._context = atomic_directory(self.path, overwrite=self._overwrite)
        self._staging = self._context.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:  # fmt: skip
        try:
            if kind is None:
                self._finish()
        except BaseException as finish_error:
            self._close_videos()
            self._context.__exit__(type(finish_error), finish_error, finish_error.__traceback__)
            raise
        if kind is not None:
            self._close_videos()
        self._context.__exit__(kind, error, trace)

    def _require_open(self) -> Path:
        if self._staging is None:
            raise RuntimeError("GloveRecordingWriter must be used as a context manager (with ... as rec)")  # fmt: skip
        return self._staging

    # -- recording ---------------------------------------------------------------------------

    def add_frame(
        self,
        timestamp_s: float,
        *,
        left_keypoints: Any,
        right_keypoints: Any,
        left_wrist_pose: Any,
        right_wrist_pose: Any,
        head_pose: Any,
        left_valid: bool = True,
        right_valid: bool = True,
        left_wrist_valid: bool = True,
        right_wrist_valid: bool = True,
        head_valid: bool = True,
    ) -> None:
        """Record one tick.

        Args:
            timestamp_s: Seconds on the rig's clock (strictly increasing).
            left_keypoints: ``(25, 3)`` left glove keypoints in its wrist frame (metres).
            right_keypoints: ``(25, 3)`` right glove keypoints.
            left_wrist_pose: 3×4 (or 4×4) OpenVR pose of the left wrist tracker.
            right_wrist_pose: Pose of the right wrist tracker.
            head_pose: Pose of the head tracker.
            left_valid: The left glove's data is valid at this tick.
            right_valid: The right glove's data is valid.
            left_wrist_valid: OpenVR ``bPoseIsValid`` of the left wrist tracker.
            right_wrist_valid: Validity of the right wrist tracker.
            head_valid: Validity of the head tracker.

        Raises:
            ValueError: Wrong shapes, NaN, or a timestamp that does not increase.
        """
        self._require_open()
        times = self._rows["timestamp_s"]
        if times and not timestamp_s > times[-1]:
            raise ValueError(f"timestamp_s {timestamp_s} does not come after {times[-1]}")
        # Validate everything before appending anything: a refused tick leaves no partial row.
        row: dict[str, Any] = {}
        for side, points in (("left", left_keypoints), ("right", right_keypoints)):
            array = np.asarray(points, dtype=np.float32)
            if array.shape != (25, 3) or not np.isfinite(array).all():
                raise ValueError(f"{side}_keypoints: expected finite (25, 3) metres in the Manus order, got {array.shape}")  # fmt: skip
            row[f"{side}_keypoints"] = array.reshape(75)
        for name, pose in zip(
            TRACKERS, (left_wrist_pose, right_wrist_pose, head_pose), strict=True
        ):
            row[f"{name}_pose"] = _pose34(pose, f"{name}_pose").reshape(12)
        for key, value in row.items():
            self._rows[key].append(value)
        flags = (left_valid, right_valid, left_wrist_valid, right_wrist_valid, head_valid)
        for key, flag in zip(("left_valid", "right_valid", "left_wrist_valid", "right_wrist_valid", "head_valid"), flags, strict=True):  # fmt: skip
            self._rows[key].append(bool(flag))
        times.append(float(timestamp_s))

    def add_video_frame(self, camera: str, timestamp_s: float, rgb: np.ndarray) -> None:
        """Encode one frame of ``"ego"`` or ``"top"`` (``(H, W, 3)`` uint8 RGB of the declared size)."""
        import av

        staging = self._require_open()
        if camera not in self.meta["cameras"]:
            raise ValueError(f"camera {camera!r} was not declared; declared: {sorted(self.meta['cameras'])}")  # fmt: skip
        spec = self.meta["cameras"][camera]
        frame = np.asarray(rgb)
        if frame.shape != (spec["height"], spec["width"], 3) or frame.dtype != np.uint8:
            raise ValueError(f"{camera} frame: expected ({spec['height']}, {spec['width']}, 3) uint8, got {frame.shape} {frame.dtype}")  # fmt: skip
        times = self._video_times.setdefault(camera, [])
        if times and not timestamp_s > times[-1]:
            raise ValueError(f"{camera} frame time {timestamp_s} does not come after {times[-1]}")
        if camera not in self._videos:
            (staging / "videos").mkdir(exist_ok=True)
            container = av.open(str(staging / "videos" / f"{camera}.mp4"), mode="w")
            stream = container.add_stream("libx264", rate=Fraction(self.meta["rate_hz"]).limit_denominator(1001))  # fmt: skip
            stream.width, stream.height, stream.pix_fmt = spec["width"], spec["height"], "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast"}
            self._videos[camera] = (container, stream)
        container, stream = self._videos[camera]
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = len(times)
        for packet in stream.encode(video_frame):
            container.mux(packet)
        times.append(float(timestamp_s))

    def add_subtask(self, start_s: float, end_s: float, text: str) -> None:
        """Record a subtask segment (seconds on the frames' clock)."""
        if not end_s > start_s or not text:
            raise ValueError(f"subtask {text!r}: expected start_s < end_s and a text, got [{start_s}, {end_s})")  # fmt: skip
        self._subtasks.append({"start_s": float(start_s), "end_s": float(end_s), "text": str(text)})

    # -- finishing ---------------------------------------------------------------------------

    def _close_videos(self) -> None:
        for container, _ in self._videos.values():
            container.close()
        self._videos = {}

    def _finish(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        staging = self._require_open()
        if len(self._rows["timestamp_s"]) < 2:
            raise ValueError(f"episode {self.meta['episode_id']}: recorded {len(self._rows['timestamp_s'])} frame(s); at least 2 are needed")  # fmt: skip
        for container, stream in self._videos.values():
            for packet in stream.encode():
                container.mux(packet)
        self._close_videos()
        table: dict[str, Any] = {"timestamp_s": pa.array(self._rows["timestamp_s"], pa.float64())}
        for side in ("left", "right"):
            table[f"{side}_keypoints"] = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(self._rows[f"{side}_keypoints"]), pa.float32()), 75)  # fmt: skip
            table[f"{side}_valid"] = pa.array(self._rows[f"{side}_valid"], pa.bool_())
        for name in TRACKERS:
            table[f"{name}_pose"] = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(self._rows[f"{name}_pose"]), pa.float64()), 12)  # fmt: skip
            table[f"{name}_valid"] = pa.array(self._rows[f"{name}_valid"], pa.bool_())
        pq.write_table(pa.table(table), staging / "frames.parquet")
        (staging / "subtasks.json").write_text(json.dumps(self._subtasks, indent=2) + "\n")
        if self._video_times:
            (staging / "videos").mkdir(exist_ok=True)
            (staging / "videos" / "timestamps.json").write_text(json.dumps(self._video_times) + "\n")  # fmt: skip
        (staging / "meta.json").write_text(json.dumps(self.meta, indent=2) + "\n")


# -- adapter --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MetisGloveConfig(SourceConfig):
    """Config of the ``metis_glove`` adapter.

    Args:
        target_fps: Output rate in Hz (the rig records at 20 Hz; 30 Hz is the contract default).
        with_images: Decode ``videos/ego.mp4`` into the ego stream.
        image_height: Stored frame height.
        image_width: Stored frame width.
    """


class MetisGloveSource(IndexedDatasetSource):
    """Episodes of the METIS glove + tracker rig (registry name ``metis_glove``)."""

    name = "metis_glove"
    config_class = MetisGloveConfig
    human = True
    embodiment = "human_manus"

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Names of the episode directories (those holding ``meta.json``; hidden ones skipped)."""
        return sorted(p.name for p in Path(raw_dir).iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file())  # fmt: skip

    def check_layout(self, raw_dir: Path) -> None:
        """Check for episode directories with ``meta.json`` and ``frames.parquet`` of format 1.

        Raises:
            FileNotFoundError: Missing directory or files.
            ValueError: Another format or version, or missing keys or columns.
        """
        raw_dir = require_path(Path(raw_dir), "a metis_glove dataset: one directory per episode", directory=True)  # fmt: skip
        episodes = self.list_episodes(raw_dir)
        if not episodes:
            raise FileNotFoundError(f"{raw_dir}: no <episode>/meta.json; found {sorted(p.name for p in raw_dir.iterdir())[:10]}")  # fmt: skip
        self._meta(raw_dir / episodes[0])
        self._frames(raw_dir / episodes[0])

    def _meta(self, folder: Path) -> dict:
        meta = read_json(require_path(folder / "meta.json", "the episode's meta.json"))
        require_keys(meta, _META_KEYS, str(folder / "meta.json"))
        if meta["format"] != FORMAT_NAME or meta["version"] != FORMAT_VERSION:
            raise ValueError(f"{folder / 'meta.json'}: format {meta['format']!r} version {meta['version']!r}; this reader expects {FORMAT_NAME!r} version {FORMAT_VERSION}")  # fmt: skip
        require_keys(meta["calibration"], _CALIBRATION_KEYS, f"{folder / 'meta.json'}:calibration")
        require_keys(meta["cameras"], ("ego",), f"{folder / 'meta.json'}:cameras")
        if list(meta["keypoint_names"]) != list(MANUS_KEYPOINT_NAMES):
            raise ValueError(f"{folder / 'meta.json'}: keypoint_names differ from the Manus order {list(MANUS_KEYPOINT_NAMES)}")  # fmt: skip
        return meta

    def _frames(self, folder: Path) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        path = require_path(folder / "frames.parquet", "the per-tick glove and tracker table frames.parquet")  # fmt: skip
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for corrupt files
            raise CorruptFileError(f"{path}: cannot read as parquet ({err})") from err
        require_keys({n: None for n in table.column_names}, _COLUMNS, str(path))
        out: dict[str, np.ndarray] = {}
        for name in _COLUMNS:
            column = table.column(name).combine_chunks()
            if name.endswith(("_keypoints", "_pose")):
                width = 75 if name.endswith("_keypoints") else 12
                values = np.asarray(column.flatten(), dtype=np.float64)
                if values.size != width * table.num_rows:
                    raise ValueError(f"{path}: column {name} must hold {width} values per row")
                out[name] = values.reshape(table.num_rows, width)
            else:
                out[name] = np.asarray(column.to_numpy(zero_copy_only=False))
        return out

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one episode directory.

        Raises:
            SkipEpisode: If no hand is valid in any tick, fewer than two ticks remain, or the
                ego video is missing while images are asked for.
            ValueError: For a bad layout.
        """
        folder = Path(raw_dir) / episode_id
        meta = self._meta(folder)
        frames = self._frames(folder)
        times = frames["timestamp_s"].astype(np.float64)
        count = times.shape[0]
        poses = {name: _homogeneous(frames[f"{name}_pose"].reshape(count, 3, 4)) for name in TRACKERS}  # fmt: skip
        calibration = {k: _homogeneous(_pose34(v, k)) for k, v in meta["calibration"].items() if k in _CALIBRATION_KEYS}  # fmt: skip
        world_camera = poses["head"] @ calibration["head_tracker_to_ego_camera"]
        head_ok = frames["head_valid"].astype(bool)
        camera_world = np.linalg.inv(np.where(head_ok[:, None, None], world_camera, np.eye(4)))
        hands, present = {}, {}
        for side in ("left", "right"):
            to_camera = camera_world @ poses[f"{side}_wrist"] @ calibration[f"{side}_wrist_tracker_to_wrist"]  # fmt: skip
            local = frames[f"{side}_keypoints"].reshape(count, 25, 3)
            hands[side] = np.einsum("tij,tkj->tki", to_camera[:, :3, :3], local) + to_camera[:, None, :3, 3]  # fmt: skip
            present[side] = frames[f"{side}_valid"].astype(bool) & frames[f"{side}_wrist_valid"].astype(bool) & head_ok  # fmt: skip
        vectors, mask = hands_to_contract(hands["left"], hands["right"], layout=MANUS_25, left_present=present["left"], right_present=present["right"])  # fmt: skip
        subtasks_path = folder / "subtasks.json"
        segments = []
        if subtasks_path.is_file():
            entries = read_json(subtasks_path)
            for n, entry in enumerate(entries):
                require_keys(entry, ("start_s", "end_s", "text"), f"{subtasks_path}[{n}]")
                segments.append(SegmentSeconds(float(entry["start_s"]), float(entry["end_s"]), str(entry["text"])))  # fmt: skip
        camera = meta["cameras"]["ego"]
        intrinsics = np.asarray(camera["intrinsics"], dtype=np.float64)
        images = {}
        if self.config.with_images:
            images["ego"] = self._video(folder, times)
            intrinsics = fit_intrinsics(intrinsics, (camera["height"], camera["width"]), self.config.image_height, self.config.image_width)  # fmt: skip
        return build_episode(
            vectors,
            mask,
            times,
            target_fps=self.config.target_fps,
            source=self.name,
            embodiment=self.embodiment,
            instruction=str(meta["instruction"]),
            segments=segments,
            images=images,
            metadata={
                "episode_id": episode_id,
                "camera_intrinsics": intrinsics.tolist(),
                "cameras": sorted(meta["cameras"]),
                "rate_hz": meta["rate_hz"],
            },
        )

    def _video(self, folder: Path, times: np.ndarray) -> np.ndarray:
        """Ego frames nearest to each tick, fitted to the stored size."""
        import av

        video = folder / "videos" / "ego.mp4"
        if not video.is_file():
            raise SkipEpisode(f"ego video {video} is missing (convert with with_images=False to keep only poses)")  # fmt: skip
        stamps = read_json(require_path(folder / "videos" / "timestamps.json", 'videos/timestamps.json: {"ego": [seconds per frame]}'))  # fmt: skip
        require_keys(stamps, ("ego",), str(folder / "videos" / "timestamps.json"))
        frame_times = np.asarray(stamps["ego"], dtype=np.float64)
        nearest = np.abs(frame_times[None, :] - times[:, None]).argmin(axis=1)
        decoded: list[np.ndarray] = []
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                decoded.append(fit_image(frame.to_ndarray(format="rgb24"), self.config.image_height, self.config.image_width))  # fmt: skip
                if len(decoded) > nearest.max():
                    break
        if len(decoded) <= nearest.max():
            raise ValueError(f"{video}: {len(decoded)} frames, but timestamps.json lists {frame_times.size}")  # fmt: skip
        return np.stack([decoded[i] for i in nearest])
