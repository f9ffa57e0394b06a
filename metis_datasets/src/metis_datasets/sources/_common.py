"""Shared parts of the EgoAtlas source adapters.

* :class:`KeypointLayout` names, per source, which keypoints are the wrist, the three MCPs that
  build the contract wrist frame, and the five fingertips;
* :func:`hands_to_contract` turns keypoints in the ego camera frame into ``(T, 48)`` contract
  vectors and a ``(T, 2)`` hand mask (missing, untracked, low-confidence or degenerate hands are
  masked and zeroed);
* :func:`build_episode` resamples to the target rate, forms the human action (the next frame's
  pose), maps subtask segments given in seconds to frames and picks the images;
* :class:`IndexedDatasetSource` is the base of adapters whose episodes can be listed and loaded
  one by one (what lets ``metis-datasets convert`` run them in parallel and resume them);
* layout checks (:func:`require_path`, :func:`require_keys`) raise errors that name the missing
  or unexpected file or key, and :func:`load_pickled_npy` / :func:`load_pickle` read the pickled
  files some sources publish with an allow-list unpickler (numpy arrays and plain containers only).

Shape legend: ``T`` frames, ``K`` keypoints per hand.
"""

from __future__ import annotations

import abc
import io
import math
import pickle
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from metis_core.config import ComponentConfig
from metis_core.contract import LEFT, RIGHT
from metis_core.episode import Episode, Subtask
from metis_core.frames import to_wrist_frame, wrist_frame_from_keypoints
from metis_core.interfaces import DatasetSource
from metis_core.resample import resample_hand_vectors, target_timestamps
from metis_core.rotations import matrix_to_rot6d

__all__ = [
    "HOLOLENS_26",
    "MANO_SMPLX_21",
    "OPENPOSE_21",
    "IndexedDatasetSource",
    "KeypointLayout",
    "SegmentSeconds",
    "SkipEpisode",
    "SourceConfig",
    "build_episode",
    "fit_image",
    "fit_intrinsics",
    "hands_to_contract",
    "load_ego_images",
    "load_frames",
    "load_image",
    "load_pickle",
    "load_pickled_npy",
    "mask_from_confidence",
    "require_keys",
    "require_path",
    "segments_to_subtasks",
]


# -- keypoint layouts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KeypointLayout:
    """Where the contract's keypoints sit in one source's hand skeleton.

    Args:
        name: Short name for messages.
        num_keypoints: ``K``.
        wrist: Index of the wrist joint (origin of the wrist frame).
        index_mcp: Index-finger MCP (knuckle).
        middle_mcp: Middle-finger MCP.
        little_mcp: Little-finger MCP.
        fingertips: Thumb, index, middle, ring, little tips.
    """

    name: str
    num_keypoints: int
    wrist: int
    index_mcp: int
    middle_mcp: int
    little_mcp: int
    fingertips: tuple[int, int, int, int, int]

    def __post_init__(self) -> None:
        used = (self.wrist, self.index_mcp, self.middle_mcp, self.little_mcp, *self.fingertips)
        if len(self.fingertips) != 5 or any(not 0 <= i < self.num_keypoints for i in used):
            raise ValueError(f"{self.name}: keypoint indices {used} must lie in [0, {self.num_keypoints}) with 5 fingertips")  # fmt: skip


#: OpenPose / MediaPipe order (H2O, OakInk, metis ``human_mano``): 0 wrist, thumb 1-4, index 5-8,
#: middle 9-12, ring 13-16, little 17-20.
OPENPOSE_21 = KeypointLayout("openpose-21", 21, 0, 5, 9, 17, (4, 8, 12, 16, 20))
#: smplx MANO joints + fingertip vertices (ARCTIC): 0 wrist, index 1-3, middle 4-6, little 7-9,
#: ring 10-12, thumb 13-15, tips 16 thumb, 17 index, 18 middle, 19 ring, 20 little.
MANO_SMPLX_21 = KeypointLayout("mano-smplx-21", 21, 0, 1, 4, 7, (16, 17, 18, 19, 20))
#: HoloLens 2 ``HandJointKind`` (HoloAssist): 0 palm, 1 wrist, thumb 2-5, then index, middle,
#: ring, little with metacarpal, proximal (= the MCP knuckle), intermediate, distal, tip.
HOLOLENS_26 = KeypointLayout("hololens-26", 26, 1, 7, 12, 22, (5, 10, 15, 20, 25))


# -- keypoints -> contract --------------------------------------------------------------------


def mask_from_confidence(confidence: np.ndarray, threshold: float) -> np.ndarray:
    """``(T, ...)`` per-joint tracking confidences → ``(T,)`` presence: every joint ≥ threshold."""
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.ndim == 1:
        return np.isfinite(confidence) & (confidence >= threshold)
    flat = confidence.reshape(confidence.shape[0], -1)
    return np.all(np.isfinite(flat) & (flat >= threshold), axis=1)


def _one_hand(
    keypoints: np.ndarray, present: np.ndarray, layout: KeypointLayout, side: str
) -> tuple[np.ndarray, np.ndarray]:
    frames = keypoints.shape[0]
    if keypoints.shape[1:] != (layout.num_keypoints, 3):
        raise ValueError(f"{side} keypoints: expected (T, {layout.num_keypoints}, 3) in the {layout.name} layout, got {keypoints.shape}")  # fmt: skip
    present = np.asarray(present, dtype=bool).reshape(frames)
    finite = np.isfinite(keypoints).all(axis=(1, 2))
    nonzero = np.abs(keypoints).sum(axis=(1, 2)) > 0
    usable = present & finite & nonzero
    points = torch.from_numpy(np.where(usable[:, None, None], keypoints, 0.0).astype(np.float64))
    wrist = points[:, layout.wrist]
    rotation, _ = wrist_frame_from_keypoints(
        wrist,
        points[:, layout.index_mcp],
        points[:, layout.middle_mcp],
        points[:, layout.little_mcp],
        strict=False,
    )
    palm = (points[:, layout.middle_mcp] - wrist).norm(dim=-1)
    across = points[:, layout.index_mcp] - points[:, layout.little_mcp]
    # A hand whose palm keypoints coincide or are collinear has no wrist frame: mask it.
    degenerate = (palm < 1e-4) | (torch.linalg.cross(across, rotation[..., 2], dim=-1).norm(dim=-1) < 1e-5)  # fmt: skip
    usable &= ~degenerate.numpy()
    tips = to_wrist_frame(points[:, list(layout.fingertips)], wrist, rotation)
    out = np.zeros((frames, 24), dtype=np.float64)
    out[:, 0:3] = wrist.numpy()
    out[:, 3:9] = matrix_to_rot6d(rotation).numpy()
    out[:, 9:24] = tips.reshape(frames, 15).numpy()
    out[~usable] = 0.0
    return out, usable


def hands_to_contract(
    left: np.ndarray | None,
    right: np.ndarray | None,
    *,
    layout: KeypointLayout,
    left_present: np.ndarray | None = None,
    right_present: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of both hands in the ego camera frame → contract vectors and hand mask.

    A hand counts as present at a frame when the source flags it valid/tracked (``*_present``),
    its keypoints are finite and not all zero, and its palm keypoints span a wrist frame.

    Args:
        left: ``(T, K, 3)`` left-hand keypoints in metres (OpenCV camera axes), or None if the
            source has no left hand.
        right: ``(T, K, 3)`` right-hand keypoints, or None.
        layout: The source's keypoint order.
        left_present: ``(T,)`` bool validity of the left hand (all True if omitted).
        right_present: ``(T,)`` bool validity of the right hand.

    Returns:
        ``(vectors (T, 48) float64, hand_mask (T, 2) bool)``; absent hands are zeros.

    Raises:
        ValueError: If both hands are None, or shapes disagree with the layout.
    """
    given = [h for h in (left, right) if h is not None]
    if not given:
        raise ValueError("hands_to_contract: at least one hand's keypoints are needed")
    frames = np.asarray(given[0]).shape[0]
    vectors = np.zeros((frames, 48), dtype=np.float64)
    mask = np.zeros((frames, 2), dtype=bool)
    for side, keypoints, present, hand in (("left", left, left_present, LEFT), ("right", right, right_present, RIGHT)):  # fmt: skip
        if keypoints is None:
            continue
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if keypoints.ndim != 3 or keypoints.shape[0] != frames:
            raise ValueError(f"{side} keypoints: expected (T={frames}, {layout.num_keypoints}, 3), got {keypoints.shape}")  # fmt: skip
        flags = np.ones(frames, dtype=bool) if present is None else np.asarray(present, dtype=bool)
        if flags.shape != (frames,):
            raise ValueError(f"{side}_present: expected ({frames},) flags, got {flags.shape}")
        values, usable = _one_hand(keypoints, flags, layout, side)
        vectors[:, hand.wrist_position] = values[:, 0:3]
        vectors[:, hand.wrist_rot6d] = values[:, 3:9]
        vectors[:, hand.fingertips] = values[:, 9:24]
        mask[:, hand.index] = usable
    return vectors, mask


# -- episodes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentSeconds:
    """A subtask segment on the source's clock.

    Args:
        start: Start time in seconds (same clock as the episode's timestamps).
        end: End time in seconds.
        text: What the hands do.
    """

    start: float
    end: float
    text: str


def segments_to_subtasks(
    segments: Iterable[SegmentSeconds], *, start_time: float, fps: float, length: int
) -> list[Subtask]:
    """Map segments in seconds to frame ranges of an episode at ``fps`` starting at ``start_time``.

    Boundaries round to the nearest frame (halves up) and are clipped to the episode; a segment that starts
    before the previous one ends is cut to start there (subtasks must not overlap); empty ones
    are dropped.
    """
    out: list[Subtask] = []
    previous_end = 0
    for segment in sorted(segments, key=lambda s: (s.start, s.end)):
        start = int(np.clip(math.floor((segment.start - start_time) * fps + 0.5), 0, length))
        end = int(np.clip(math.floor((segment.end - start_time) * fps + 0.5), 0, length))
        start = max(start, previous_end)
        if end > start and segment.text:
            out.append(Subtask(start, end, segment.text))
            previous_end = end
    return out


def build_episode(
    vectors: np.ndarray,
    hand_mask: np.ndarray,
    timestamps: np.ndarray,
    *,
    target_fps: float,
    source: str,
    embodiment: str = "human_mano",
    instruction: str = "",
    segments: Sequence[SegmentSeconds] = (),
    images: Mapping[str, np.ndarray] | None = None,
    metadata: Mapping[str, Any] | None = None,
    max_gap_s: float | None = None,
    snap_s: float = 2e-3,
) -> Episode:
    """Resample contract vectors to ``target_fps`` and build a human episode.

    The action of frame ``t`` is the pose of frame ``t + 1`` (the last frame repeats itself); a
    hand counts as present at ``t`` only if it is present at ``t`` and ``t + 1``. Images are taken
    from the source frame nearest to each new time.

    Args:
        vectors: ``(T, 48)`` contract vectors at the source's times.
        hand_mask: ``(T, 2)`` presence.
        timestamps: ``(T,)`` strictly increasing seconds.
        target_fps: Output rate in Hz.
        source: Registry name of the source.
        embodiment: Hand embodiment name.
        instruction: Language instruction of the episode.
        segments: Subtask segments on the timestamps' clock.
        images: Camera name → ``(T, H, W, 3)`` uint8 frames aligned with ``timestamps``.
        metadata: Extra metadata (JSON-able).
        max_gap_s: If given, new frames inside a gap between consecutive source samples longer
            than this count as untracked instead of being interpolated.
        snap_s: New frames within this many seconds of a source sample use it unchanged.

    Returns:
        A validated :class:`~metis_core.episode.Episode`.

    Raises:
        SkipEpisode: If fewer than two frames remain, or no hand is present at any frame.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if vectors.shape[0] < 2:
        raise SkipEpisode(f"only {vectors.shape[0]} annotated frame(s); at least 2 are needed")
    if not hand_mask.any():
        raise SkipEpisode("no hand is tracked in any frame")
    # Frames whose time lies within ``snap_s`` of a source sample take that sample as is: clock
    # jitter of a few tenths of a millisecond must not turn a frame into an interpolation with
    # an untracked neighbour.
    tolerance = min(snap_s, 0.25 / target_fps)
    start, end = float(timestamps[0]), float(timestamps[-1])
    grid = target_timestamps(start, max(end, start + np.floor((end - start + tolerance) * target_fps) / target_fps), target_fps).numpy()  # fmt: skip
    closest = np.clip(np.searchsorted(timestamps, grid), 1, len(timestamps) - 1)
    closest -= (grid - timestamps[closest - 1]) < (timestamps[closest] - grid)
    snap = np.abs(timestamps[closest] - grid) <= tolerance
    grid = np.where(snap, timestamps[closest], grid)
    resampled = resample_hand_vectors(vectors, timestamps, target_times=np.ascontiguousarray(grid), hand_mask=hand_mask)  # fmt: skip
    poses = resampled.vectors.numpy()
    present = resampled.hand_mask.numpy().astype(bool)
    if poses.shape[0] < 2:
        raise SkipEpisode(f"shorter than two frames at {target_fps} Hz ({timestamps[-1] - timestamps[0]:.3f} s)")  # fmt: skip
    new_times = resampled.timestamps.numpy()
    nearest = np.clip(np.searchsorted(timestamps, new_times), 1, len(timestamps) - 1)
    nearest -= (new_times - timestamps[nearest - 1]) < (timestamps[nearest] - new_times)
    if max_gap_s is not None:
        before = np.clip(np.searchsorted(timestamps, new_times, side="right") - 1, 0, len(timestamps) - 2)  # fmt: skip
        on_sample = np.isclose(timestamps[nearest], new_times, rtol=0.0, atol=1e-9)
        in_gap = (timestamps[before + 1] - timestamps[before]) > max_gap_s
        present &= (on_sample | ~in_gap)[:, None]
    following = np.concatenate([np.arange(1, poses.shape[0]), [poses.shape[0] - 1]])
    mask = present & present[following]
    state, action = poses.copy(), poses[following].copy()
    for hand in (LEFT, RIGHT):
        missing = ~mask[:, hand.index]
        for block in (hand.wrist_position, hand.wrist_rot6d, hand.fingertips):
            state[missing, block] = 0.0
            action[missing, block] = 0.0
    picked: dict[str, np.ndarray] = {}
    for camera, frames in (images or {}).items():
        picked[camera] = np.ascontiguousarray(frames[nearest])
    subtasks = segments_to_subtasks(
        segments, start_time=float(timestamps[0]), fps=target_fps, length=poses.shape[0]
    )
    episode = Episode(
        state=state.astype(np.float32),
        action=action.astype(np.float32),
        hand_mask=mask,
        fps=float(target_fps),
        instruction=instruction,
        subtasks=subtasks,
        images=picked,
        source=source,
        embodiment=embodiment,
        metadata=dict(metadata or {}),
    )
    episode.validate()
    return episode


class SkipEpisode(Exception):  # noqa: N818 - it is a signal, not an error of the caller
    """An episode that cannot be converted; the conversion records the reason and goes on."""


@dataclass(frozen=True, kw_only=True)
class SourceConfig(ComponentConfig):
    """Fields every adapter shares.

    Args:
        target_fps: Rate of the converted episodes in Hz (the contract's default 30).
        with_images: Read the ego camera frames into ``observation.images.ego``. Episodes whose
            frames are missing are then skipped (with the reason in the summary).
        image_height: Height of the stored frames (resize to cover, then centre crop).
        image_width: Width of the stored frames.
    """

    target_fps: float = 30.0
    with_images: bool = True
    image_height: int = 480
    image_width: int = 640

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {self.target_fps}")
        if self.image_height < 16 or self.image_width < 16 or self.image_height % 2 or self.image_width % 2:  # fmt: skip
            raise ValueError(f"image_height and image_width must be even and >= 16, got {self.image_height}x{self.image_width}")  # fmt: skip


class IndexedDatasetSource(DatasetSource, abc.ABC):
    """A source whose episodes can be listed, then loaded one at a time by id.

    Subclasses implement :meth:`check_layout`, :meth:`list_episodes` and :meth:`load_episode`;
    :meth:`iter_episodes` follows from them (skipping episodes that raise :class:`SkipEpisode`).
    ``metis-datasets convert`` loads such episodes in parallel worker processes and resumes by id.
    """

    config: SourceConfig
    #: Embodiment of the converted episodes.
    embodiment: ClassVar[str] = "human_mano"

    def __init__(self, config: SourceConfig | None = None) -> None:
        """Keep ``config`` (default: the ``config_class`` defaults).

        Raises:
            ValueError: If ``config`` is not an instance of the source's ``config_class``.
        """
        if config is None:
            config = self.config_class()
        if not isinstance(config, self.config_class):
            raise ValueError(f"{type(self).__name__} expects a {self.config_class.__name__}, got {type(config).__name__}")  # fmt: skip
        self.config = config

    @abc.abstractmethod
    def list_episodes(self, raw_dir: Path) -> list[str]:
        """Ids of the episodes under ``raw_dir``, in a stable order."""

    @abc.abstractmethod
    def load_episode(self, raw_dir: Path, episode_id: str) -> Episode:
        """Convert one episode.

        Raises:
            SkipEpisode: If this episode cannot be converted (the reason says why).
        """

    def iter_episodes(self, raw_dir: Path) -> Iterator[Episode]:
        """Yield every convertible episode (see :meth:`list_episodes`)."""
        raw_dir = Path(raw_dir)
        self.check_layout(raw_dir)
        for episode_id in self.list_episodes(raw_dir):
            try:
                yield self.load_episode(raw_dir, episode_id)
            except SkipEpisode:
                continue


# -- layout checks and readers ------------------------------------------------------------------


def require_path(path: Path, what: str, *, directory: bool = False) -> Path:
    """Return ``path`` if it exists (as a directory if asked).

    Raises:
        FileNotFoundError: Naming the path and what was expected there.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: expected {what}")
    if directory and not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory: expected {what}")
    if not directory and path.is_dir():
        raise FileNotFoundError(f"{path} is a directory: expected a file, {what}")
    return path


def require_keys(mapping: Any, keys: Iterable[str], where: str) -> None:
    """Check that a dict (or HDF5 group, npz) has the keys.

    Raises:
        ValueError: Naming the missing keys, the place, and the keys that were found.
    """
    if not hasattr(mapping, "keys"):
        raise ValueError(f"{where}: expected a dict with keys {list(keys)}, got {type(mapping).__name__}")  # fmt: skip
    present = set(mapping.keys())
    missing = [k for k in keys if k not in present]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; found {sorted(map(str, present))}")


class _AllowListUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, numpy scalars and plain containers only (no code execution)."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "complex"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            # protocols 0-2 store bytes (an array's buffer) as latin-1 text re-encoded on load
            return _latin1_encode
        if (module, name) in (("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")):  # fmt: skip
            # protocol 5 stores an array's buffer out of the pickle stream
            return _frombuffer
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            # torch pickles storages as torch.save bytes; read them with the safe loader.
            return _torch_storage_from_bytes
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only numpy arrays, torch tensors and plain "
            "containers are read from dataset files"
        )


def _latin1_encode(text: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to what numpy pickles of protocols 0-2 use (latin-1 text)."""
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in ("latin1", "iso88591"):  # fmt: skip
        raise pickle.UnpicklingError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): only latin-1 text (numpy's protocol 0-2 buffers) is decoded")  # fmt: skip
    return text.encode("latin1")


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """numpy's protocol-5 array rebuild, refusing object dtypes (which would need unpickling)."""
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise pickle.UnpicklingError("refusing an object array in a protocol-5 buffer")
    array = np.frombuffer(buffer, dtype=dtype)
    return array.reshape(shape, order="F" if order == "F" else "C")


def _torch_storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def load_pickle(path: Path) -> Any:
    """Read a pickle file holding numpy arrays / tensors in dicts and lists, without running code.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not a pickle, or refers to anything but arrays and containers.
    """
    path = require_path(path, "a pickled annotation file")
    try:
        with path.open("rb") as handle:
            return _AllowListUnpickler(handle).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError) as err:  # fmt: skip
        raise ValueError(f"{path}: cannot read as a pickled array file ({err})") from err


def load_pickled_npy(path: Path) -> Any:
    """Read a ``.npy`` file written by ``np.save`` of a Python object (e.g. a dict).

    Equivalent to ``np.load(path, allow_pickle=True).item()`` for 0-d object arrays (or the
    array itself otherwise), but the pickle part goes through the allow-list unpickler.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it is not a ``.npy`` file or holds anything but arrays and containers.
    """
    path = require_path(path, "a .npy file")
    with path.open("rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
        except ValueError as err:
            raise ValueError(f"{path}: not a .npy file ({err})") from err
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0  # fmt: skip
        try:
            shape, fortran, dtype = reader(handle)
        except (ValueError, EOFError, SyntaxError) as err:
            raise ValueError(f"{path}: truncated or malformed .npy header ({err})") from err
        if not dtype.hasobject:
            count = math.prod(shape)
            data = handle.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise ValueError(f"{path}: truncated .npy file: the header promises {count * dtype.itemsize} bytes of {dtype} {shape}, the file holds {len(data)}")  # fmt: skip
            array = np.frombuffer(data, dtype=dtype, count=count)
            return array.reshape(shape, order="F" if fortran else "C")
        try:
            array = _AllowListUnpickler(handle).load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, ValueError, TypeError) as err:  # fmt: skip
            raise ValueError(f"{path}: cannot read the pickled object ({err})") from err
    if isinstance(array, np.ndarray) and array.shape == () and array.dtype == object:
        return array.item()
    return array


def load_image(path: Path) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB image from a PNG/JPEG file.

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    path = require_path(path, "an image file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot decode image ({err})") from err


def _cover_geometry(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int, int, int]:  # fmt: skip
    (h, w), (th, tw) = source_hw, target_hw
    scale = max(th / h, tw / w)
    new_h, new_w = max(round(h * scale), th), max(round(w * scale), tw)
    top, left = (new_h - th) // 2, (new_w - tw) // 2
    return new_h, new_w, top, left


def fit_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize to cover ``height``×``width`` keeping the aspect ratio, then centre crop.

    Args:
        image: ``(H, W, 3)`` uint8.

    Returns:
        ``(height, width, 3)`` uint8.
    """
    from PIL import Image

    new_h, new_w, top, left = _cover_geometry(image.shape[:2], (height, width))
    if (new_h, new_w) != image.shape[:2]:
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))  # fmt: skip
    return np.ascontiguousarray(image[top : top + height, left : left + width])


def fit_intrinsics(
    intrinsics: np.ndarray, source_hw: tuple[int, int], height: int, width: int
) -> np.ndarray:
    """The pinhole ``K`` of an image after :func:`fit_image` (pixel centres stay aligned).

    Args:
        intrinsics: ``(3, 3)`` K of the source image.
        source_hw: ``(H, W)`` of the source image.
        height, width: Size after :func:`fit_image`.

    Returns:
        ``(3, 3)`` float64.
    """
    h, w = source_hw
    new_h, new_w, top, left = _cover_geometry((h, w), (height, width))
    sx, sy = new_w / w, new_h / h
    k = np.asarray(intrinsics, dtype=np.float64).copy()
    k[0, 0] *= sx
    k[0, 1] *= sx
    k[1, 1] *= sy
    k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5 - left
    k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5 - top
    return k


def load_frames(paths: Sequence[Path], height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:  # fmt: skip
    """Read and :func:`fit_image` a list of image files.

    Returns:
        ``(frames (T, height, width, 3) uint8, (H, W) of the source images)``.

    Raises:
        SkipEpisode: If a frame is missing (the episode is skipped with that reason).
        ValueError: If a frame cannot be decoded or the frames differ in size.
    """
    frames = np.empty((len(paths), height, width, 3), dtype=np.uint8)
    size: tuple[int, int] | None = None
    for number, path in enumerate(paths):
        if not Path(path).is_file():
            raise SkipEpisode(f"ego frame {path} is missing (convert with with_images=False to keep only poses)")  # fmt: skip
        image = load_image(path)
        if size is None:
            size = (int(image.shape[0]), int(image.shape[1]))
        elif image.shape[:2] != size:
            raise ValueError(f"{path}: {image.shape[1]}x{image.shape[0]} image, the episode's first frame is {size[1]}x{size[0]}")  # fmt: skip
        frames[number] = fit_image(image, height, width)
    return frames, size or (height, width)


def load_ego_images(paths: Sequence[Path], config: SourceConfig, intrinsics: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:  # fmt: skip
    """Read an episode's ego frames at the configured size, with the matching pinhole ``K``.

    Args:
        paths: One image file per source frame.
        config: Gives ``image_height`` and ``image_width``.
        intrinsics: ``(3, 3)`` K of the source images.

    Returns:
        ``({"ego": (T, height, width, 3) uint8}, (3, 3) K of the stored frames)``.

    Raises:
        SkipEpisode: If a frame is missing.
        ValueError: If a frame cannot be decoded or the frames differ in size.
    """
    frames, source_hw = load_frames(paths, config.image_height, config.image_width)
    return {"ego": frames}, fit_intrinsics(intrinsics, source_hw, config.image_height, config.image_width)  # fmt: skip
