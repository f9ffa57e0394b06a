"""OakInk-Image (Yang et al., CVPR 2022): right-hand object interactions from 4 static cameras.

Reads ``$OAKINK_DIR/image/`` (see ``docs/sources/oakink.md``): ``anno/seq_all.json`` (entries
``["<seq_id>/<timestamp>", sbj_flag, frame, cam_id]``), ``anno/hand_j/<info>.pkl`` (21 joints in
that camera's frame, metres, OpenPose order), ``anno/cam_intr/<info>.pkl`` (3×3 K) and
``stream_release_v2/<seq_id>/<timestamp>/<cam_name>_<frame>.png``. ``<info>`` is the entry's
fields joined by ``"__"`` with ``"/"`` replaced by ``"__"``.

OakInk has no egocentric camera: one static view (``camera``) stands in for the ego camera.
An episode is one (sequence, subject) pair seen from that camera; only right hands exist.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metis_core.episode import Episode
from metis_datasets.sources._common import (
    OPENPOSE_21,
    IndexedDatasetSource,
    SkipEpisode,
    SourceConfig,
    build_episode,
    hands_to_contract,
    load_ego_images,
    load_pickle,
    require_path,
)

__all__ = ["OAKINK_CAMERAS", "OAKINK_INTENTS", "OakInkConfig", "OakInkSource", "info_string"]

#: ``cam_id`` → camera name in the image file names.
OAKINK_CAMERAS = ("north_east_color", "south_east_color", "north_west_color", "south_west_color")
#: Intent code (second field of the sequence id) → instruction verb phrase.
OAKINK_INTENTS = {"0001": "use", "0002": "hold", "0003": "lift up", "0004": "hand over"}


def info_string(entry: list) -> str:
    """The annotation file stem of a ``seq_all.json`` entry (OakInk's ``info_str``)."""
    return "__".join(str(x) for x in entry).replace("/", "__")


@dataclass(frozen=True, kw_only=True)
class OakInkConfig(SourceConfig):
    """Config of the OakInk-Image adapter.

    Args:
        camera: ``cam_id`` (0-3) of the static view used as the camera frame.
        source_fps: Capture rate (30 Hz; SOURCES.md confidence M). Annotated frames are a
            subset; frames inside longer gaps are masked, not invented.
        max_gap_frames: Longest spacing (in capture frames) between two annotated frames that
            is bridged by interpolation.
    """

    camera: int = 0
    source_fps: float = 30.0
    max_gap_frames: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.camera not in range(4):
            raise ValueError(f"camera must be a cam_id 0..3 {OAKINK_CAMERAS}, got {self.camera}")
        if not self.source_fps > 0 or self.max_gap_frames < 1:
            raise ValueError(f"source_fps must be > 0 and max_gap_frames >= 1, got {self.source_fps}, {self.max_gap_frames}")  # fmt: skip


class OakInkSource(IndexedDatasetSource):
    """OakInk-Image sequences from one static camera (see the module docstring)."""

    name = "oakink"
    config_class = OakInkConfig
    config: OakInkConfig

    def _entries(self, raw_dir: Path) -> dict[str, list[list]]:
        return _read_entries(Path(raw_dir) / "image" / "anno" / "seq_all.json", self.config.camera)

    def check_layout(self, raw_dir: Path) -> None:
        """Check ``image/anno/seq_all.json`` and the first entry's ``hand_j`` and ``cam_intr``.

        Raises:
            FileNotFoundError: Naming the missing file.
            ValueError: For malformed entries or arrays of the wrong shape.
        """
        raw_dir = require_path(Path(raw_dir), "the OakInk root holding image/anno/", directory=True)  # fmt: skip
        require_path(raw_dir / "image" / "anno" / "seq_all.json", "OakInk-Image's list of annotated frames")  # fmt: skip
        entries = self._entries(raw_dir)
        if not entries:
            raise ValueError(f"{raw_dir / 'image/anno/seq_all.json'}: no entry for camera {self.config.camera}")  # fmt: skip
        first = next(iter(entries.values()))[0]
        self._read(raw_dir, first)

    def _read(self, raw_dir: Path, entry: list) -> tuple[np.ndarray, np.ndarray]:
        anno = Path(raw_dir) / "image" / "anno"
        info = info_string(entry)
        joints = np.asarray(load_pickle(require_path(anno / "hand_j" / f"{info}.pkl", "OakInk hand joints (21, 3) of that frame")), dtype=np.float64)  # fmt: skip
        intrinsics = np.asarray(load_pickle(require_path(anno / "cam_intr" / f"{info}.pkl", "OakInk camera intrinsics (3, 3) of that frame")), dtype=np.float64)  # fmt: skip
        if joints.shape != (21, 3) or intrinsics.shape != (3, 3):
            raise ValueError(f"{anno}/{{hand_j,cam_intr}}/{info}.pkl: expected (21, 3) joints and (3, 3) K, got {joints.shape} and {intrinsics.shape}")  # fmt: skip
        return joints, intrinsics

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Ids ``<seq_id>/<timestamp>/<sbj_flag>``."""
        return list(self._entries(raw_dir))

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one (sequence, subject) pair."""
        config = self.config
        entries = self._entries(raw_dir).get(episode_id)
        if not entries:
            raise SkipEpisode(f"{episode_id} has no annotated frame for camera {config.camera}")
        joints, intrinsics = zip(*(self._read(raw_dir, e) for e in entries), strict=True)
        frames = np.array([int(e[2]) for e in entries])
        vectors, mask = hands_to_contract(None, np.stack(joints), layout=OPENPOSE_21)
        seq_id, timestamp, _subject = episode_id.split("/")
        parts = seq_id.split("_")
        verb = OAKINK_INTENTS.get(parts[1], "") if len(parts) > 1 else ""
        instruction = f"{verb} the {_object_name(Path(raw_dir), parts[0])}" if verb else ""
        k = intrinsics[0]
        images = None
        if config.with_images:
            folder = Path(raw_dir) / "image" / "stream_release_v2" / seq_id / timestamp
            paths = [folder / f"{OAKINK_CAMERAS[config.camera]}_{frame}.png" for frame in frames]
            images, k = load_ego_images(paths, config, k)
        return build_episode(
            vectors,
            mask,
            frames / config.source_fps,
            target_fps=config.target_fps,
            source=self.name,
            instruction=instruction,
            images=images,
            metadata={
                "camera_intrinsics": k.tolist(),
                "oakink_sequence": episode_id,
                "camera_name": OAKINK_CAMERAS[config.camera],
                "object_id": parts[0],
            },
            max_gap_s=(config.max_gap_frames + 0.5) / config.source_fps,
        )


@functools.lru_cache(maxsize=4)
def _read_entries(path: Path, camera: int) -> dict[str, list[list]]:
    try:
        entries = json.loads(require_path(path, "OakInk-Image's seq_all.json").read_text(encoding="utf-8"))  # fmt: skip
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg})") from err
    grouped: dict[str, list[list]] = defaultdict(list)
    for number, entry in enumerate(entries if isinstance(entries, list) else [None]):
        if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str) and entry[0].count("/") == 1):  # fmt: skip
            raise ValueError(f"{path} entry {number}: expected [\"<seq_id>/<timestamp>\", sbj_flag, frame, cam_id], got {entry!r}")  # fmt: skip
        if int(entry[3]) == camera:
            grouped[f"{entry[0]}/{int(entry[1])}"].append(entry)
    return {key: sorted(value, key=lambda e: int(e[2])) for key, value in sorted(grouped.items())}


def _object_name(raw_dir: Path, object_id: str) -> str:
    """The object's name from ``shape/metaV2/object_id.json`` if present, else ``"object"``."""
    path = raw_dir / "shape" / "metaV2" / "object_id.json"
    if path.is_file():
        names = json.loads(path.read_text(encoding="utf-8"))
        name = (names.get(object_id) or {}).get("name") if isinstance(names, dict) else None
        if name:
            return str(name).replace("_", " ")
    return "object"
