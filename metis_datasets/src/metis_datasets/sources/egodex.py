"""EgoDex (Apple, arXiv 2505.11709): egocentric Vision Pro video with ARKit hand tracking.

What is read (``RAW_DIR`` holds ``part1`` … ``part5``, ``test``, ``extra`` or any subset; the
layout of ``apple/ml-egodex``)::

    <part>/<task_name>/<k>.hdf5   camera/intrinsic (3, 3); transforms/<name> (N, 4, 4) poses in
                                  the ARKit world frame (``camera`` + 68 body/hand joints);
                                  confidences/<joint> (N,) in [0, 1] (optional group)
                                  attrs: llm_description[2], llm_type, which_llm_description, task
    <part>/<task_name>/<k>.mp4    the ego video, 1920×1080 at 30 fps, frame-aligned with the file

Conversion: joints go to the camera with ``inv(transforms/camera[t]) @ p`` — the official
visualisation projects the result with ``cv2.projectPoints``, so it is already in OpenCV axes.
Per hand the 25 ARKit joints (``{side}Hand`` = wrist, thumb knuckle → tip, then for each finger
metacarpal, knuckle (= MCP), intermediate base, intermediate tip, tip) build the contract wrist
frame from the wrist and the index, middle and little knuckles; fingertips are the five tips.
A hand is masked where any of its 25 confidences is below ``min_confidence`` (files without
confidences count as fully confident). The instruction is ``llm_description2`` for reversible
tasks whose ``which_llm_description`` is ``"2"``, else ``llm_description`` (the official rule),
falling back to ``task``. No subtasks exist in EgoDex.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from metis_core.episode import Episode
from metis_datasets.sources._common import (
    IndexedDatasetSource,
    KeypointLayout,
    SkipEpisode,
    SourceConfig,
    build_episode,
    fit_image,
    fit_intrinsics,
    hands_to_contract,
    mask_from_confidence,
    require_keys,
    require_path,
)

__all__ = ["EGODEX_25", "EgoDexConfig", "EgoDexSource", "egodex_joint_names"]

_FINGERS = ("Index", "Middle", "Ring", "Little")
_FINGER_JOINTS = ("Metacarpal", "Knuckle", "IntermediateBase", "IntermediateTip", "Tip")
_THUMB = ("ThumbKnuckle", "ThumbIntermediateBase", "ThumbIntermediateTip", "ThumbTip")
#: The 25 hand joints in the order read (wrist, thumb 4, then 5 per finger).
EGODEX_25 = KeypointLayout("egodex-25", 25, 0, 6, 11, 21, (4, 9, 14, 19, 24))


def egodex_joint_names(side: str) -> list[str]:
    """The 25 ``transforms/`` names of one hand, in :data:`EGODEX_25` order."""
    return [f"{side}Hand", *(f"{side}{j}" for j in _THUMB), *(f"{side}{f}Finger{j}" for f in _FINGERS for j in _FINGER_JOINTS)]  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class EgoDexConfig(SourceConfig):
    """Config of the EgoDex adapter.

    Args:
        target_fps: Output rate in Hz.
        with_images: Decode ``<k>.mp4`` into the ego stream.
        image_height: Stored frame height.
        image_width: Stored frame width.
        source_fps: Annotation and video rate (30 Hz in EgoDex).
        min_confidence: A hand counts as tracked at a frame when all its joints reach this.
    """

    source_fps: float = 30.0
    min_confidence: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.source_fps > 0:
            raise ValueError(f"source_fps must be positive, got {self.source_fps}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


class EgoDexSource(IndexedDatasetSource):
    """EgoDex episodes (registry name ``egodex``)."""

    name = "egodex"
    config_class = EgoDexConfig
    human = True
    embodiment = "human_mano"

    def _files(self, raw_dir: Path) -> list[Path]:
        return sorted(Path(raw_dir).glob("*/*/*.hdf5"))

    def check_layout(self, raw_dir: Path) -> None:
        """Check for ``<part>/<task>/<k>.hdf5`` files holding the camera and hand transforms.

        Raises:
            FileNotFoundError: Missing directory or no episode files.
            ValueError: A file lacking ``camera/intrinsic`` or a needed ``transforms/`` joint.
        """
        raw_dir = require_path(Path(raw_dir), "EgoDex's <part>/<task>/<k>.hdf5 tree", directory=True)  # fmt: skip
        files = self._files(raw_dir)
        if not files:
            raise FileNotFoundError(f"{raw_dir}: no <part>/<task_name>/<k>.hdf5 files; found {sorted(p.name for p in raw_dir.iterdir())[:10]}")  # fmt: skip
        import h5py

        with h5py.File(files[0], "r") as handle:
            self._check(handle, files[0])

    def _check(self, handle: Any, path: Path) -> None:
        require_keys(handle, ("camera", "transforms"), str(path))
        require_keys(handle["camera"], ("intrinsic",), f"{path}:camera")
        require_keys(handle["transforms"], ["camera", *egodex_joint_names("left"), *egodex_joint_names("right")], f"{path}:transforms")  # fmt: skip

    def list_episodes(self, raw_dir: Path) -> list[str]:
        """``<part>/<task>/<k>`` for every annotation file."""
        return [str(p.relative_to(raw_dir).with_suffix("")) for p in self._files(raw_dir)]

    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert ``<part>/<task>/<k>.hdf5`` (and its ``.mp4``).

        Raises:
            SkipEpisode: If no hand is tracked confidently in any frame.
            ValueError: For files of the wrong layout.
        """
        import h5py

        path = require_path(Path(raw_dir) / f"{episode_id}.hdf5", "an EgoDex annotation file")
        with h5py.File(path, "r") as handle:
            self._check(handle, path)
            camera = np.asarray(handle["transforms/camera"], dtype=np.float64)
            if camera.ndim != 3 or camera.shape[1:] != (4, 4):
                raise ValueError(f"{path}: transforms/camera has shape {camera.shape}; expected (N, 4, 4)")  # fmt: skip
            world_to_camera = np.linalg.inv(camera)
            hands, present = {}, {}
            for side in ("left", "right"):
                names = egodex_joint_names(side)
                poses = np.stack([np.asarray(handle[f"transforms/{n}"], dtype=np.float64) for n in names], axis=1)  # fmt: skip
                if poses.shape != (camera.shape[0], 25, 4, 4):
                    raise ValueError(f"{path}: {side} joint transforms have shape {poses.shape}; expected ({camera.shape[0]}, 25, 4, 4)")  # fmt: skip
                points = poses[:, :, :3, 3]
                hands[side] = np.einsum("tij,tkj->tki", world_to_camera[:, :3, :3], points) + world_to_camera[:, None, :3, 3]  # fmt: skip
                if "confidences" in handle:
                    require_keys(handle["confidences"], names, f"{path}:confidences")
                    confidence = np.stack([np.asarray(handle[f"confidences/{n}"]) for n in names], axis=1)  # fmt: skip
                    present[side] = mask_from_confidence(confidence, self.config.min_confidence)
                else:
                    present[side] = np.ones(camera.shape[0], dtype=bool)
            intrinsics = np.asarray(handle["camera/intrinsic"], dtype=np.float64).reshape(3, 3)
            attrs = {k: _text(v) for k, v in handle.attrs.items()}
        vectors, mask = hands_to_contract(hands["left"], hands["right"], layout=EGODEX_25, left_present=present["left"], right_present=present["right"])  # fmt: skip
        timestamps = np.arange(vectors.shape[0]) / self.config.source_fps
        images = {}
        if self.config.with_images:
            images["ego"], source_hw = self._video(path.with_suffix(".mp4"), vectors.shape[0])
            # K is given for 1920x1080 (principal point at the centre); a re-encoded video of
            # another size gets K scaled to it first.
            nominal_w, nominal_h = 2.0 * intrinsics[0, 2], 2.0 * intrinsics[1, 2]
            intrinsics = (
                np.diag([source_hw[1] / nominal_w, source_hw[0] / nominal_h, 1.0]) @ intrinsics
            )
            intrinsics = fit_intrinsics(intrinsics, source_hw, self.config.image_height, self.config.image_width)  # fmt: skip
        try:
            return build_episode(
                vectors,
                mask,
                timestamps,
                target_fps=self.config.target_fps,
                source=self.name,
                embodiment=self.embodiment,
                instruction=_instruction(attrs),
                images=images,
                metadata={
                    "episode_id": episode_id,
                    "camera_intrinsics": intrinsics.tolist(),
                    "task": attrs.get("task", ""),
                },
            )
        except SkipEpisode as err:
            raise SkipEpisode(f"{episode_id}: {err}") from err

    def _video(self, path: Path, frames: int) -> tuple[np.ndarray, tuple[int, int]]:
        import av

        require_path(path, "the ego video <k>.mp4 beside the annotation file")
        out, source_hw = [], (1080, 1920)
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                rgb = frame.to_ndarray(format="rgb24")
                source_hw = rgb.shape[:2]
                out.append(fit_image(rgb, self.config.image_height, self.config.image_width))
                if len(out) == frames:
                    break
        if len(out) < frames:
            raise ValueError(f"{path}: {len(out)} video frames for {frames} annotated frames; EgoDex videos are frame-aligned with their annotations")  # fmt: skip
        return np.stack(out), (int(source_hw[0]), int(source_hw[1]))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return " ".join(_text(v) for v in value.reshape(-1).tolist())
    return str(value)


def _instruction(attrs: dict[str, str]) -> str:
    """The official rule for picking the episode description."""
    if attrs.get("llm_type") == "reversible" and attrs.get("which_llm_description") == "2":
        text = attrs.get("llm_description2", "")
    else:
        text = attrs.get("llm_description", "")
    return text or attrs.get("task", "").replace("_", " ")
