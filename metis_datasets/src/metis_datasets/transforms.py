"""Sample construction and transforms: resampling, action chunks, motion windows, crops, norms.

Shapes: ``T`` frames, ``C`` chunk length, ``W`` motion window, ``H``/``W`` image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from metis_core.contract import hand_value_mask
from metis_core.episode import Episode, Subtask
from metis_core.normalization import Normalizer, NormMode
from metis_core.resample import resample_hand_vectors
from metis_datasets.lerobot_format import ACTION_KEY, EGO_KEY, STATE_KEY, LeRobotDataset

__all__ = [
    "SampleSpec",
    "augment_image",
    "build_sample",
    "center_crop_resize",
    "resample_episode",
    "window_indices",
]


@dataclass(frozen=True, kw_only=True)
class SampleSpec:
    """What one training sample holds.

    Args:
        chunk_len: Future actions per sample (the paper uses 30 at 30 Hz; 32 also common).
        history: Proprio states per sample (the paper uses 1).
        motion_window: Frames the motion tokenizer encodes (16): the upcoming
            ``motion_seconds`` of actions resampled to this many frames (DESIGN §5).
        motion_seconds: Duration of the motion window (1 s), as the motion tokenizer's
            ``window_seconds``.
        image_size: Side of the square image after the centre crop, or None for no image.
        norm_mode: ``mean_std``, ``min_max``, ``q01_q99`` or ``identity``.
        augment: Apply image augmentation (training only).
        image_dtype: ``"float32"`` (values in [0, 1]) or ``"uint8"`` (0..255, four times less
            to move between dataloader workers; convert on the accelerator). Augmentation needs
            ``"float32"``.
    """

    chunk_len: int = 30
    history: int = 1
    motion_window: int = 16
    motion_seconds: float = 1.0
    image_size: int | None = None
    norm_mode: str = "mean_std"
    augment: bool = False
    image_dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.chunk_len < 1 or self.history < 1 or self.motion_window < 1:
            raise ValueError(f"chunk_len, history and motion_window must be >= 1, got {self.chunk_len}, {self.history}, {self.motion_window}")  # fmt: skip
        if not self.motion_seconds > 0:
            raise ValueError(f"motion_seconds must be > 0, got {self.motion_seconds}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 or None, got {self.image_size}")
        NormMode.parse(self.norm_mode)
        if self.image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be 'float32' or 'uint8', got {self.image_dtype!r}")
        if self.augment and self.image_dtype != "float32":
            raise ValueError("image augmentation needs image_dtype='float32'")


def window_indices(start: int, count: int, episode_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices ``start .. start+count-1`` clamped into the episode, and their validity.

    Returns:
        ``(indices (count,), valid (count,) bool)``; indices past either end repeat the edge frame.
    """
    raw = np.arange(start, start + count)
    valid = (raw >= 0) & (raw < episode_length)
    # Note: minimum/maximum instead of np.clip, whose Python wrapper costs more than the work here
    return np.minimum(np.maximum(raw, 0), episode_length - 1), valid


def center_crop_resize(frames: torch.Tensor, size: int = 224, *, dtype: str = "float32") -> torch.Tensor:  # fmt: skip
    """Centre-crop the largest square and resize it (the paper: 480×640 → 480×480 → 224×224).

    uint8 input is cropped and resized in uint8 (antialiased bilinear, SIMD on CPU, ~5x faster
    than in float; values differ from the float path by at most one grey level) and converted last.

    Args:
        frames: ``(..., H, W, 3)`` uint8 or ``(..., 3, H, W)`` float.
        size: Output side.
        dtype: ``"float32"`` (values in [0, 1]) or ``"uint8"`` (uint8 input only).

    Returns:
        ``(..., 3, size, size)`` float32 in [0, 1], or uint8.
    """
    x = frames
    if x.dtype == torch.uint8:
        x = x.movedim(-1, -3)
    elif dtype == "uint8":
        raise ValueError("center_crop_resize: dtype='uint8' needs uint8 (..., H, W, 3) input")
    h, w = x.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    lead = x.shape[:-3]
    x = x.reshape(-1, 3, side, side)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)  # fmt: skip
    x = x.reshape(*lead, 3, size, size)
    if x.dtype == torch.uint8 and dtype == "float32":
        return x.float().div_(255.0)
    return x.contiguous()


def augment_image(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random resized crop (90–100 % area), brightness/contrast/saturation jitter.

    Args:
        image: ``(3, S, S)`` float in [0, 1].
        generator: Source of randomness (deterministic per sample).

    Returns:
        ``(3, S, S)`` float in [0, 1].
    """
    size = image.shape[-1]
    scale = 0.9 + 0.1 * torch.rand((), generator=generator).item()
    side = max(round(size * scale**0.5), 1)
    top = int(torch.randint(0, size - side + 1, (), generator=generator))
    left = int(torch.randint(0, size - side + 1, (), generator=generator))
    x = image[:, top : top + side, left : left + side][None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)[0]
    brightness, contrast, saturation = (1 + 0.2 * (torch.rand(3, generator=generator) - 0.5) * 2).tolist()  # fmt: skip
    x = x * brightness
    mean = x.mean()
    x = (x - mean) * contrast + mean
    grey = x.mean(0, keepdim=True)
    x = (x - grey) * saturation + grey
    return x.clamp(0.0, 1.0)


def resample_episode(episode: Episode, target_fps: float) -> Episode:
    """Resample an episode to a new rate (linear positions, slerp rotations, nearest images).

    Subtask boundaries and images map to the nearest new frame.

    Args:
        episode: Source episode.
        target_fps: New rate in Hz.

    Returns:
        A new :class:`Episode` at ``target_fps``.
    """
    if not target_fps > 0:
        raise ValueError(f"target_fps must be positive, got {target_fps}")
    times = np.arange(episode.length) / episode.fps
    state = resample_hand_vectors(episode.state, times, target_fps=target_fps, hand_mask=episode.hand_mask)  # fmt: skip
    action = resample_hand_vectors(episode.action, times, target_fps=target_fps, hand_mask=episode.hand_mask)  # fmt: skip
    new_times = state.timestamps.numpy()
    nearest = np.clip(np.round(new_times * episode.fps).astype(int), 0, episode.length - 1)
    n = len(new_times)

    def to_new(frame: int) -> int:
        return int(np.clip(round(frame / episode.fps * target_fps), 0, n))

    subtasks = []
    for subtask in episode.subtasks:
        start, end = to_new(subtask.start), to_new(subtask.end)
        if end > start:
            subtasks.append(Subtask(start, end, subtask.text))
    return Episode(
        state=state.vectors.numpy().astype(np.float32),
        action=action.vectors.numpy().astype(np.float32),
        hand_mask=state.hand_mask.numpy() & action.hand_mask.numpy(),
        fps=float(target_fps),
        instruction=episode.instruction,
        subtasks=subtasks,
        images={k: v[nearest] for k, v in episode.images.items()},
        source=episode.source,
        embodiment=episode.embodiment,
        metadata=dict(episode.metadata, resampled_from_fps=episode.fps),
    )


def build_sample(
    dataset: LeRobotDataset,
    frame: int,
    spec: SampleSpec,
    normalizers: dict[str, Normalizer] | None = None,
    *,
    generator: torch.Generator | None = None,
) -> dict:
    """One training sample at a global frame of a dataset.

    Returns a dict a ``DataLoader`` batches:

    * ``observation.state`` ``(history, 48)`` float32 (normalised), ``observation.state_mask``
      ``(history,)`` bool (False before the episode start);
    * ``action`` ``(C, 48)``, ``action_is_pad`` ``(C,)`` bool (True past the episode end),
      ``action_hand_mask`` ``(C, 2)``;
    * ``motion_window`` ``(W, 48)`` unnormalised actions for the motion tokenizer, with
      ``motion_window_is_pad`` ``(W,)``;
    * ``hand_mask`` ``(2,)``; ``task`` (str); ``subtask`` (str, ``""`` if none);
      ``episode_index``, ``frame_index`` (int);
    * ``observation.images.ego`` ``(3, S, S)`` float in [0, 1] (or uint8, see
      ``spec.image_dtype``) if ``spec.image_size``: the centre square of the frame resized to
      ``S`` (:func:`center_crop_resize`).
    """
    episode = int(dataset.frame_episode[frame])
    start = int(dataset.episode_starts[episode])
    length = int(dataset.episode_lengths[episode])
    local = frame - start
    state_all, action_all, mask_all = dataset.state, dataset.action, dataset.hand_mask
    hist_idx, hist_valid = window_indices(local - spec.history + 1, spec.history, length)
    chunk_idx, chunk_valid = window_indices(local, spec.chunk_len, length)
    # The motion window: the upcoming motion_seconds (frames local .. local+span, the last
    # frame held past the episode end) resampled to motion_window frames, linear positions and
    # slerp rotations, the rule of metis_core.vla.data.motion_windows_for_episode.
    span = max(round(spec.motion_seconds * dataset.fps), 1)
    motion_idx, _ = window_indices(local, span + 1, length)
    motion_times = np.arange(span + 1, dtype=np.float64) / dataset.fps
    motion_query = np.linspace(0.0, motion_times[-1], spec.motion_window)
    motion_valid = local + motion_query * dataset.fps <= length - 1 + 1e-9
    state = torch.from_numpy(state_all[start + hist_idx])
    action = torch.from_numpy(action_all[start + chunk_idx])
    motion = resample_hand_vectors(
        torch.from_numpy(np.ascontiguousarray(action_all[start + motion_idx])),
        motion_times,
        target_times=motion_query,
        hand_mask=torch.from_numpy(np.ascontiguousarray(mask_all[start + motion_idx])),
    ).vectors
    chunk_mask = torch.from_numpy(mask_all[start + chunk_idx] & chunk_valid[:, None])
    if normalizers:
        state = normalizers[STATE_KEY].normalize(state)
        action = normalizers[ACTION_KEY].normalize(action)
        # missing hands stay exactly zero after normalisation
        state = state * hand_value_mask(mask_all[start + hist_idx])
        action = action * hand_value_mask(chunk_mask)
    subtask = ""
    for segment in dataset.episodes[episode]["subtasks"]:
        if segment.start <= local < segment.end:
            subtask = segment.text
            break
    sample = {
        "observation.state": state.float(),
        "observation.state_mask": torch.from_numpy(hist_valid),
        "action": action.float(),
        "action_is_pad": torch.from_numpy(~chunk_valid),
        "action_hand_mask": chunk_mask,
        "motion_window": motion.float(),
        "motion_window_is_pad": torch.from_numpy(~motion_valid),
        "hand_mask": torch.from_numpy(mask_all[frame].copy()),
        "task": dataset.instruction(episode),
        "subtask": subtask,
        "episode_index": episode,
        "frame_index": local,
    }
    if spec.image_size is not None:
        raw = torch.from_numpy(dataset.frames(episode, [local], EGO_KEY)[0])
        image = center_crop_resize(raw, spec.image_size, dtype=spec.image_dtype)
        if spec.augment:
            image = augment_image(image, generator or torch.Generator().manual_seed(frame))
        sample[EGO_KEY] = image
    return sample
