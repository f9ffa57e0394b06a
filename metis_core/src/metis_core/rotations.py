"""Rotation maths used by the hand contract: 6D rotations, quaternions, slerp, geodesic angles.

All functions are batched over leading dimensions and differentiable in PyTorch. They accept
``numpy.ndarray`` as well and then return ``numpy.ndarray`` of the same float dtype.

Conventions:

* 6D rotation (Zhou et al., "On the Continuity of Rotation Representations in Neural Networks",
  CVPR 2019): the first two **columns** of the rotation matrix, ``[R[:, 0], R[:, 1]]``.
  Some libraries (e.g. pytorch3d) take rows instead; we take columns.
* Quaternions are ``(w, x, y, z)`` with a non-negative ``w`` where a choice is made.
* Rotation matrices act on column vectors: ``p_parent = R @ p_child``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from metis_core.errors import ContractError

__all__ = [
    "axis_angle_to_matrix",
    "geodesic_angle",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rot6d",
    "quaternion_slerp",
    "quaternion_to_matrix",
    "random_rotation_matrices",
    "rot6d_degenerate",
    "rot6d_to_matrix",
]

#: Default length below which a 6D half (or the second half's part orthogonal to the first) is
#: degenerate; shared by :func:`rot6d_to_matrix` and ``metis_core.contract.validate_hand_vector``.
ROT6D_TOLERANCE = 1e-6

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)
_F = TypeVar("_F", bound=Callable[..., Any])


def numpy_to_tensor(array: np.ndarray, what: str, *, float_only: bool = False) -> torch.Tensor:
    """A numpy array as a tensor, whatever its memory layout or byte order.

    ``torch.from_numpy`` rejects arrays with negative strides (``x[::-1]``) and non-native byte
    order (``>f4``, as read from some files); those are copied into native, contiguous form.

    Raises:
        ContractError: (a ``ValueError``) for dtypes torch cannot hold (object, strings, ...).
    """
    if array.dtype.kind not in "biuf" or (float_only and array.dtype.kind != "f"):
        raise ContractError(f"{what}: expected a numeric numpy array, got dtype {array.dtype}")
    native = array.dtype.newbyteorder("=")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=native))


def _numpy_compatible(fn: _F) -> _F:
    """Let a torch function take and return numpy arrays too (float dtype preserved)."""

    def convert(value: Any) -> tuple[Any, Any]:
        if not isinstance(value, np.ndarray):
            return value, None
        dtype = value.dtype if value.dtype.kind == "f" else np.dtype(np.float32)
        return numpy_to_tensor(value.astype(dtype, copy=False), fn.__name__), dtype.newbyteorder(
            "="
        )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        numpy_dtype = None
        converted = []
        for arg in args:
            value, dtype = convert(arg)
            numpy_dtype = numpy_dtype or dtype
            converted.append(value)
        converted_kwargs = {}
        for key, arg in kwargs.items():  # keyword arrays too (``rot6d_to_matrix(rot6d=array)``)
            value, dtype = convert(arg)
            numpy_dtype = numpy_dtype or dtype
            converted_kwargs[key] = value
        result = fn(*converted, **converted_kwargs)
        if numpy_dtype is None:
            return result
        return result.detach().cpu().numpy().astype(numpy_dtype, copy=False)

    return wrapper  # type: ignore[return-value]


def _check_last_dims(x: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{what}: expected a torch.Tensor or numpy.ndarray, got "
            f"{type(x).__module__}.{type(x).__qualname__}"
        )
    if tuple(x.shape[-len(expected) :]) != expected or x.dim() < len(expected):
        shape = "(..., " + ", ".join(map(str, expected)) + ")"
        raise ValueError(f"{what}: expected shape {shape}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}: expected a floating-point tensor, got dtype {x.dtype}")


@_numpy_compatible
def matrix_to_rot6d(matrix: ArrayT) -> ArrayT:
    """Rotation matrices to the 6D representation (first two columns).

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 6)``: ``[R[:, 0], R[:, 1]]`` concatenated.
    """
    _check_last_dims(matrix, (3, 3), "matrix_to_rot6d")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def _rot6d_parts(rot6d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|a1|, b1, a2 − (a2·b1) b1)`` in float64 (Gram–Schmidt's first step)."""
    a1, a2 = rot6d[..., 0:3].double(), rot6d[..., 3:6].double()
    n1 = a1.norm(dim=-1, keepdim=True)
    b1 = a1 / n1.clamp_min(1e-300)
    a2_orth = a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1
    return n1[..., 0], b1, a2_orth


@_numpy_compatible
def rot6d_degenerate(rot6d: ArrayT, tolerance: float = ROT6D_TOLERANCE) -> ArrayT:
    """Which 6D rotations do not define a rotation: a zero half, or two parallel halves.

    The test :func:`rot6d_to_matrix` and ``validate_hand_vector`` share: the first half's norm,
    or the norm of the second half's part orthogonal to the first, is below ``tolerance``
    (computed in float64, so float32 inputs are judged on their exact values).

    Args:
        rot6d: ``(..., 6)``.
        tolerance: Length threshold.

    Returns:
        ``(...)`` bool.
    """
    _check_last_dims(rot6d, (6,), "rot6d_degenerate")
    n1, _, a2_orth = _rot6d_parts(rot6d)
    finite = torch.isfinite(rot6d).all(-1)
    return ~finite | (n1 < tolerance) | (a2_orth.norm(dim=-1) < tolerance)


@_numpy_compatible
def rot6d_to_matrix(rot6d: ArrayT, eps: float = ROT6D_TOLERANCE, *, strict: bool = False) -> ArrayT:
    """6D rotations back to rotation matrices by Gram–Schmidt; always a proper rotation.

    The first column is the normalised first 3-vector; the second is the second 3-vector made
    orthogonal to it and normalised; the third is their cross product. The arithmetic runs in
    float64 whatever the input dtype (in float32, nearly parallel halves would otherwise give
    matrices that are far from orthonormal), and the result is cast back.

    Degenerate inputs (see :func:`rot6d_degenerate`: a zero half, parallel halves, NaN) raise if
    ``strict``; otherwise they still map to a proper rotation (det = +1): the identity if the
    first half is zero, else the first column completed by a fixed perpendicular axis. The
    contract writes zeros for missing hands, which therefore decode to the identity.

    Args:
        rot6d: ``(..., 6)``.
        eps: Degeneracy threshold (metres-free length), as in :func:`rot6d_degenerate`.
        strict: Raise ``ContractError`` on a degenerate input instead of completing it.

    Returns:
        ``(..., 3, 3)`` rotation matrices in the input's dtype.

    Raises:
        ContractError: If ``strict`` and an input is degenerate, naming the first one.
    """
    _check_last_dims(rot6d, (6,), "rot6d_to_matrix")
    n1, b1, a2_orth = _rot6d_parts(rot6d)
    n2 = a2_orth.norm(dim=-1)
    bad_first = ~(n1 >= eps)  # NaN counts as degenerate
    bad_second = ~(n2 >= eps)
    degenerate = bad_first | bad_second
    if bool(degenerate.any()):
        if strict:
            where = tuple(degenerate.nonzero()[0].tolist())
            value = [round(float(v), 6) for v in rot6d[where]]
            raise ContractError(
                f"rot6d_to_matrix: the 6D rotation at index {where} ({value}) does not define "
                f"a rotation: its two halves must be non-zero and not parallel (tolerance {eps:g})"
            )
        eye = torch.eye(3, dtype=torch.float64, device=rot6d.device)
        b1 = torch.where(bad_first[..., None], eye[:, 0], b1)
        # A fixed axis perpendicular to b1: the unit axis least aligned with it, orthogonalised.
        pick = eye[b1.abs().argmin(dim=-1)]
        fallback = pick - (pick * b1).sum(-1, keepdim=True) * b1
        a2_orth = torch.where(degenerate[..., None], fallback, a2_orth)
        a2_orth = torch.where(bad_first[..., None], eye[:, 1], a2_orth)
        n2 = a2_orth.norm(dim=-1)
    b2 = a2_orth / n2[..., None].clamp_min(1e-300)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1).to(rot6d.dtype)


@_numpy_compatible
def quaternion_to_matrix(quaternion: ArrayT) -> ArrayT:
    """Unit quaternions ``(w, x, y, z)`` to rotation matrices.

    Args:
        quaternion: ``(..., 4)``; normalised internally.

    Returns:
        ``(..., 3, 3)``.
    """
    _check_last_dims(quaternion, (4,), "quaternion_to_matrix")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape((*q.shape[:-1], 3, 3))


@_numpy_compatible
def matrix_to_quaternion(matrix: ArrayT) -> ArrayT:
    """Rotation matrices to unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Uses the numerically stable branch selection of Shepperd (1978): the quaternion component
    with the largest magnitude is computed from the diagonal, the others from off-diagonals.

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 4)``.
    """
    _check_last_dims(matrix, (3, 3), "matrix_to_quaternion")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions, one per component taken as the pivot.
    candidates_sq = torch.stack(
        [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22],
        dim=-1,
    )
    pivot = candidates_sq.argmax(dim=-1, keepdim=True)
    root = candidates_sq.clamp_min(1e-12).sqrt()  # 2 * |component|
    m21_m12, m02_m20, m10_m01 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]  # fmt: skip
    m21p12, m02p20, m10p01 = m[..., 2, 1] + m[..., 1, 2], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1]  # fmt: skip
    r0, r1, r2, r3 = root.unbind(-1)
    solutions = torch.stack(
        [
            torch.stack([r0 / 2, m21_m12 / (2 * r0), m02_m20 / (2 * r0), m10_m01 / (2 * r0)], -1),
            torch.stack([m21_m12 / (2 * r1), r1 / 2, m10p01 / (2 * r1), m02p20 / (2 * r1)], -1),
            torch.stack([m02_m20 / (2 * r2), m10p01 / (2 * r2), r2 / 2, m21p12 / (2 * r2)], -1),
            torch.stack([m10_m01 / (2 * r3), m02p20 / (2 * r3), m21p12 / (2 * r3), r3 / 2], -1),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4 components)
    index = pivot.unsqueeze(-1).expand(*pivot.shape[:-1], 1, 4)
    q = solutions.gather(-2, index).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., :1] < 0, -q, q)


@_numpy_compatible
def quaternion_slerp(q0: ArrayT, q1: ArrayT, t: ArrayT | float) -> ArrayT:
    """Spherical linear interpolation between unit quaternions along the shorter arc.

    Args:
        q0: ``(..., 4)`` start quaternions ``(w, x, y, z)``.
        q1: ``(..., 4)`` end quaternions.
        t: Interpolation fraction in [0, 1], a float or broadcastable to ``(...)``.

    Returns:
        ``(..., 4)`` unit quaternions.
    """
    _check_last_dims(q0, (4,), "quaternion_slerp q0")
    _check_last_dims(q1, (4,), "quaternion_slerp q1")
    t = torch.as_tensor(t, dtype=q0.dtype, device=q0.device)
    if t.dim() > 0:
        t = t.unsqueeze(-1)
    q0 = q0 / q0.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q1 = q1 / q1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    dot = (q0 * q1).sum(dim=-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)  # q and -q are the same rotation: take the short way
    dot = dot.abs().clamp(max=1.0)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    near = sin_theta < 1e-6  # nearly identical: fall back to normalised lerp
    safe_sin = torch.where(near, torch.ones_like(sin_theta), sin_theta)
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * theta) / safe_sin)
    w1 = torch.where(near, t, torch.sin(t * theta) / safe_sin)
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@_numpy_compatible
def axis_angle_to_matrix(axis_angle: ArrayT) -> ArrayT:
    """Rotation vectors (axis × angle in radians) to matrices by Rodrigues' formula.

    Args:
        axis_angle: ``(..., 3)``.

    Returns:
        ``(..., 3, 3)``.
    """
    _check_last_dims(axis_angle, (3,), "axis_angle_to_matrix")
    angle = axis_angle.norm(dim=-1, keepdim=True)
    half = angle / 2
    # sin(x/2)/x, with its Taylor series near zero so that gradients stay finite.
    small = angle < 1e-6
    safe_angle = torch.where(small, torch.ones_like(angle), angle)
    sinc_half = torch.where(small, 0.5 - angle * angle / 48, torch.sin(half) / safe_angle)
    quaternion = torch.cat([torch.cos(half), axis_angle * sinc_half], dim=-1)
    return quaternion_to_matrix(quaternion)


@_numpy_compatible
def matrix_to_axis_angle(matrix: ArrayT) -> ArrayT:
    """Rotation matrices to rotation vectors (axis × angle, angle in [0, π]).

    Args:
        matrix: ``(..., 3, 3)``.

    Returns:
        ``(..., 3)``.
    """
    q = matrix_to_quaternion(matrix)
    vector = q[..., 1:]
    sin_half = vector.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(sin_half, q[..., :1])
    scale = torch.where(
        sin_half < 1e-7, 2.0 / q[..., :1].clamp_min(1e-12), angle / sin_half.clamp_min(1e-12)
    )
    return vector * scale


@_numpy_compatible
def geodesic_angle(matrix_a: ArrayT, matrix_b: ArrayT) -> ArrayT:
    """Angle in radians of the relative rotation ``A^T B`` (the geodesic distance on SO(3)).

    Computed as ``atan2(|sin|, cos)`` from the relative rotation, which is accurate for small
    and large angles alike (``acos`` of the trace loses precision near 0 and π).

    Args:
        matrix_a: ``(..., 3, 3)``.
        matrix_b: ``(..., 3, 3)``.

    Returns:
        ``(...)`` angles in [0, π].
    """
    _check_last_dims(matrix_a, (3, 3), "geodesic_angle matrix_a")
    _check_last_dims(matrix_b, (3, 3), "geodesic_angle matrix_b")
    relative = matrix_a.transpose(-1, -2) @ matrix_b
    cos = (relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    skew = torch.stack(
        [
            relative[..., 2, 1] - relative[..., 1, 2],
            relative[..., 0, 2] - relative[..., 2, 0],
            relative[..., 1, 0] - relative[..., 0, 1],
        ],
        dim=-1,
    )
    sin = skew.norm(dim=-1) / 2
    return torch.atan2(sin, cos)


def random_rotation_matrices(
    count: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rotations drawn uniformly from SO(3) (normalised Gaussian quaternions).

    Args:
        count: Number of rotations.
        generator: Optional torch random generator for reproducibility.
        dtype: Floating dtype of the result.

    Returns:
        ``(count, 3, 3)``.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    q = torch.randn(count, 4, generator=generator, dtype=dtype)
    return quaternion_to_matrix(q)
