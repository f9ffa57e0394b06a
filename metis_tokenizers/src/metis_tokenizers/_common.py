"""Shared pieces of the tokenizers: input checks and the start-relative motion representation.

Every tokenizer in this package codes *motion*, not where the hands happen to be. A window of
contract actions ``(B, T, 48)`` is turned into start-relative features of the same layout:

* wrist position: ``R0ᵀ (p_t − p_0)`` — the displacement expressed in the starting wrist frame;
* wrist rotation: 6D of ``R0ᵀ R_t`` — the rotation relative to the starting wrist pose;
* fingertips (already in the wrist frame): ``f_t − f_0``.

Frame 0 of the features is therefore always (0, identity, 0); decoding takes the start state
``(B, 48)`` (at inference, the robot's current proprio state) and maps the features back.

Dimension letters: ``B`` batch, ``T`` frames per window, ``D`` = 48 contract values,
``H`` hands (2), ``L`` latent steps, ``Q`` quantiser levels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metis_core.contract import ACTION_DIM, LEFT, RIGHT, hand_value_mask
from metis_core.rotations import matrix_to_rot6d, rot6d_to_matrix

__all__ = [
    "HAND_LAYOUT_LIST",
    "check_actions",
    "check_hand_mask",
    "check_integer_codes",
    "check_local_path",
    "check_rotations",
    "check_start",
    "check_windows",
    "from_relative",
    "present_from_start",
    "to_relative",
    "zero_motion_frame",
]

HAND_LAYOUT_LIST = (LEFT, RIGHT)


#: A 6D rotation whose first half, or whose second half's part orthogonal to the first, is
#: shorter than this does not define a rotation.
ROT6D_DEGENERATE = 1e-6


def check_local_path(path_or_repo: Any) -> None:
    """Fail locally for a path that does not exist, instead of asking the Hub about it.

    Only a bare ``owner/name`` string whose ``owner`` is not a local directory can be a Hugging
    Face Hub repository id; anything else that does not exist (``runs/rvqq`` when ``runs/``
    exists, ``./x``, ``/abs/x``, ``a/b/c``, a ``Path`` object) raises here.

    Raises:
        FileNotFoundError: "no such directory", naming the path.
    """
    text = os.fspath(path_or_repo)
    path = Path(text).expanduser()
    if path.exists():
        return
    hub_like = (
        isinstance(path_or_repo, str)
        and re.fullmatch(r"[\w.-]+/[\w.-]+", text) is not None
        and not text.startswith(".")
        and not Path(text.split("/")[0]).is_dir()
    )
    if not hub_like:
        raise FileNotFoundError(
            f"{text}: no such directory (a local path: nothing was looked up on the network; "
            "expected a directory written by save_pretrained)"
        )


def _as_float_tensor(x: Any, what: str) -> torch.Tensor:
    """A float tensor of any precision (or numpy array) as float32 on the CPU."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind != "f":
            raise ValueError(
                f"{what}: expected floating-point values (metres), got numpy dtype {x.dtype}"
            )
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{what}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected floating-point values (metres), got dtype {x.dtype}")
    # float64 / float16 / bfloat16 in: float32 out (what the networks and the contract use).
    return x.detach().to(device="cpu", dtype=torch.float32)


def _degenerate_rot6d(rot6d: torch.Tensor) -> torch.Tensor:
    """``(..., 6)`` → ``(...)`` bool: a zero first half, or a second half parallel to it."""
    r = rot6d.double()
    a, b = r[..., :3], r[..., 3:]
    norm_a = a.norm(dim=-1)
    unit_a = a / norm_a.clamp_min(1e-300)[..., None]
    orthogonal = b - (b * unit_a).sum(-1, keepdim=True) * unit_a
    return (norm_a < ROT6D_DEGENERATE) | (orthogonal.norm(dim=-1) < ROT6D_DEGENERATE)


# Per hand (left, right): the indices of its wrist position, wrist rotation and fingertips, so
# that both hands are handled in one batched operation.
_WRIST_POSITION = torch.tensor([list(range(48))[h.wrist_position] for h in HAND_LAYOUT_LIST])
_WRIST_ROT6D = torch.tensor([list(range(48))[h.wrist_rot6d] for h in HAND_LAYOUT_LIST])
_FINGERTIPS = torch.tensor([list(range(48))[h.fingertips] for h in HAND_LAYOUT_LIST])
_HAND_VALUES = torch.tensor([list(h.indices) for h in HAND_LAYOUT_LIST])


def check_rotations(x: torch.Tensor, present: torch.Tensor, *, what: str) -> None:
    """Raise if a present hand's wrist 6D rotation is zero or degenerate.

    Args:
        x: ``(B, T, 48)`` or ``(B, 48)`` contract values.
        present: ``(B, 2)`` bool.
    """
    bad = _degenerate_rot6d(x[..., _WRIST_ROT6D])  # (B, [T,] 2)
    if bad.dim() == 3:
        bad = bad.any(1)
    bad = bad & present
    if bool(bad.any()):
        for index, layout in enumerate(HAND_LAYOUT_LIST):
            if not bool(bad[:, index].any()):
                continue
            row = int(torch.nonzero(bad[:, index])[0])
            raise ValueError(
                f"{what}: the {layout.side} wrist rotation (values {layout.wrist_rot6d.start}-"
                f"{layout.wrist_rot6d.stop - 1}) of window {row} is zero or degenerate (two "
                "parallel 3-vectors), but the hand is marked present; give a valid 6D rotation, "
                "or mark the hand missing in hand_mask"
            )


def check_actions(actions: Any, window_len: int, *, what: str = "actions") -> torch.Tensor:
    """Validate a batch of windows and return it as float32.

    Args:
        actions: ``(B, T, 48)`` with ``T == window_len``.
        window_len: Frames per window the tokenizer was built for.

    Raises:
        ValueError: For a wrong type, rank, window length, width or non-finite values.
    """
    x = _as_float_tensor(actions, what)
    if x.dim() != 3:
        raise ValueError(
            f"{what}: expected shape (B, {window_len}, {ACTION_DIM}) (batch, frames, contract "
            f"values), got {tuple(x.shape)}"
        )
    if x.shape[1] != window_len or x.shape[2] != ACTION_DIM:
        raise ValueError(
            f"{what}: expected shape (B, {window_len}, {ACTION_DIM}), got {tuple(x.shape)} "
            f"(this tokenizer codes windows of {window_len} frames of the 48-D hand contract)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{what}: the batch is empty")
    if not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x))[0].tolist()
        raise ValueError(f"{what}: contains NaN or infinity (first at index {tuple(bad)})")
    return x


def check_hand_mask(hand_mask: Any, batch: int, window_len: int) -> torch.Tensor:
    """Validate a hand mask and reduce it to one presence flag per window and hand.

    Args:
        hand_mask: ``None`` (both hands present), ``(B, 2)`` or ``(B, T, 2)`` bools (or 0/1
            values). With a per-frame mask a hand counts as present only if it is present in
            every frame.

    Returns:
        ``(B, 2)`` bool.

    Raises:
        ValueError: For another type or shape, or values other than booleans / 0 / 1 (NaN and
            0.5 included).
    """
    if hand_mask is None:
        return torch.ones(batch, 2, dtype=torch.bool)
    if isinstance(hand_mask, np.ndarray):
        if hand_mask.dtype.kind not in "biuf":
            raise ValueError(f"hand_mask: expected booleans, got numpy dtype {hand_mask.dtype}")
        hand_mask = torch.from_numpy(np.ascontiguousarray(hand_mask))
    if not isinstance(hand_mask, torch.Tensor):
        raise ValueError(
            f"hand_mask: expected a bool tensor of shape ({batch}, 2), got {type(hand_mask).__name__}"
        )
    shape = tuple(hand_mask.shape)
    if shape not in ((batch, 2), (batch, window_len, 2)):
        raise ValueError(
            f"hand_mask: expected shape ({batch}, 2) or ({batch}, {window_len}, 2) (left, right), "
            f"got {shape}"
        )
    if hand_mask.dtype != torch.bool:
        if hand_mask.is_complex():
            raise ValueError(f"hand_mask: expected booleans, got dtype {hand_mask.dtype}")
        # Judge the values before any reduction: NaN or 0.5 is not a presence flag.
        values = hand_mask.double() if hand_mask.is_floating_point() else hand_mask
        if not bool(((values == 0) | (values == 1)).all()):
            raise ValueError(
                "hand_mask: expected booleans (or 0/1 values), got other values (e.g. NaN or 0.5)"
            )
        hand_mask = hand_mask != 0
    if hand_mask.dim() == 3:
        hand_mask = hand_mask.all(dim=1)
    return hand_mask.cpu()


def check_start(
    start: Any, batch: int, *, name: str, hand_mask: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate the start state ``(B, 48)`` that relative decoding needs.

    Args:
        start: ``(B, 48)`` float (any precision; returned as float32).
        batch: Expected batch size.
        name: Tokenizer name for the messages.
        hand_mask: ``(B, 2)`` presence. ``None``: a hand whose 24 start values are all zero is
            missing (:func:`present_from_start`), every other hand present.

    Returns:
        ``(start (B, 48) float32, present (B, 2) bool)``.

    Raises:
        ValueError: For a missing, mis-shaped or non-finite start, or a zero / degenerate wrist
            rotation of a present hand.
    """
    if start is None:
        raise ValueError(
            f"{name}.decode needs `start`: the (B, {ACTION_DIM}) state at the window's first "
            "frame (at inference, the current proprio state), because tokens code motion "
            "relative to it"
        )
    x = _as_float_tensor(start, "start")
    if tuple(x.shape) != (batch, ACTION_DIM):
        raise ValueError(
            f"start: expected shape ({batch}, {ACTION_DIM}) (one contract state per window), "
            f"got {tuple(x.shape)}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("start: contains NaN or infinity")
    present = present_from_start(x) if hand_mask is None else check_hand_mask(hand_mask, batch, 1)
    check_rotations(x, present, what="start")
    return x, present


def present_from_start(start: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` presence guessed from a start state: a missing hand's 24 values are zeros."""
    return start[:, _HAND_VALUES].abs().sum(-1) > 0


def to_relative(actions: torch.Tensor, hand_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Contract windows to start-relative features.

    Args:
        actions: ``(B, T, 48)``.
        hand_mask: ``(B, 2)`` bool; a missing hand's features are zeros.

    Returns:
        ``(B, T, 48)`` features in the contract layout (see the module docstring).
    """
    out = torch.zeros_like(actions)
    position = actions[..., _WRIST_POSITION]  # (B, T, 2, 3), both hands at once
    rotation = rot6d_to_matrix(actions[..., _WRIST_ROT6D])  # (B, T, 2, 3, 3)
    start_inverse = rotation[:, :1].transpose(-1, -2)
    displacement = position - position[:, :1]
    out[..., _WRIST_POSITION] = (start_inverse @ displacement[..., None])[..., 0]
    out[..., _WRIST_ROT6D] = matrix_to_rot6d(start_inverse @ rotation)
    tips = actions[..., _FINGERTIPS]
    out[..., _FINGERTIPS] = tips - tips[:, :1]
    if hand_mask is not None:
        out = out * hand_value_mask(hand_mask)[:, None, :].to(out.dtype)
    return out


def from_relative(
    features: torch.Tensor, start: torch.Tensor, present: torch.Tensor | None = None
) -> torch.Tensor:
    """Start-relative features back to contract windows.

    Args:
        features: ``(B, T, 48)`` as made by :func:`to_relative` (or predicted).
        start: ``(B, 48)`` the state at the first frame.
        present: ``(B, 2)`` bool; missing hands come back as zeros. ``None``: hands whose start
            values are all zero are missing.

    Returns:
        ``(B, T, 48)``.
    """
    out = torch.zeros_like(features)
    # one Gram–Schmidt call for the start and every frame of both hands
    rotations = rot6d_to_matrix(
        torch.cat([start[:, None, _WRIST_ROT6D], features[..., _WRIST_ROT6D]], 1)
    )  # (B, 1 + T, 2, 3, 3)
    start_rotation, relative_rotation = rotations[:, :1], rotations[:, 1:]
    out[..., _WRIST_POSITION] = (
        start[:, None, _WRIST_POSITION]
        + (start_rotation @ features[..., _WRIST_POSITION, None])[..., 0]
    )
    out[..., _WRIST_ROT6D] = matrix_to_rot6d(start_rotation @ relative_rotation)
    out[..., _FINGERTIPS] = start[:, None, _FINGERTIPS] + features[..., _FINGERTIPS]
    if present is None:
        present = present_from_start(start)
    return out * hand_value_mask(present)[:, None, :].to(out.dtype)


def check_windows(
    actions: Any, hand_mask: Any, window_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate windows and their mask: ``(B, T, 48)`` float32 and ``(B, 2)`` bool.

    Beyond :func:`check_actions` and :func:`check_hand_mask`, a hand marked present must have a
    valid wrist rotation in every frame (a zero 6D is the contract's "missing hand").
    """
    x = check_actions(actions, window_len)
    mask = check_hand_mask(hand_mask, x.shape[0], window_len)
    check_rotations(x, mask, what="actions")
    return x, mask


def fit_windows(actions: Any, hand_mask: Any, window_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate training windows for ``fit`` methods: ``(N, T, 48)`` float32 and ``(N, 2)`` mask."""
    return check_windows(actions, hand_mask, window_len)


def check_integer_codes(codes: Any, width: int | None, vocab_size: int) -> torch.Tensor:
    """Validate ``(B, width)`` integer token ids in ``[0, vocab_size)`` and return them as int64.

    Accepts tensors, numpy arrays and nested lists of Python ints of any integer dtype (uint64
    included); rejects floats, bools, strings, ``None``, ragged lists and empty batches with a
    ``ValueError`` naming what was expected.
    """
    expected = f"a (B, {width if width is not None else 'N'}) tensor of integer token ids"
    if codes is None or isinstance(codes, (str, bytes)):
        raise ValueError(f"codes: expected {expected}, got {type(codes).__name__}")
    if isinstance(codes, np.ndarray):
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes: expected integer token ids, got numpy dtype {codes.dtype}")
        if codes.dtype == np.uint64 and codes.size and int(codes.max()) >= vocab_size:
            raise ValueError(f"codes: ids must be in [0, {vocab_size}), got {int(codes.max())}")
        codes = torch.from_numpy(np.ascontiguousarray(codes.astype(np.int64)))
    if not isinstance(codes, torch.Tensor):
        if isinstance(codes, (list, tuple)) and any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer))
            for row in codes
            if isinstance(row, (list, tuple))
            for v in row
        ):
            raise ValueError("codes: expected integer token ids, got a non-integer value")
        try:
            codes = torch.as_tensor(codes)
        except (TypeError, ValueError, RuntimeError, OverflowError) as err:
            raise ValueError(
                f"codes: expected {expected}, got {type(codes).__name__} that is not a "
                f"rectangular array of integers ({err})"
            ) from err
    if codes.is_floating_point() or codes.dtype == torch.bool or codes.is_complex():
        raise ValueError(f"codes: expected integer token ids, got dtype {codes.dtype}")
    if codes.dtype in (torch.uint16, torch.uint32, torch.uint64):
        # torch lacks min/max for these: judge them as Python ints.
        values = codes.flatten().tolist()
        if values and max(values) >= vocab_size:
            raise ValueError(f"codes: ids must be in [0, {vocab_size}), got {max(values)}")
        codes = torch.tensor(values, dtype=torch.int64).view(codes.shape)
    if codes.dim() != 2 or (width is not None and codes.shape[1] != width):
        raise ValueError(f"codes: expected shape (B, {width}), got {tuple(codes.shape)}")
    if codes.shape[0] == 0:
        raise ValueError("codes: the batch is empty")
    codes = codes.cpu().long()
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= vocab_size):
        raise ValueError(
            f"codes: ids must be in [0, {vocab_size}), got values in "
            f"[{int(codes.min())}, {int(codes.max())}]"
        )
    return codes


def zero_motion_frame(batch: int) -> torch.Tensor:
    """``(B, 1, 48)`` relative features of "no motion": zero displacements, identity rotations."""
    frame = torch.zeros(batch, 1, ACTION_DIM)
    for layout in HAND_LAYOUT_LIST:
        frame[..., layout.wrist_rot6d] = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    return frame
