import math

import numpy as np
import pytest
import torch

from metis_core.rotations import (
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rot6d,
    quaternion_slerp,
    quaternion_to_matrix,
    random_rotation_matrices,
    rot6d_to_matrix,
)


@pytest.fixture
def rotations() -> torch.Tensor:
    return random_rotation_matrices(10_000, generator=torch.Generator().manual_seed(0))


def test_random_rotations_are_proper(rotations: torch.Tensor) -> None:
    eye = torch.eye(3, dtype=torch.float64).expand_as(rotations)
    torch.testing.assert_close(rotations.transpose(-1, -2) @ rotations, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(10_000, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_rot6d_round_trip_on_10000_rotations(
    rotations: torch.Tensor, dtype: torch.dtype
) -> None:
    matrices = rotations.to(dtype)
    back = rot6d_to_matrix(matrix_to_rot6d(matrices))
    assert float((back - matrices).abs().max()) < 1e-5


def test_rot6d_takes_columns_not_rows() -> None:
    matrix = axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64))
    rot6d = matrix_to_rot6d(matrix)
    torch.testing.assert_close(rot6d[:3], matrix[:, 0])
    torch.testing.assert_close(rot6d[3:], matrix[:, 1])


def test_rot6d_to_matrix_orthonormalises_any_vector() -> None:
    raw = torch.randn(500, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matrices = rot6d_to_matrix(raw)
    eye = torch.eye(3, dtype=torch.float64).expand_as(matrices)
    torch.testing.assert_close(matrices.transpose(-1, -2) @ matrices, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(matrices), torch.ones(500, dtype=torch.float64))
    # The first column keeps the direction of the first half.
    first = raw[:, :3] / raw[:, :3].norm(dim=-1, keepdim=True)
    torch.testing.assert_close(matrices[..., 0], first)


def test_rot6d_to_matrix_is_differentiable() -> None:
    raw = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot6d_to_matrix, (raw,))


def test_quaternion_round_trip_and_sign(rotations: torch.Tensor) -> None:
    q = matrix_to_quaternion(rotations)
    assert bool((q[:, 0] >= 0).all())
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(10_000, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), rotations, atol=1e-10, rtol=0)


def test_quaternion_of_half_turns_is_stable() -> None:
    # Rotations by π have w = 0: the branch that divides by w would fail here.
    axes = torch.eye(3, dtype=torch.float64) * math.pi
    matrices = axis_angle_to_matrix(axes)
    torch.testing.assert_close(
        quaternion_to_matrix(matrix_to_quaternion(matrices)), matrices, atol=1e-12, rtol=0
    )


def test_axis_angle_round_trip() -> None:
    vectors = torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    vectors = (
        vectors / vectors.norm(dim=-1, keepdim=True) * torch.rand(200, 1, dtype=torch.float64) * 3.0
    )
    torch.testing.assert_close(
        matrix_to_axis_angle(axis_angle_to_matrix(vectors)), vectors, atol=1e-9, rtol=0
    )


def test_geodesic_angle_matches_known_angles() -> None:
    angles = torch.linspace(0, math.pi, 50, dtype=torch.float64)
    axis = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    axis = axis / axis.norm()
    base = axis_angle_to_matrix(torch.tensor([0.4, 0.1, -0.7], dtype=torch.float64))
    turned = base @ axis_angle_to_matrix(angles[:, None] * axis)
    torch.testing.assert_close(
        geodesic_angle(base.expand_as(turned), turned), angles, atol=1e-9, rtol=0
    )


def test_slerp_follows_the_geodesic() -> None:
    axis = torch.tensor([0.0, 0.6, 0.8], dtype=torch.float64)
    start = axis_angle_to_matrix(torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64))
    end = start @ axis_angle_to_matrix(axis * 2.0)
    for fraction in (0.0, 0.25, 0.5, 1.0):
        q = quaternion_slerp(matrix_to_quaternion(start), matrix_to_quaternion(end), fraction)
        expected = start @ axis_angle_to_matrix(axis * 2.0 * fraction)
        torch.testing.assert_close(quaternion_to_matrix(q), expected, atol=1e-9, rtol=0)


def test_slerp_takes_the_short_way_round() -> None:
    q0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    q1 = -matrix_to_quaternion(
        axis_angle_to_matrix(torch.tensor([0.0, 0.0, 0.2], dtype=torch.float64))
    )
    mid = quaternion_to_matrix(quaternion_slerp(q0, q1, 0.5))
    angle = geodesic_angle(torch.eye(3, dtype=torch.float64), mid)
    assert abs(float(angle) - 0.1) < 1e-9


def test_numpy_in_numpy_out() -> None:
    matrix = np.eye(3, dtype=np.float32)
    rot6d = matrix_to_rot6d(matrix)
    assert isinstance(rot6d, np.ndarray)
    assert rot6d.dtype == np.float32
    np.testing.assert_allclose(rot6d, [1, 0, 0, 0, 1, 0])


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (rot6d_to_matrix, torch.zeros(4, 5)),
        (matrix_to_rot6d, torch.zeros(4, 3, 2)),
        (quaternion_to_matrix, torch.zeros(3)),
    ],
)
def test_bad_shapes_name_the_expected_shape(fn, bad) -> None:
    with pytest.raises(ValueError, match="expected shape"):
        fn(bad)


def test_integer_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        rot6d_to_matrix(torch.zeros(2, 6, dtype=torch.int64))
