"""PH2D ("Humanoid Policy ~ Human Policy", Qiu et al. 2025): human (Apple Vision Pro / Quest 3)
and humanoid (Unitree H1 + Inspire hands) demonstrations in one 128-D layout.

What is read (``RAW_DIR`` = the ``processed`` directory or its parent)::

    processed/<task-folder>/processed_episode_<i>.hdf5
        observation.image.left   (N,) variable-length uint8 JPEG (the ego view: left eye)
        observation.image.right  (N,) JPEG (not used)
        observation.state        (N, 128) float32
        action                   (N, 128) float32
        old_action               (N, 26 or 128) robots only, optional (joint-space action)
        attrs: description (task text), embodiment ("human_avp", "h1_inspire", ...)

128-D layout (``hdt/constants.py`` of the authors' code): ``[0:9]`` head (xyz masked to 0,
6D rotation), ``[10:28]`` left hand 6 keypoints, ``[30:39]`` right wrist (xyz + 6D),
``[40:58]`` right hand keypoints, ``[80:89]`` left wrist, ``[100:126]`` robot joint positions
(left arm 7, left hand 6, right arm 7, right hand 6). The 6 keypoints are the wrist origin
(zeros) and the thumb, index, middle, ring, little tips, in the hand's base-link frame. 6D
rotations follow pytorch3d (first two **rows**). Wrist positions are relative to the head in a
body frame (x forward, y left, z up).

Conversion: the ego camera is taken as the head frame with OpenCV axes
(``p_cam = B R_headᵀ p_body``, B = FLU → OpenCV); a zero (masked) head rotation counts as the
identity. Wrist poses in PH2D are poses of the Inspire hand's base link (the human pipeline
aligns the Vision Pro wrist to it), so the contract wrist frame is that pose composed with the
``inspire`` embodiment's calibration; the left base link is the right one reflected through its
x-y plane (z negated), as in Unitree's H1 URDF. Human fingertips are moved from the base-link
frame into the contract wrist frame; robot fingertips come from ``inspire`` forward kinematics
of the recorded hand joints, found by registry name, with the hand order and normalisation of
the authors' code (:data:`PH2D_HAND_ORDER`, 1 = open) passed to the embodiment as its
``command_order``.

Assumptions where the published material is silent (see ``docs/sources/ph2d.md``): the frame
rate (``source_fps``, 30 Hz), JPEG channel order (``images_bgr``: the authors decode with
OpenCV and call the result RGB, so the stored JPEGs hold BGR data), and that the human wrist
frame matches the robot's base link.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.contract import LEFT, RIGHT, apply_hand_mask
from metis_core.episode import Episode
from metis_core.registry import EMBODIMENTS
from metis_core.resample import resample_hand_vectors
from metis_core.rotations import matrix_to_rot6d
from metis_datasets.sources._common import (
    IndexedDatasetSource,
    SkipEpisode,
    SourceConfig,
    fit_image,
    require_keys,
    require_path,
)

__all__ = [
    "FLU_TO_OPENCV",
    "INSPIRE_LEFT_BASE_MIRROR",
    "PH2D_HAND_ORDER",
    "PH2DConfig",
    "PH2DSource",
    "build_two_stream_episode",
    "wrist_in_mirrored_base",
]

#: Turns forward-left-up axes into OpenCV camera axes, ``p_cv = FLU_TO_OPENCV @ p_flu``.
FLU_TO_OPENCV = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
#: Unitree's H1 URDF places the left Inspire hand's palm-fixed joints at z-negated positions of
#: the right hand's: the left base link is the right one reflected by diag(1, 1, -1).
INSPIRE_LEFT_BASE_MIRROR = (1.0, 1.0, -1.0)
#: Hand joints in PH2D's robot ``qpos`` (per hand), mapped to ``inspire`` joint names: the
#: authors' ``generate_full_qpos`` feeds them to the H1 URDF joints in Pinocchio's order
#: (index, middle, pinky, ring, thumb yaw, thumb pitch), normalised to [0, 1] with 1 = open.
PH2D_HAND_ORDER = (
    "index_proximal_joint",
    "middle_proximal_joint",
    "pinky_proximal_joint",
    "ring_proximal_joint",
    "thumb_proximal_yaw_joint",
    "thumb_proximal_pitch_joint",
)

_HEAD = slice(0, 9)
_WRIST = {"left": slice(80, 89), "right": slice(30, 39)}
_KEYPOINTS = {"left": slice(10, 28), "right": slice(40, 58)}
_QPOS = slice(100, 126)
_QPOS_HAND = {"left": slice(7, 13), "right": slice(20, 26)}
_DATASETS = ("observation.image.left", "observation.state", "action")
_EPISODE_FILE = re.compile(r"processed_episode_(\d+)\.hdf5$")


def wrist_in_mirrored_base(calibration: torch.Tensor, side: str, base_mirror: Sequence[float]) -> np.ndarray:  # fmt: skip
    """Pose of the contract wrist frame in one side's robot base link.

    Args:
        calibration: ``(4, 4)`` contract wrist frame in the right hand's base link (an
            embodiment's :attr:`~metis_embodiments.urdf_hand.URDFHand.calibration`).
        side: ``"left"`` or ``"right"``.
        base_mirror: Diagonal of the reflection that maps the right base link to the left one.

    Returns:
        ``(4, 4)`` float64; for the left hand ``[S R M, S o]`` with ``S = diag(base_mirror)`` and
        ``M = diag(-1, 1, 1)`` (the wrist frame built from the reflected keypoints).
    """
    out = calibration.detach().double().numpy().copy()
    if side == "left":
        reflect = np.diag(np.asarray(base_mirror, dtype=np.float64))
        out[:3, :3] = reflect @ out[:3, :3] @ np.diag([-1.0, 1.0, 1.0])
        out[:3, 3] = reflect @ out[:3, 3]
    return out


def build_two_stream_episode(
    state: np.ndarray,
    action: np.ndarray,
    state_mask: np.ndarray,
    action_mask: np.ndarray,
    timestamps: np.ndarray,
    *,
    target_fps: float,
    source: str,
    embodiment: str,
    instruction: str = "",
    images: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Episode:
    """Resample recorded state and action streams (robots, or humans with both) into an episode.

    Both streams are resampled to ``target_fps`` (linear positions, slerp rotations); a hand is
    present at a frame when it is present in both. Images are taken from the source frame
    nearest to each new time.

    Args:
        state: ``(T, 48)`` contract vectors of the observed pose.
        action: ``(T, 48)`` contract vectors of the commanded (or next) pose.
        state_mask: ``(T, 2)`` presence in ``state``.
        action_mask: ``(T, 2)`` presence in ``action``.
        timestamps: ``(T,)`` strictly increasing seconds.
        target_fps: Output rate in Hz.
        source: Registry name of the source.
        embodiment: Registry name of the hand.
        instruction: Language instruction.
        images: Camera name → ``(T, H, W, 3)`` uint8 aligned with ``timestamps``.
        metadata: Extra metadata.

    Raises:
        SkipEpisode: If fewer than two frames remain or no hand is present.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if state.shape[0] < 2:
        raise SkipEpisode(f"only {state.shape[0]} frame(s); at least 2 are needed")
    if not (state_mask & action_mask).any():
        raise SkipEpisode("no hand is present in any frame")
    resampled_state = resample_hand_vectors(state, timestamps, target_fps=target_fps, hand_mask=state_mask)  # fmt: skip
    resampled_action = resample_hand_vectors(action, timestamps, target_times=resampled_state.timestamps, hand_mask=action_mask)  # fmt: skip
    mask = (resampled_state.hand_mask & resampled_action.hand_mask).numpy()
    if mask.shape[0] < 2:
        raise SkipEpisode(f"shorter than two frames at {target_fps} Hz")
    new_times = resampled_state.timestamps.numpy()
    picked: dict[str, np.ndarray] = {}
    for camera, frames in (images or {}).items():
        nearest = np.clip(np.searchsorted(timestamps, new_times), 1, len(timestamps) - 1)
        nearest -= (new_times - timestamps[nearest - 1]) < (timestamps[nearest] - new_times)
        picked[camera] = np.ascontiguousarray(frames[nearest])
    episode = Episode(
        state=apply_hand_mask(resampled_state.vectors, mask).numpy().astype(np.float32),
        action=apply_hand_mask(resampled_action.vectors, mask).numpy().astype(np.float32),
        hand_mask=mask.astype(bool),
        fps=float(target_fps),
        instruction=instruction,
        images=picked,
        source=source,
        embodiment=embodiment,
        metadata=dict(metadata or {}),
    )
    episode.validate()
    return episode


def _rows6d_to_matrix(rot6d: np.ndarray) -> np.ndarray:
    """pytorch3d 6D (first two rows) → ``(..., 3, 3)`` by Gram–Schmidt on the rows."""
    a1, a2 = rot6d[..., 0:3], rot6d[..., 3:6]
    b1 = a1 / np.clip(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12, None)
    a2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = a2 / np.clip(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-12, None)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-2)


@dataclass(frozen=True, kw_only=True)
class PH2DConfig(SourceConfig):
    """Config of the PH2D adapter.

    Args:
        target_fps: Output rate in Hz.
        with_images: Decode ``observation.image.left`` into the ego stream.
        image_height: Stored frame height.
        image_width: Stored frame width.
        source_fps: Recording rate (not published; 30 Hz assumed).
        part: ``"all"``, ``"human"`` or ``"robot"`` episodes.
        images_bgr: The JPEGs hold BGR data (the authors decode them with OpenCV as RGB).
        command_tolerance: Normalised robot hand values may leave [0, 1] by this much (clipped);
            further out is an error.
    """

    source_fps: float = 30.0
    part: str = "all"
    images_bgr: bool = True
    command_tolerance: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.source_fps > 0:
            raise ValueError(f"source_fps must be positive, got {self.source_fps}")
        if self.part not in ("all", "human", "robot"):
            raise ValueError(f"part must be 'all', 'human' or 'robot', got {self.part!r}")
        if not 0 <= self.command_tolerance < 0.5:
            raise ValueError(f"command_tolerance must be in [0, 0.5), got {self.command_tolerance}")


class PH2DSource(IndexedDatasetSource):
    """PH2D human and Unitree H1 + Inspire episodes (registry name ``ph2d``)."""

    name = "ph2d"
    config_class = PH2DConfig
    human = True
    embodiment = "human_mano"

    def __init__(self, config: PH2DConfig | None = None) -> None:
        super().__init__(config)
        if self.config.part == "robot":
            self.embodiment = "inspire"
        self._hands: dict[str, Any] = {}

    # -- layout ------------------------------------------------------------------------------

    def _processed(self, raw_dir: Path) -> Path:
        raw_dir = Path(raw_dir)
        if raw_dir.name != "processed" and (raw_dir / "processed").is_dir():
            raw_dir = raw_dir / "processed"
        return raw_dir

    def check_layout(self, raw_dir: Path) -> None:
        """Check for ``processed/<task>/processed_episode_<i>.hdf5`` files with the four datasets.

        Raises:
            FileNotFoundError: If the directory or any episode file is missing.
            ValueError: If an episode file lacks a dataset or has a state width other than 128.
        """
        processed = require_path(self._processed(raw_dir), "PH2D's processed/<task>/processed_episode_<i>.hdf5 tree", directory=True)  # fmt: skip
        files = self._files(processed)
        if not files:
            found = sorted(p.name for p in processed.iterdir())[:10]
            raise FileNotFoundError(f"{processed}: no <task>/processed_episode_<i>.hdf5 files; found {found}")  # fmt: skip
        self._check_file(files[0])

    def _files(self, processed: Path) -> list[Path]:
        return sorted(
            (
                p
                for p in processed.glob("*/processed_episode_*.hdf5")
                if _EPISODE_FILE.search(p.name)
            ),
            key=lambda p: (p.parent.name, int(_EPISODE_FILE.search(p.name).group(1))),  # type: ignore[union-attr]
        )

    def _check_file(self, path: Path) -> None:
        import h5py

        with h5py.File(path, "r") as handle:
            require_keys(handle, _DATASETS, str(path))
            for key in ("observation.state", "action"):
                shape = handle[key].shape
                if len(shape) != 2 or shape[1] != 128:
                    raise ValueError(f"{path}: {key} has shape {shape}; expected (N, 128) in PH2D's layout")  # fmt: skip
            if "embodiment" not in handle.attrs:
                raise ValueError(f"{path}: missing attribute 'embodiment' (e.g. 'human_avp' or 'h1_inspire'); found {sorted(handle.attrs)}")  # fmt: skip

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """``<task-folder>/processed_episode_<i>`` for every episode file."""
        processed = self._processed(raw_dir)
        return [f"{p.parent.name}/{p.stem}" for p in self._files(processed)]

    # -- conversion --------------------------------------------------------------------------

    def _hand(self, side: str) -> Any:
        if side not in self._hands:
            self._hands[side] = EMBODIMENTS.create("inspire", side=side, command_order=PH2D_HAND_ORDER)  # fmt: skip
        return self._hands[side]

    def _to_contract(self, array: np.ndarray, *, robot: bool, where: str) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        frames = array.shape[0]
        array = array.astype(np.float64)
        head6d = array[:, _HEAD][:, 3:9]
        head = _rows6d_to_matrix(head6d)
        masked_head = np.linalg.norm(head6d, axis=-1) < 1e-9
        head[masked_head] = np.eye(3)
        to_camera = FLU_TO_OPENCV @ np.swapaxes(head, -1, -2)  # (T, 3, 3): body -> camera
        vectors = np.zeros((frames, 48))
        mask = np.zeros((frames, 2), dtype=bool)
        for side, layout in (("left", LEFT), ("right", RIGHT)):
            block = array[:, _WRIST[side]]
            present = (np.abs(block[:, 3:9]).sum(-1) > 1e-9) & np.isfinite(block).all(-1)
            base_rotation = _rows6d_to_matrix(np.where(present[:, None], block[:, 3:9], [1, 0, 0, 0, 1, 0]))  # fmt: skip
            hand = self._hand(side)
            wrist_in_base = wrist_in_mirrored_base(hand.calibration, side, INSPIRE_LEFT_BASE_MIRROR)  # fmt: skip
            rotation = to_camera @ base_rotation @ wrist_in_base[:3, :3]
            position = np.einsum("tij,tj->ti", to_camera, block[:, 0:3] + np.einsum("tij,j->ti", base_rotation, wrist_in_base[:3, 3]))  # fmt: skip
            if robot:
                tips = self._robot_tips(array[:, _QPOS][:, _QPOS_HAND[side]], side, where)
            else:
                points = array[:, _KEYPOINTS[side]].reshape(frames, 6, 3)[:, 1:]
                tips = (points - wrist_in_base[:3, 3]) @ wrist_in_base[:3, :3]
            vectors[:, layout.wrist_position] = position
            vectors[:, layout.wrist_rot6d] = matrix_to_rot6d(rotation)
            vectors[:, layout.fingertips] = tips.reshape(frames, 15)
            mask[:, layout.index] = present
        vectors = apply_hand_mask(torch.from_numpy(vectors), torch.from_numpy(mask)).numpy()
        return vectors, mask

    def _robot_tips(self, values: np.ndarray, side: str, where: str) -> np.ndarray:
        tolerance = self.config.command_tolerance
        outside = (values < -tolerance) | (values > 1 + tolerance)
        if outside.any():
            t, j = np.argwhere(outside)[0]
            raise ValueError(
                f"{where}: {side} hand value {values[t, j]:.4g} for {PH2D_HAND_ORDER[j]} at frame {t} "
                "is outside [0, 1]; PH2D robot hand joints are expected normalised (1 = open)"
            )
        command = torch.from_numpy(np.clip(values, 0.0, 1.0))
        hand = self._hand(side)
        return hand.forward_kinematics(hand.from_unitree_command(command)).numpy()

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert ``<task-folder>/processed_episode_<i>``.

        Raises:
            SkipEpisode: For episodes of another part or robot, or without any tracked hand.
            ValueError: For arrays of the wrong layout.
        """
        import h5py

        path = self._processed(raw_dir) / f"{episode_id}.hdf5"
        require_path(path, "a PH2D episode file")
        with h5py.File(path, "r") as handle:
            require_keys(handle, _DATASETS, str(path))
            embodiment_attr = _attr(handle.attrs.get("embodiment", ""))
            robot = "human" not in embodiment_attr.lower()
            if (self.config.part == "human" and robot) or (
                self.config.part == "robot" and not robot
            ):
                raise SkipEpisode(f"{embodiment_attr} episode (converting part={self.config.part!r})")  # fmt: skip
            if robot and "inspire" not in embodiment_attr.lower():
                raise SkipEpisode(f"robot embodiment {embodiment_attr!r} has no Inspire hands")
            state = np.asarray(handle["observation.state"], dtype=np.float64)
            action = np.asarray(handle["action"], dtype=np.float64)
            for key, array in (("observation.state", state), ("action", action)):
                if array.ndim != 2 or array.shape[1] != 128:
                    raise ValueError(f"{path}: {key} has shape {array.shape}; expected (N, 128)")
            if robot and not np.abs(action[:, _QPOS]).any() and "old_action" in handle:
                old = np.asarray(handle["old_action"], dtype=np.float64)
                if old.ndim == 2 and old.shape[1] in (26, 128) and old.shape[0] == action.shape[0]:
                    action[:, _QPOS] = old if old.shape[1] == 26 else old[:, _QPOS]
            images = {}
            if self.config.with_images:
                images["ego"] = self._decode(handle["observation.image.left"], path)
            description = _attr(handle.attrs.get("description", ""))
        state_vectors, state_mask = self._to_contract(state, robot=robot, where=f"{path} observation.state")  # fmt: skip
        action_vectors, action_mask = self._to_contract(action, robot=robot, where=f"{path} action")  # fmt: skip
        timestamps = np.arange(state.shape[0]) / self.config.source_fps
        embodiment = "inspire" if robot else "human_mano"
        return build_two_stream_episode(
            state_vectors,
            action_vectors,
            state_mask,
            action_mask,
            timestamps,
            target_fps=self.config.target_fps,
            source=self.name,
            embodiment=embodiment,
            instruction=description or episode_id.split("/")[0],
            images=images,
            metadata={
                "episode_id": episode_id,
                "embodiment": embodiment,
                "ph2d_embodiment": embodiment_attr,
                "source_fps": self.config.source_fps,
            },
        )

    def _decode(self, dataset: Any, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        frames = []
        for index in range(dataset.shape[0]):
            try:
                with Image.open(io.BytesIO(np.asarray(dataset[index], dtype=np.uint8).tobytes())) as image:  # fmt: skip
                    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            except (UnidentifiedImageError, OSError) as err:
                raise ValueError(f"{path}: observation.image.left[{index}] is not a JPEG ({err})") from err  # fmt: skip
            if self.config.images_bgr:
                rgb = rgb[..., ::-1]
            frames.append(fit_image(np.ascontiguousarray(rgb), self.config.image_height, self.config.image_width))  # fmt: skip
        return np.stack(frames)


def _attr(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return str(value.item()) if value.size == 1 else " ".join(map(str, value.tolist()))
    return str(value)
