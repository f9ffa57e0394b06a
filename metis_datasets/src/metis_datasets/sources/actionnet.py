"""Fourier ActionNet: Fourier GR1-T1/T2 humanoids with Fourier 6-DoF hands, teleoperated.

What is read (``RAW_DIR`` = the untarred dataset; ``FFTAI/fourier-lerobot`` ``DATASET.md``)::

    metadata.json                    [{"id": <episode ULID>, "prompt": <task text>}, ...]
    <ULID>.hdf5
        state/hand, action/hand      (N, 12) joint positions, left 6 then right 6, each in the
                                     order pinky, ring, middle, index, thumb pitch, thumb yaw
        state/pose, action/pose      (N, 27) left end link xyz + ortho6d, right (9), head (9);
                                     ortho6d = first two COLUMNS of R (action/pose may be 24
                                     wide: the head without xyz)
        state/robot, action/robot    (N, 32 or 29) whole-body joints (not used)
        timestamp                    (N,) seconds (Unix time), shared by state and action
    <ULID>/top/rgb.mp4 + timestamps.json   head camera video and one time per frame

Conversion: wrist poses are the arm end links (``{side}_end_effector_link``) of ``pose``, taken
in the robot base frame, composed with the ``fourier`` embodiment's
:meth:`~metis_embodiments.fourier.embodiment_fourier.FourierHand.wrist_in_end_link`
(21 mm flange offset and the contract calibration). Fingertips are ``fourier`` forward kinematics of ``hand`` (found by
registry name; its joint order is ActionNet's). The ego camera is the head camera ("top"),
placed in the base frame as in Fourier's viewer (``scripts/fourier_viz.py``): 0.11252 m
forward, 0.55029 m up, pitched down 44.5°, forward-left-up axes, turned to OpenCV axes. State
and action are resampled from the robot clock (~60 Hz, duplicate stamps dropped) to the target
rate; video frames are matched by nearest timestamp.

Assumptions (see ``docs/sources/actionnet.md``): ``pose`` is in the robot base frame (not
documented); the camera does not follow the head joints; hand values are radians with 0 = open
(``hand_units="radians"``) or Fourier's URDF signs (``"fourier_urdf"``, fingers and thumb
rotation negative); values outside the joint limits stop the conversion with a message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.contract import LEFT, RIGHT
from metis_core.episode import Episode
from metis_core.io import read_json
from metis_core.registry import EMBODIMENTS
from metis_core.rotations import matrix_to_rot6d, rot6d_to_matrix
from metis_datasets.sources._common import (
    IndexedDatasetSource,
    SkipEpisode,
    SourceConfig,
    fit_image,
    fit_intrinsics,
    require_keys,
    require_path,
)
from metis_datasets.sources.ph2d import FLU_TO_OPENCV, build_two_stream_episode

__all__ = [
    "TOP_CAMERA_INTRINSICS",
    "TOP_CAMERA_PITCH_DEG",
    "TOP_CAMERA_POSITION_M",
    "ActionNetConfig",
    "ActionNetSource",
    "parse_frame_time",
]

#: Head ("top") camera in the robot base frame, from Fourier's viewer ``scripts/fourier_viz.py``.
TOP_CAMERA_POSITION_M = (0.11252, 0.0, 0.55029)
TOP_CAMERA_PITCH_DEG = 44.5
#: Colour intrinsics of the head camera at 1280×800, from the same viewer.
TOP_CAMERA_INTRINSICS = ((561.6825561523438, 0.0, 642.8319702148438), (0.0, 561.4020385742188, 388.20196533203125), (0.0, 0.0, 1.0))  # fmt: skip
_TOP_SIZE_HW = (800, 1280)
_GROUPS = ("state/hand", "state/pose", "action/hand", "action/pose", "timestamp")
_HAND_UNITS = ("radians", "fourier_urdf")
#: Joints whose sign Fourier's URDF flips (ActionNet order: four fingers, pitch, yaw).
_URDF_SIGN = np.array([-1.0, -1.0, -1.0, -1.0, 1.0, -1.0])


def parse_frame_time(value: Any) -> float:
    """A ``timestamps.json`` entry → Unix seconds.

    Entries are strings ``"YYYY-mm-ddTHH-MM-SS_ffffff"`` (UTC, the form Fourier's converter
    parses) or numbers in microseconds (the form ``DATASET.md`` describes).

    Raises:
        ValueError: For anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) * 1e-6
    if isinstance(value, str):
        stem = value.split(".")[0]
        try:
            return datetime.strptime(stem, "%Y-%m-%dT%H-%M-%S_%f").replace(tzinfo=timezone.utc).timestamp()  # fmt: skip
        except ValueError as err:
            raise ValueError(f"frame time {value!r}: expected 'YYYY-mm-ddTHH-MM-SS_ffffff' or microseconds") from err  # fmt: skip
    raise ValueError(f"frame time {value!r}: expected a string or a number of microseconds")


def _camera_from_base() -> tuple[np.ndarray, np.ndarray]:
    """``(R, t)`` with ``p_cam = R (p_base - t)`` in OpenCV axes."""
    pitch = np.radians(TOP_CAMERA_PITCH_DEG)
    rotation_y = np.array([[np.cos(pitch), 0, np.sin(pitch)], [0, 1, 0], [-np.sin(pitch), 0, np.cos(pitch)]])  # fmt: skip
    return FLU_TO_OPENCV @ rotation_y.T, np.asarray(TOP_CAMERA_POSITION_M)


@dataclass(frozen=True, kw_only=True)
class ActionNetConfig(SourceConfig):
    """Config of the ActionNet adapter.

    Args:
        target_fps: Output rate in Hz.
        with_images: Decode ``<ULID>/top/rgb.mp4`` into the ego stream.
        image_height: Stored frame height.
        image_width: Stored frame width.
        hand_units: ``"radians"`` (0 = open, closing positive) or ``"fourier_urdf"``.
        limit_tolerance: Hand values may leave the joint limits by this much (rad, clipped).
    """

    hand_units: str = "radians"
    limit_tolerance: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hand_units not in _HAND_UNITS:
            raise ValueError(f"hand_units must be one of {_HAND_UNITS}, got {self.hand_units!r}")
        if not 0 <= self.limit_tolerance < 0.5:
            raise ValueError(f"limit_tolerance must be in [0, 0.5), got {self.limit_tolerance}")


class ActionNetSource(IndexedDatasetSource):
    """Fourier ActionNet GR1 + Fourier-hand episodes (registry name ``actionnet``)."""

    name = "actionnet"
    config_class = ActionNetConfig
    human = False
    embodiment = "fourier"

    def __init__(self, config: ActionNetConfig | None = None) -> None:
        super().__init__(config)
        self._hands: dict[str, Any] = {}

    def check_layout(self, raw_dir: Path) -> None:
        """Check for ``metadata.json`` and ``<ULID>.hdf5`` files with the hand/pose groups.

        Raises:
            FileNotFoundError: Missing directory, ``metadata.json`` or episode files.
            ValueError: Unreadable metadata, or an episode file missing a dataset or with
                unexpected widths.
        """
        raw_dir = require_path(Path(raw_dir), "Fourier ActionNet's untarred dataset (<ULID>.hdf5 files and metadata.json)", directory=True)  # fmt: skip
        self._prompts(raw_dir)
        files = sorted(raw_dir.glob("*.hdf5"))
        if not files:
            raise FileNotFoundError(f"{raw_dir}: no <ULID>.hdf5 episode files; found {sorted(p.name for p in raw_dir.iterdir())[:10]}")  # fmt: skip
        import h5py

        with h5py.File(files[0], "r") as handle:
            self._read(handle, files[0])

    def _prompts(self, raw_dir: Path) -> dict[str, str]:
        path = require_path(raw_dir / "metadata.json", 'metadata.json: [{"id": <ULID>, "prompt": <text>}, ...]')  # fmt: skip
        entries = read_json(path)
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and "id" in e for e in entries
        ):
            raise ValueError(f'{path}: expected a list of {{"id": ..., "prompt": ...}} objects')
        return {str(e["id"]): str(e.get("prompt", "")) for e in entries}

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Episode ULIDs (the stems of the ``.hdf5`` files)."""
        return sorted(p.stem for p in Path(raw_dir).glob("*.hdf5"))

    def _read(self, handle: Any, path: Path) -> dict[str, np.ndarray]:
        require_keys(handle, ("state", "action", "timestamp"), str(path))
        for group in ("state", "action"):
            require_keys(handle[group], ("hand", "pose"), f"{path}:{group}")
        out = {key: np.asarray(handle[key], dtype=np.float64) for key in _GROUPS}
        frames = out["timestamp"].shape[0]
        for key in ("state/hand", "action/hand"):
            if out[key].shape != (frames, 12):
                width = out[key].shape[1:] if out[key].ndim == 2 else out[key].shape
                detail = " (the 12-DoF hand is not supported)" if width == (24,) else ""
                raise ValueError(f"{path}: {key} has shape {out[key].shape}; expected ({frames}, 12): 6 joints per hand{detail}")  # fmt: skip
        for key in ("state/pose", "action/pose"):
            if out[key].ndim != 2 or out[key].shape[0] != frames or out[key].shape[1] not in (24, 27):  # fmt: skip
                raise ValueError(f"{path}: {key} has shape {out[key].shape}; expected ({frames}, 27) (left, right, head: xyz + ortho6d)")  # fmt: skip
        return out

    def _hand(self, side: str) -> Any:
        if side not in self._hands:
            self._hands[side] = EMBODIMENTS.create("fourier", side=side)
        return self._hands[side]

    def _joints(self, values: np.ndarray, side: str, where: str) -> torch.Tensor:
        hand = self._hand(side)
        if self.config.hand_units == "fourier_urdf":
            values = values * _URDF_SIGN
        limits = hand.joint_limits.double().numpy()
        tolerance = self.config.limit_tolerance
        outside = (values < limits[:, 0] - tolerance) | (values > limits[:, 1] + tolerance)
        if outside.any():
            t, j = np.argwhere(outside)[0]
            hint = " (values of several units look like the hand SDK's 0-10 scale, which is not supported)" if np.abs(values).max() > 3.5 else f"; try hand_units='{'fourier_urdf' if self.config.hand_units == 'radians' else 'radians'}'"  # fmt: skip
            raise ValueError(
                f"{where}: {side} {hand.joint_names[j]} = {values[t, j]:.4g} at frame {t} is outside "
                f"[{limits[j, 0]:.3g}, {limits[j, 1]:.3g}] rad with hand_units={self.config.hand_units!r}{hint}"
            )
        return torch.from_numpy(np.clip(values, limits[:, 0], limits[:, 1]))

    def _to_contract(self, hand: np.ndarray, pose: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        frames = hand.shape[0]
        camera_rotation, camera_position = _camera_from_base()
        vectors = np.zeros((frames, 48))
        mask = np.zeros((frames, 2), dtype=bool)
        for side, layout, offset in (("left", LEFT, 0), ("right", RIGHT, 9)):
            block = pose[:, offset : offset + 9]
            present = np.isfinite(block).all(-1) & (np.abs(block[:, 3:9]).sum(-1) > 1e-9)
            end_rotation = rot6d_to_matrix(np.where(present[:, None], block[:, 3:9], [1, 0, 0, 0, 1, 0]))  # fmt: skip
            wrist_in_end = self._hand(side).wrist_in_end_link().numpy()
            rotation = camera_rotation @ end_rotation @ wrist_in_end[:3, :3]
            position = (block[:, 0:3] + end_rotation @ wrist_in_end[:3, 3] - camera_position) @ camera_rotation.T  # fmt: skip
            joints = self._joints(hand[:, 6 * (offset // 9) : 6 * (offset // 9) + 6], side, where)
            tips = self._hand(side).forward_kinematics(joints).numpy()
            vectors[:, layout.wrist_position] = np.where(present[:, None], position, 0.0)
            vectors[:, layout.wrist_rot6d] = np.where(present[:, None], matrix_to_rot6d(rotation), 0.0)  # fmt: skip
            vectors[:, layout.fingertips] = np.where(
                present[:, None], tips.reshape(frames, 15), 0.0
            )
            mask[:, layout.index] = present
        return vectors, mask

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert ``<ULID>.hdf5`` (+ its head camera video when images are wanted).

        Raises:
            SkipEpisode: If fewer than two distinct timestamps remain.
            ValueError: For files of the wrong layout or hand values outside the limits.
        """
        import h5py

        raw_dir = Path(raw_dir)
        path = require_path(raw_dir / f"{episode_id}.hdf5", "an ActionNet episode file")
        with h5py.File(path, "r") as handle:
            data = self._read(handle, path)
        times = data["timestamp"]
        keep = np.concatenate([[True], np.diff(times) > 0])
        if not np.all(np.diff(times[keep]) > 0):
            raise ValueError(f"{path}: timestamp goes backwards; expected non-decreasing seconds")
        if keep.sum() < 2:
            raise SkipEpisode(f"{episode_id}: fewer than two distinct timestamps")
        state, state_mask = self._to_contract(data["state/hand"][keep], data["state/pose"][keep], f"{path}:state")  # fmt: skip
        action, action_mask = self._to_contract(data["action/hand"][keep], data["action/pose"][keep], f"{path}:action")  # fmt: skip
        intrinsics = np.asarray(TOP_CAMERA_INTRINSICS)
        images: dict[str, np.ndarray] = {}
        if self.config.with_images:
            images["ego"], source_hw = self._video(raw_dir / episode_id / "top", times[keep])
            intrinsics = fit_intrinsics(intrinsics, source_hw, self.config.image_height, self.config.image_width)  # fmt: skip
        prompts = self._prompts(raw_dir)
        return build_two_stream_episode(
            state,
            action,
            state_mask,
            action_mask,
            times[keep],
            target_fps=self.config.target_fps,
            source=self.name,
            embodiment=self.embodiment,
            instruction=prompts.get(episode_id, ""),
            images=images,
            metadata={
                "episode_id": episode_id,
                "camera_intrinsics": intrinsics.tolist(),
                "embodiment": self.embodiment,
            },
        )

    def _video(self, folder: Path, data_times: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """Frames nearest to each data time, fitted to the stored size; and the source size."""
        import av

        video = require_path(folder / "rgb.mp4", "the head camera video <ULID>/top/rgb.mp4")
        stamps_path = require_path(folder / "timestamps.json", "one time per video frame in <ULID>/top/timestamps.json")  # fmt: skip
        with stamps_path.open(encoding="utf-8") as handle:
            stamps = json.load(handle)
        if not isinstance(stamps, list) or not stamps:
            raise ValueError(f"{stamps_path}: expected a non-empty list of frame times")
        frame_times = np.array([parse_frame_time(s) for s in stamps])
        nearest = np.abs(frame_times[None, :] - data_times[:, None]).argmin(axis=1)
        wanted = set(nearest.tolist())
        decoded: dict[int, np.ndarray] = {}
        source_hw = _TOP_SIZE_HW
        with av.open(str(video)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    source_hw = rgb.shape[:2]
                    decoded[index] = fit_image(rgb, self.config.image_height, self.config.image_width)  # fmt: skip
                if index >= max(wanted):
                    break
        missing = sorted(wanted - decoded.keys())
        if missing:
            raise ValueError(f"{video}: has fewer frames than timestamps.json lists ({len(stamps)}); frame {missing[0]} is missing")  # fmt: skip
        return np.stack([decoded[i] for i in nearest]), (int(source_hw[0]), int(source_hw[1]))
