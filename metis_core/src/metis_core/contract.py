"""The hand action contract ``metis-hand-v1``: one 48-float vector for two hands.

Every state and action that crosses a package boundary is this vector (float32, metres):

====== ====================================================== ==============
slice  meaning                                                frame
====== ====================================================== ==============
0:3    left wrist position                                    ego camera
3:9    left wrist rotation, 6D (first two matrix columns)     ego camera
9:12   right wrist position                                   ego camera
12:18  right wrist rotation, 6D                               ego camera
18:33  left fingertips thumb, index, middle, ring, little     left wrist
33:48  right fingertips, same order                           right wrist
====== ====================================================== ==============

The ego camera frame follows OpenCV (origin at the optical centre, x right, y down, z forward).
A per-hand presence mask ``(..., 2)`` (left, right) travels with every vector; a missing hand's
24 values are zeros. Hands with fewer than five fingers (LEAP Hand, Allegro: no little finger)
leave the absent fingertip's 3 values at zero too; a per-fingertip mask ``(..., 2, 5)`` says which
fingertips a recording has (:func:`fingertip_value_mask` expands both masks to the 48 values, for
losses and statistics).

Shape legend used in this package: ``B`` batch, ``T`` time, ``H`` = 2 hands, ``F`` = 5 fingers,
``D`` = 48 contract values, ``...`` any leading dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metis_core.errors import ContractError, ContractMismatchError
from metis_core.rotations import (
    ROT6D_TOLERANCE,
    matrix_to_rot6d,
    numpy_to_tensor,
    rot6d_degenerate,
    rot6d_to_matrix,
)

__all__ = [
    "ACTION_DIM",
    "FINGERS",
    "HANDS",
    "HAND_CONTRACT",
    "HAND_LAYOUTS",
    "LEFT",
    "RIGHT",
    "ContractSpec",
    "HandLayout",
    "HandPoses",
    "apply_hand_mask",
    "check_contract",
    "describe_index",
    "fingertip_value_mask",
    "hand_value_mask",
    "pack_hands",
    "unpack_hands",
    "validate_hand_mask",
    "validate_hand_vector",
]

ACTION_DIM = 48
HANDS: tuple[str, str] = ("left", "right")
FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "little")


@dataclass(frozen=True)
class ContractSpec:
    """Name and version of a data contract, written into every dataset and checkpoint.

    Args:
        name: Contract family, e.g. ``"metis-hand"``.
        version: Integer version; any change to the layout or frames bumps it.
    """

    name: str
    version: int

    @property
    def id(self) -> str:
        """The compact identifier, e.g. ``"metis-hand-v1"``."""
        return f"{self.name}-v{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"name": ..., "version": ...}``."""
        return {"name": self.name, "version": self.version}

    @classmethod
    def parse(cls, value: ContractSpec | Mapping[str, Any] | str) -> ContractSpec:
        """Read a contract from a spec, a ``{"name", "version"}`` mapping or an id string.

        Raises:
            ContractMismatchError: If the value has neither form.
        """
        if isinstance(value, ContractSpec):
            return value
        if isinstance(value, str):
            name, sep, version = value.rpartition("-v")
            if sep and name and version.isdigit():
                return cls(name=name, version=int(version))
            raise ContractMismatchError(
                f"cannot read contract id {value!r}: expected '<name>-v<version>', "
                f"e.g. {HAND_CONTRACT.id!r}"
            )
        if isinstance(value, Mapping):
            missing = {"name", "version"} - set(value)
            if missing:
                raise ContractMismatchError(
                    f"contract metadata {dict(value)!r} lacks {sorted(missing)}; expected "
                    f"{HAND_CONTRACT.to_dict()!r}"
                )
            try:
                version = int(value["version"])
            except (TypeError, ValueError) as err:
                raise ContractMismatchError(
                    f"contract version must be an integer, got {value['version']!r}"
                ) from err
            return cls(name=str(value["name"]), version=version)
        raise ContractMismatchError(
            f"expected contract metadata as a mapping or id string, got {type(value).__name__}"
        )


HAND_CONTRACT = ContractSpec(name="metis-hand", version=1)


def check_contract(
    found: ContractSpec | Mapping[str, Any] | str | None,
    *,
    where: str,
    expected: ContractSpec = HAND_CONTRACT,
) -> None:
    """Check that data or a checkpoint was written under the contract this code implements.

    Args:
        found: The contract recorded in the file (``None`` if the file records none).
        where: What was being loaded, for the message (a path or a description).
        expected: The contract the caller implements.

    Raises:
        ContractMismatchError: Naming what differs (name, version, or a missing record).
    """
    if found is None:
        raise ContractMismatchError(
            f"{where} records no hand action contract; expected {expected.id}. It was not "
            "written by METIS, or by a version that predates contract records."
        )
    spec = ContractSpec.parse(found)
    if spec.name != expected.name:
        raise ContractMismatchError(
            f"{where} uses contract {spec.name!r} (version {spec.version}), but this code "
            f"implements {expected.name!r}; the two layouts are not interchangeable."
        )
    if spec.version != expected.version:
        raise ContractMismatchError(
            f"{where} uses {spec.name} version {spec.version}, but this code implements version "
            f"{expected.version}; convert the data or install a METIS release for "
            f"{spec.id}."
        )


@dataclass(frozen=True)
class HandLayout:
    """Where one hand's 24 values sit in the 48-D vector.

    Args:
        side: ``"left"`` or ``"right"``.
        index: 0 for left, 1 for right (the position in hand masks).
        wrist_position: Slice of the wrist position (3 values, ego camera frame).
        wrist_rot6d: Slice of the wrist rotation (6 values, ego camera frame).
        fingertips: Slice of the five fingertips (15 values, this hand's wrist frame).
    """

    side: str
    index: int
    wrist_position: slice
    wrist_rot6d: slice
    fingertips: slice

    @property
    def indices(self) -> tuple[int, ...]:
        """The 24 vector indices belonging to this hand."""
        return tuple(
            i
            for part in (self.wrist_position, self.wrist_rot6d, self.fingertips)
            for i in range(part.start, part.stop)
        )

    def fingertip(self, finger: str) -> slice:
        """Slice of one fingertip (x, y, z), e.g. ``RIGHT.fingertip("index")``."""
        if finger not in FINGERS:
            raise ValueError(f"unknown finger {finger!r}; expected one of {FINGERS}")
        start = self.fingertips.start + 3 * FINGERS.index(finger)
        return slice(start, start + 3)


LEFT = HandLayout("left", 0, slice(0, 3), slice(3, 9), slice(18, 33))
RIGHT = HandLayout("right", 1, slice(9, 12), slice(12, 18), slice(33, 48))
HAND_LAYOUTS: dict[str, HandLayout] = {"left": LEFT, "right": RIGHT}


def describe_index(index: int) -> str:
    """Human-readable name of one of the 48 values, e.g. ``"right fingertip index.y"``."""
    if not 0 <= index < ACTION_DIM:
        raise ValueError(f"index must be in [0, {ACTION_DIM}), got {index}")
    for layout in (LEFT, RIGHT):
        if layout.wrist_position.start <= index < layout.wrist_position.stop:
            return f"{layout.side} wrist position.{'xyz'[index - layout.wrist_position.start]}"
        if layout.wrist_rot6d.start <= index < layout.wrist_rot6d.stop:
            return f"{layout.side} wrist rot6d[{index - layout.wrist_rot6d.start}]"
        if layout.fingertips.start <= index < layout.fingertips.stop:
            offset = index - layout.fingertips.start
            return f"{layout.side} fingertip {FINGERS[offset // 3]}.{'xyz'[offset % 3]}"
    raise AssertionError("unreachable")  # pragma: no cover


_LEFT_INDEX = torch.tensor(LEFT.indices)
_RIGHT_INDEX = torch.tensor(RIGHT.indices)
#: Hand (0 left, 1 right) of each of the 48 values: a hand mask expands with one gather.
_VALUE_HAND = torch.zeros(ACTION_DIM, dtype=torch.long).index_fill_(0, _RIGHT_INDEX, 1)
#: Fingertip slot (hand * 5 + finger) of each value, or 10 (always present) for wrist values.
_VALUE_FINGERTIP = torch.full((ACTION_DIM,), 2 * len(FINGERS), dtype=torch.long)
for _layout in (LEFT, RIGHT):
    for _f in range(len(FINGERS)):
        _start = _layout.fingertips.start + 3 * _f
        _VALUE_FINGERTIP[_start : _start + 3] = _layout.index * len(FINGERS) + _f


@dataclass
class HandPoses:
    """The 48-D vector unpacked into arrays per hand.

    Args:
        wrist_position: ``(..., 2, 3)`` wrist positions in the ego camera frame (left, right).
        wrist_rotation: ``(..., 2, 3, 3)`` wrist rotation matrices (wrist frame → camera frame).
        fingertips: ``(..., 2, 5, 3)`` fingertip positions in each hand's wrist frame.
        hand_mask: ``(..., 2)`` bool presence, or ``None`` if not known.
    """

    wrist_position: torch.Tensor
    wrist_rotation: torch.Tensor
    fingertips: torch.Tensor
    hand_mask: torch.Tensor | None = None

    def fingertips_in_camera(self) -> torch.Tensor:
        """``(..., 2, 5, 3)`` fingertips moved from the wrist frames into the camera frame."""
        return (
            torch.einsum("...hij,...hfj->...hfi", self.wrist_rotation, self.fingertips)
            + self.wrist_position[..., None, :]
        )


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return numpy_to_tensor(x, what)  # any stride or byte order
    raise TypeError(
        f"{what}: expected a torch.Tensor or numpy.ndarray, got "
        f"{type(x).__module__}.{type(x).__qualname__}"
    )


def unpack_hands(vector: torch.Tensor | np.ndarray, hand_mask: Any = None) -> HandPoses:
    """Split ``(..., 48)`` contract vectors into per-hand arrays.

    Args:
        vector: ``(..., 48)``.
        hand_mask: Optional ``(..., 2)`` presence mask, carried along.

    Returns:
        A :class:`HandPoses` whose rotations are rebuilt from 6D by Gram–Schmidt.
    """
    vector = _as_tensor(vector, "unpack_hands")
    _check_dim(vector, "unpack_hands")
    position = torch.stack(
        [vector[..., LEFT.wrist_position], vector[..., RIGHT.wrist_position]], -2
    )
    rot6d = torch.stack([vector[..., LEFT.wrist_rot6d], vector[..., RIGHT.wrist_rot6d]], -2)
    tips = torch.stack([vector[..., LEFT.fingertips], vector[..., RIGHT.fingertips]], -2)
    mask = None if hand_mask is None else _as_tensor(hand_mask, "unpack_hands hand_mask")
    return HandPoses(
        wrist_position=position,
        wrist_rotation=rot6d_to_matrix(rot6d),
        fingertips=tips.reshape(*tips.shape[:-1], 5, 3),
        hand_mask=mask,
    )


def pack_hands(
    wrist_position: torch.Tensor | np.ndarray,
    wrist_rotation: torch.Tensor | np.ndarray,
    fingertips: torch.Tensor | np.ndarray,
    hand_mask: Any = None,
) -> torch.Tensor:
    """Build ``(..., 48)`` contract vectors from per-hand arrays.

    Args:
        wrist_position: ``(..., 2, 3)`` in the ego camera frame.
        wrist_rotation: ``(..., 2, 3, 3)`` wrist frame → camera frame.
        fingertips: ``(..., 2, 5, 3)`` in each hand's wrist frame.
        hand_mask: Optional ``(..., 2)`` bool; a missing hand's 24 values are written as zeros.

    Returns:
        ``(..., 48)`` with the dtype of ``wrist_position``.
    """
    position = _as_tensor(wrist_position, "pack_hands wrist_position")
    rotation = _as_tensor(wrist_rotation, "pack_hands wrist_rotation").to(position.dtype)
    tips = _as_tensor(fingertips, "pack_hands fingertips").to(position.dtype)
    lead = position.shape[:-2]
    for array, tail, what in (
        (position, (2, 3), "wrist_position"),
        (rotation, (2, 3, 3), "wrist_rotation"),
        (tips, (2, 5, 3), "fingertips"),
    ):
        if tuple(array.shape[len(lead) :]) != tail or array.shape[: len(lead)] != lead:
            expected = "(..., " + ", ".join(map(str, tail)) + ")"
            raise ContractError(
                f"pack_hands: {what} must have shape {expected} with the same leading "
                f"dimensions {tuple(lead)}, got {tuple(array.shape)}"
            )
    rot6d = matrix_to_rot6d(rotation)
    out = position.new_zeros(*lead, ACTION_DIM)
    for layout in (LEFT, RIGHT):
        h = layout.index
        out[..., layout.wrist_position] = position[..., h, :]
        out[..., layout.wrist_rot6d] = rot6d[..., h, :]
        out[..., layout.fingertips] = tips[..., h, :, :].reshape(*lead, 15)
    if hand_mask is not None:
        out = apply_hand_mask(out, hand_mask)
    return out


def hand_value_mask(hand_mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Expand a ``(..., 2)`` hand mask to ``(..., 48)``: True where a value belongs to a present hand."""
    mask = _as_tensor(hand_mask, "hand_value_mask").bool()
    if mask.shape[-1:] != (2,):
        raise ContractError(
            f"hand mask: expected shape (..., 2) (left, right), got {tuple(mask.shape)}"
        )
    return mask[..., _VALUE_HAND.to(mask.device)]


def fingertip_value_mask(
    hand_mask: torch.Tensor | np.ndarray, fingertip_mask: torch.Tensor | np.ndarray | None = None
) -> torch.Tensor:
    """Expand hand and fingertip presence to ``(..., 48)``: True where a value is recorded.

    A value is present when its hand is present and, for fingertip values, when that fingertip
    exists on the hand (a four-finger hand has no little fingertip). Losses and statistics
    multiply by (or select with) this mask so that absent fingertips neither count nor pull.

    Args:
        hand_mask: ``(..., 2)`` bool (left, right).
        fingertip_mask: ``(..., 2, 5)`` bool (hand × thumb..little), broadcastable against
            ``hand_mask``'s leading dimensions (e.g. ``(2, 5)`` for a whole recording, built from
            ``torch.stack([left.fingertip_mask, right.fingertip_mask])``); all present if omitted.

    Returns:
        ``(..., 48)`` bool.

    Raises:
        ContractError: For wrong shapes or masks that do not broadcast.
    """
    values = hand_value_mask(hand_mask)
    if fingertip_mask is None:
        return values
    tips = _as_tensor(fingertip_mask, "fingertip_value_mask fingertip_mask").bool()
    if tips.shape[-2:] != (2, len(FINGERS)):
        raise ContractError(
            f"fingertip mask: expected shape (..., 2, 5) (left/right × thumb, index, middle, "
            f"ring, little), got {tuple(tips.shape)}"
        )
    flat = tips.reshape(*tips.shape[:-2], 2 * len(FINGERS))
    flat = torch.cat([flat, flat.new_ones(*flat.shape[:-1], 1)], dim=-1)  # slot 10: wrist values
    per_value = flat[..., _VALUE_FINGERTIP.to(flat.device)]
    try:
        return values & per_value.to(values.device)
    except RuntimeError:
        raise ContractError(
            f"fingertip mask of shape {tuple(tips.shape)} does not broadcast against hand mask "
            f"of shape {(*values.shape[:-1], 2)}"
        ) from None


def apply_hand_mask(
    vector: torch.Tensor,
    hand_mask: torch.Tensor | np.ndarray,
    *,
    fingertip_mask: torch.Tensor | np.ndarray | None = None,
) -> torch.Tensor:
    """Zero the 24 values of every missing hand (and absent fingertips), out of place.

    Args:
        vector: ``(..., 48)``.
        hand_mask: ``(..., 2)`` bool, broadcastable to the leading dimensions of ``vector``.
        fingertip_mask: Optional ``(..., 2, 5)`` fingertip presence (see
            :func:`fingertip_value_mask`).

    Raises:
        ContractError: If the masks do not broadcast against ``vector``.
    """
    vector = _as_tensor(vector, "apply_hand_mask")
    _check_dim(vector, "apply_hand_mask")
    values = fingertip_value_mask(hand_mask, fingertip_mask).to(vector.device)
    try:
        torch.broadcast_shapes(values.shape, vector.shape)
    except RuntimeError:
        raise ContractError(
            f"apply_hand_mask: a hand mask of shape {(*values.shape[:-1], 2)} does not "
            f"broadcast against vectors of shape {tuple(vector.shape)}; expected "
            f"{(*vector.shape[:-1], 2)} or a shape broadcastable to it"
        ) from None
    return vector * values.to(vector.dtype)


def _check_dim(vector: torch.Tensor, what: str) -> None:
    if vector.dim() == 0 or vector.shape[-1] != ACTION_DIM:
        raise ContractError(
            f"{what}: expected {HAND_CONTRACT.id} vectors of shape (..., {ACTION_DIM}), got "
            f"shape {tuple(vector.shape)} (last dimension {vector.shape[-1] if vector.dim() else 'none'})"
        )


def validate_hand_mask(
    hand_mask: Any, leading_shape: tuple[int, ...], *, name: str = "hand_mask"
) -> torch.Tensor:
    """Check a hand mask's type and shape and return it as a bool tensor.

    Raises:
        ContractError: If it is not ``(*leading_shape, 2)`` of bools (or 0/1 values).
    """
    mask = _as_tensor(hand_mask, name)
    if tuple(mask.shape) != (*leading_shape, 2):
        raise ContractError(
            f"{name}: expected shape {(*leading_shape, 2)} (one bool per hand: left, right), "
            f"got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or mask.dtype in (
            torch.int8,
            torch.uint8,
            torch.int16,
            torch.int32,
            torch.int64,
        ):
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ContractError(f"{name}: expected booleans (or 0/1), got other values")
            mask = mask.bool()
        else:
            raise ContractError(f"{name}: expected a bool tensor, got dtype {mask.dtype}")
    return mask


def validate_hand_vector(
    vector: Any,
    *,
    hand_mask: Any = None,
    name: str = "hand vector",
    contract: ContractSpec | Mapping[str, Any] | str | None = HAND_CONTRACT,
    require_float32: bool = False,
    rot6d_tolerance: float = ROT6D_TOLERANCE,
    fingertip_mask: Any = None,
) -> None:
    """Check that ``vector`` is a well-formed ``metis-hand-v1`` vector or batch of them.

    Checks, in order: the contract name/version it claims, its type and shape ``(..., 48)``, a
    floating dtype (float32 if ``require_float32``), finiteness (reporting the first bad value by
    name), the hand mask's shape, zeros for missing hands, and that each present hand's 6D
    rotation has two non-zero, non-parallel halves.

    Args:
        vector: ``(..., 48)`` tensor or array.
        hand_mask: Optional ``(..., 2)`` bool presence mask.
        name: What the vector is (``"action"``, ``"observation.state"``), for messages.
        contract: The contract the data claims to follow; checked against ``metis-hand-v1``.
        require_float32: Demand float32 exactly (storage); otherwise any float dtype.
        rot6d_tolerance: Minimum norm of each 6D half and of the second half's orthogonal part
            (the test of :func:`metis_core.rotations.rot6d_degenerate`, which
            ``rot6d_to_matrix(strict=True)`` applies too).
        fingertip_mask: Optional ``(..., 2, 5)`` fingertip presence; absent fingertips' values
            must then be zeros.

    Raises:
        ContractError: With a message naming the problem; ``ContractMismatchError`` for a
            wrong contract name or version.
    """
    if contract is not None:
        check_contract(contract, where=name)
    if not isinstance(vector, (torch.Tensor, np.ndarray)):
        raise ContractError(
            f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(vector).__name__}"
        )
    tensor = _as_tensor(vector, name)
    _check_dim(tensor, name)
    if not tensor.is_floating_point():
        raise ContractError(f"{name}: expected float32 values (metres), got dtype {tensor.dtype}")
    if require_float32 and tensor.dtype != torch.float32:
        raise ContractError(f"{name}: expected dtype float32 for storage, got {tensor.dtype}")
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        bad = (~finite).nonzero()[0].tolist()
        value = tensor[tuple(bad)].item()
        raise ContractError(
            f"{name}: contains {int((~finite).sum())} non-finite value(s); first is {value} at "
            f"index {tuple(bad)} ({describe_index(bad[-1])})"
        )
    lead = tuple(tensor.shape[:-1])
    mask = None
    if hand_mask is not None or fingertip_mask is not None:
        mask = validate_hand_mask(
            hand_mask if hand_mask is not None else torch.ones(*lead, 2, dtype=torch.bool),
            lead,
            name=f"{name} hand_mask",
        )
        absent_values = ~fingertip_value_mask(mask, fingertip_mask)
        nonzero_absent = absent_values & (tensor != 0)
        if bool(nonzero_absent.any()):
            bad = nonzero_absent.nonzero()[0].tolist()
            raise ContractError(
                f"{name}: hand marked missing has non-zero values (first at index {tuple(bad)}, "
                f"{describe_index(bad[-1])}); a missing hand's 24 values (and an absent "
                "fingertip's 3) must be zeros"
            )
    for layout in (LEFT, RIGHT):
        degenerate = rot6d_degenerate(tensor[..., layout.wrist_rot6d], rot6d_tolerance)
        if mask is not None:
            degenerate = degenerate & mask[..., layout.index]
        if bool(degenerate.any()):
            where = tuple(degenerate.nonzero()[0].tolist())
            hint = "" if mask is not None else " (pass hand_mask if this hand is missing)"
            raise ContractError(
                f"{name}: {layout.side} wrist rotation at batch index {where} is not a valid 6D "
                f"rotation: its two columns must be non-zero and not parallel{hint}"
            )
