"""Training samples of the METIS policy and how they are cut from episodes.

One sample is one time step ``t`` of an episode: the ego image, the instruction, the proprio
state, the upcoming chunk of ``C`` actions (padded at the episode's end, with a mask), the
hand-presence mask, the 44 dynamics codes of the step (from the annotation pass: 4 visual codes
then 40 motion codes) and the subtask bookkeeping that teaches the model when to reason:

* ``previous_subtask`` — the subtask the robot was doing before this step (shown in the prompt,
  as the policy session does at inference);
* ``subtask`` — set only on the first frame of a new subtask segment: the target then starts
  with ``[BOA] <subtask text>`` before ``[BOD]`` and the codes.

Shape legend: ``C`` chunk length, ``D`` = 48, ``Q_v`` = 4, ``Q_m`` = 40.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metis_core.contract import ACTION_DIM
from metis_core.episode import Episode

__all__ = [
    "DynamicsCodes",
    "PolicyBatch",
    "TrainingSample",
    "dynamics_codes_for_episode",
    "dynamics_codes_for_episodes",
    "motion_windows_for_episode",
    "sample_at",
    "samples_from_episode",
    "subtask_at",
]


@dataclass
class TrainingSample:
    """One training step of the policy.

    Args:
        image: ``(H, W, 3)`` uint8 ego frame at ``t``.
        instruction: Task instruction.
        state: ``(D,)`` proprio state at ``t``.
        actions: ``(C, D)`` the upcoming chunk (rows past the episode end are padding).
        action_valid: ``(C,)`` bool, False for padding rows.
        hand_mask: ``(C, 2)`` bool hand presence over the chunk (or ``(2,)`` for all rows).
        visual_codes: ``(Q_v,)`` codes, or ``None`` for a reasoning-only sample.
        motion_codes: ``(Q_m,)`` codes, or ``None`` with ``visual_codes``.
        subtask: Text to reason about when the subtask changes at ``t``, else ``None``.
        previous_subtask: Subtask before ``t`` (in the prompt), or ``None``.
        dataset_key: Which normalisation statistics apply.
    """

    image: np.ndarray
    instruction: str
    state: np.ndarray
    actions: np.ndarray
    action_valid: np.ndarray
    hand_mask: np.ndarray
    visual_codes: np.ndarray | None = None
    motion_codes: np.ndarray | None = None
    subtask: str | None = None
    previous_subtask: str | None = None
    dataset_key: str | None = None

    def __post_init__(self) -> None:
        self.state = np.asarray(self.state, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.action_valid = np.asarray(self.action_valid, dtype=bool)
        self.hand_mask = np.asarray(self.hand_mask, dtype=bool)
        if self.state.shape != (ACTION_DIM,):
            raise ValueError(f"state: expected ({ACTION_DIM},), got {self.state.shape}")
        if self.actions.ndim != 2 or self.actions.shape[1] != ACTION_DIM:
            raise ValueError(f"actions: expected (C, {ACTION_DIM}), got {self.actions.shape}")
        if self.action_valid.shape != (self.actions.shape[0],):
            raise ValueError(
                f"action_valid: expected ({self.actions.shape[0]},), got {self.action_valid.shape}"
            )
        if self.hand_mask.shape == (2,):
            self.hand_mask = np.broadcast_to(self.hand_mask, (self.actions.shape[0], 2)).copy()
        if self.hand_mask.shape != (self.actions.shape[0], 2):
            raise ValueError(
                f"hand_mask: expected (2,) or ({self.actions.shape[0]}, 2), got {self.hand_mask.shape}"
            )
        if not (np.isfinite(self.state).all() and np.isfinite(self.actions).all()):
            raise ValueError("state/actions contain NaN or infinity")
        if (self.visual_codes is None) != (self.motion_codes is None):
            raise ValueError("give both visual_codes and motion_codes, or neither (reasoning only)")
        if self.visual_codes is None and self.subtask is None:
            raise ValueError(
                "a sample without codes must reason (subtask text) or it trains nothing"
            )


def subtask_at(episode: Episode, frame: int) -> tuple[str | None, str | None]:
    """``(previous_subtask, new_subtask)`` at ``frame``: what the prompt shows and what to reason.

    ``new_subtask`` is the segment's text on the first frame of a segment whose text differs
    from the one before, else ``None``.
    """
    current = None
    previous = None
    for segment in episode.subtasks:
        if segment.start <= frame < segment.end:
            current = segment
            break
    if current is None:
        # between segments: the last one that ended is still "the subtask"
        ended = [s for s in episode.subtasks if s.end <= frame]
        return (ended[-1].text if ended else None), None
    before = [s for s in episode.subtasks if s.end <= current.start]
    previous = before[-1].text if before else None
    if frame == current.start and current.text != previous:
        return previous, current.text
    return current.text, None


def samples_from_episode(
    episode: Episode,
    *,
    chunk_len: int,
    visual_codes: Any = None,
    motion_codes: Any = None,
    frames: Sequence[int] | None = None,
    camera: str = "ego",
    dataset_key: str | None = None,
) -> Iterator[TrainingSample]:
    """Cut training samples out of an episode.

    Args:
        episode: A contract episode with ``images[camera]``.
        chunk_len: ``C``.
        visual_codes: ``(T, Q_v)`` codes of every frame (annotation), or ``None`` for none.
        motion_codes: ``(T, Q_m)``, given with ``visual_codes``.
        frames: Which frames (default: all).
        camera: Image key.
        dataset_key: Normalisation key recorded in the samples.

    Yields:
        One :class:`TrainingSample` per frame; frames without codes yield only when they start a
        subtask (reasoning-only samples).
    """
    if camera not in episode.images:
        raise ValueError(f"episode has no {camera!r} images (has {sorted(episode.images)})")
    images = episode.images[camera]
    length = int(episode.state.shape[0])
    if (visual_codes is None) != (motion_codes is None):
        raise ValueError("give both visual_codes and motion_codes, or neither")
    if visual_codes is not None:
        visual_codes = np.asarray(visual_codes)
        motion_codes = np.asarray(motion_codes)
        if visual_codes.shape[0] != length or motion_codes.shape[0] != length:
            raise ValueError(
                f"codes cover {visual_codes.shape[0]}/{motion_codes.shape[0]} frames, the episode "
                f"has {length}"
            )
    for t in frames if frames is not None else range(length):
        if not 0 <= t < length:
            raise ValueError(f"frame {t} is outside the episode's {length} frames")
        sample = sample_at(episode, t, image=images[t], chunk_len=chunk_len, visual_codes=visual_codes, motion_codes=motion_codes, dataset_key=dataset_key)  # fmt: skip
        if sample is not None:
            yield sample


def sample_at(
    episode: Episode,
    t: int,
    *,
    image: np.ndarray,
    chunk_len: int,
    visual_codes: Any = None,
    motion_codes: Any = None,
    dataset_key: str | None = None,
) -> TrainingSample | None:
    """The sample of frame ``t`` given its image (the episode's own images are not read, so a
    training loop can decode just that frame).

    Args:
        episode: The episode (its ``images`` may be empty).
        t: Frame.
        image: ``(H, W, 3)`` uint8 frame ``t``.
        chunk_len: ``C``.
        visual_codes: ``(T, Q_v)`` codes of every frame, or ``None``.
        motion_codes: ``(T, Q_m)``, given with ``visual_codes``.
        dataset_key: Normalisation key.

    Returns:
        The sample, or ``None`` for a frame without codes that starts no subtask.
    """
    length = int(episode.state.shape[0])
    if not 0 <= t < length:
        raise ValueError(f"frame {t} is outside the episode's {length} frames")
    end = min(t + chunk_len, length)
    actions = np.zeros((chunk_len, ACTION_DIM), np.float32)
    actions[: end - t] = episode.action[t:end]
    actions[end - t :] = episode.action[end - 1]
    valid = np.zeros(chunk_len, bool)
    valid[: end - t] = True
    mask = np.zeros((chunk_len, 2), bool)
    mask[: end - t] = episode.hand_mask[t:end]
    mask[end - t :] = episode.hand_mask[end - 1]
    previous, new = subtask_at(episode, t)
    has_codes = visual_codes is not None
    if not has_codes and new is None:
        return None
    return TrainingSample(
        image=image,
        instruction=episode.instruction,
        state=episode.state[t],
        actions=actions,
        action_valid=valid,
        hand_mask=mask,
        visual_codes=visual_codes[t] if has_codes else None,
        motion_codes=motion_codes[t] if has_codes else None,
        subtask=new,
        previous_subtask=previous,
        dataset_key=dataset_key,
    )


@dataclass
class PolicyBatch:
    """A collated batch (what :meth:`MetisPolicy.forward` takes).

    Args:
        pixel_values: The backbone's preprocessed images.
        input_ids: ``(B, L)`` right-padded ids (``<bos> prompt target``).
        attention_mask: ``(B, L)``.
        labels: ``(B, L)`` target ids, ``-100`` where not trained (prompt, padding).
        dynamics_positions: ``(B, Q_v + Q_m)`` id positions of the code tokens (0 where absent).
        has_codes: ``(B,)`` bool.
        proprio: ``(B, D)`` normalised state.
        actions: ``(B, C, D)`` normalised chunk.
        action_mask: ``(B, C, D)`` bool: trained values (present hand, not padding, sample acts).
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    dynamics_positions: torch.Tensor
    has_codes: torch.Tensor
    proprio: torch.Tensor
    actions: torch.Tensor
    action_mask: torch.Tensor

    def to(self, device: torch.device | str) -> PolicyBatch:
        """The batch on ``device``."""
        return PolicyBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def motion_windows_for_episode(
    episode: Episode,
    *,
    duration_s: float = 1.0,
    window_len: int = 16,
    frames: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The upcoming ``duration_s`` of actions from every frame, resampled to ``window_len`` frames.

    This is the motion window of DESIGN §5 (and of the authors' release): the next second of the
    action chunk resampled to 16 frames (linear positions, slerp rotations). Windows that run past
    the episode's end hold the last action.

    Returns:
        ``windows (F, window_len, D)`` float32 and ``hand_mask (F, window_len, 2)`` bool.
    """
    from metis_core.resample import resample_hand_vectors

    length = int(episode.action.shape[0])
    span = max(round(duration_s * episode.fps), 1)
    times = np.arange(span + 1, dtype=np.float64) / episode.fps
    query = np.linspace(0.0, times[-1], window_len)
    windows, masks = [], []
    for t in frames if frames is not None else range(length):
        index = np.minimum(np.arange(t, t + span + 1), length - 1)
        resampled = resample_hand_vectors(
            episode.action[index], times, target_times=query, hand_mask=episode.hand_mask[index]
        )
        windows.append(torch.as_tensor(resampled.vectors, dtype=torch.float32))
        masks.append(torch.as_tensor(resampled.hand_mask, dtype=torch.bool))
    return torch.stack(windows), torch.stack(masks)


@dataclass
class DynamicsCodes:
    """The 44 dynamics codes of every frame of an episode (what the annotation pass stores).

    Args:
        visual: ``(T, Q_v)`` int64 visual-dynamics codes.
        motion: ``(T, Q_m)`` int64 motion codes.
    """

    visual: np.ndarray
    motion: np.ndarray


@torch.no_grad()
def dynamics_codes_for_episode(
    episode: Episode,
    *,
    motion_tokenizer: Any,
    visual_tokenizer: Any,
    feature_extractor: Any,
    camera: str = "ego",
    duration_s: float = 1.0,
    batch_size: int = 64,
) -> DynamicsCodes:
    """Compute the dynamics codes of every frame with trained tokenizers.

    Motion codes: the motion tokenizer's codes of the upcoming ``duration_s`` window
    (:func:`motion_windows_for_episode`). Visual codes: the visual-dynamics tokenizer's codes of
    the patch features of frames ``t`` and ``t + k`` (``k`` = its ``frame_gap``, clamped at the
    episode's end) and the same motion window.

    Args:
        episode: A contract episode with ``images[camera]``.
        motion_tokenizer: Trained ``motion_rvq`` (or anything with ``encode(windows, hand_mask)``
            and ``config.window_len``).
        visual_tokenizer: Trained ``visual_dynamics_vq``.
        feature_extractor: The extractor the visual tokenizer was trained with (``extract``).
        camera: Image key.
        duration_s: Seconds of motion per window.
        batch_size: Frames per tokenizer call.
    """
    (codes,) = dynamics_codes_for_episodes(
        [episode],
        motion_tokenizer=motion_tokenizer,
        visual_tokenizer=visual_tokenizer,
        feature_extractor=feature_extractor,
        camera=camera,
        duration_s=duration_s,
        batch_size=batch_size,
    )
    return codes


@torch.no_grad()
def dynamics_codes_for_episodes(
    episodes: Iterable[Episode],
    *,
    motion_tokenizer: Any,
    visual_tokenizer: Any,
    feature_extractor: Any,
    camera: str = "ego",
    duration_s: float = 1.0,
    batch_size: int = 64,
) -> list[DynamicsCodes]:
    """:func:`dynamics_codes_for_episode` of several episodes, tokenizer calls batched across them.

    The frames of consecutive episodes fill the same tokenizer batches of ``batch_size`` frames
    (so short episodes do not each pay for a small batch). Patch features are extracted one
    episode at a time and only the episodes with frames still waiting for a batch are held in
    memory; ``episodes`` may be a lazy iterator (e.g. decoding videos in worker processes).

    Returns:
        One :class:`DynamicsCodes` per episode, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    window_len = int(motion_tokenizer.config.window_len)
    # The visual-dynamics tokenizer reads windows of its own motion tokenizer's length (16);
    # a motion tokenizer with other windows (the binned-action baseline) gets its own.
    visual_motion = getattr(visual_tokenizer.config, "motion", None)
    visual_len = int(getattr(visual_motion, "window_len", window_len))
    gap = int(visual_tokenizer.config.frame_gap)
    # pending: (episode number, features, windows, presence, later, first row not yet coded,
    #           the visual tokenizer's (windows, presence))
    pending: list[list[Any]] = []
    visual: list[list[torch.Tensor]] = []
    motion: list[list[torch.Tensor]] = []
    waiting = 0

    def run(rows_wanted: int) -> None:
        nonlocal waiting
        # (episode number, its pending entry, rows of it in this batch)
        parts: list[tuple[int, list[Any], torch.Tensor]] = []
        taken = 0
        while taken < rows_wanted:
            entry = pending[0]
            start, total = entry[5], int(entry[2].shape[0])
            stop = min(total, start + rows_wanted - taken)
            parts.append((entry[0], entry, torch.arange(start, stop)))
            taken += stop - start
            entry[5] = stop
            if stop == total:
                pending.pop(0)
        w = torch.cat([entry[2][rows] for _, entry, rows in parts])
        m = torch.cat([entry[3][rows] for _, entry, rows in parts])
        w_v = torch.cat([entry[6][0][rows] for _, entry, rows in parts])
        m_v = torch.cat([entry[6][1][rows] for _, entry, rows in parts])
        f_t = torch.cat([entry[1][rows] for _, entry, rows in parts])
        f_tk = torch.cat(
            [entry[1][torch.as_tensor(entry[4][rows.numpy()])] for _, entry, rows in parts]
        )
        motion_codes = motion_tokenizer.encode(w, m)
        visual_codes = visual_tokenizer.encode(w_v, m_v, features_t=f_t, features_tk=f_tk)
        offset = 0
        for number, _, rows in parts:
            n = int(rows.shape[0])
            motion[number].append(motion_codes[offset : offset + n])
            visual[number].append(visual_codes[offset : offset + n])
            offset += n
        waiting -= taken

    for number, episode in enumerate(episodes):
        length = int(episode.action.shape[0])
        windows, masks = motion_windows_for_episode(
            episode, duration_s=duration_s, window_len=window_len
        )
        if visual_len == window_len:
            visual_windows = (windows, masks.all(1))
        else:
            w_vis, m_vis = motion_windows_for_episode(episode, duration_s=duration_s, window_len=visual_len)  # fmt: skip
            visual_windows = (w_vis, m_vis.all(1))
        features = feature_extractor.extract(episode.images[camera]).float()
        later = np.minimum(np.arange(length) + gap, length - 1)
        visual.append([])
        motion.append([])
        if length:
            pending.append([number, features, windows, masks.all(1), later, 0, visual_windows])
            waiting += length
        while waiting >= batch_size:
            run(batch_size)
    if waiting:
        run(waiting)
    return [
        DynamicsCodes(visual=_codes(v, visual_tokenizer), motion=_codes(m, motion_tokenizer))
        for v, m in zip(visual, motion, strict=True)
    ]


def _codes(parts: list[torch.Tensor], tokenizer: Any) -> np.ndarray:
    if parts:
        return torch.cat(parts).numpy().astype(np.int64)
    width = int(getattr(tokenizer, "tokens_per_window", 0))
    return np.zeros((0, width), dtype=np.int64)
