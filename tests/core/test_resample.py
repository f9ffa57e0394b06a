import math

import pytest
import torch

from metis_core.contract import LEFT, RIGHT, pack_hands, unpack_hands
from metis_core.errors import ContractError
from metis_core.resample import resample_hand_vectors, target_timestamps
from metis_core.rotations import axis_angle_to_matrix, geodesic_angle


def _trajectory(times: torch.Tensor) -> torch.Tensor:
    """Hands moving at constant velocity and turning at constant angular velocity."""
    t = times[:, None]
    position = torch.stack([torch.cat([0.1 + 0.2 * t, -0.1 * t, 0.5 + 0 * t], -1), torch.cat([-0.1 + 0 * t, 0.3 * t, 0.6 - 0.1 * t], -1)], 1)  # fmt: skip
    axis_left = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    axis_right = torch.tensor([0.6, 0.8, 0.0], dtype=torch.float64)
    rotation = torch.stack(
        [axis_angle_to_matrix(t * 2.5 * axis_left), axis_angle_to_matrix(t * 1.5 * axis_right)], 1
    )
    tips = torch.linspace(-0.05, 0.05, 15, dtype=torch.float64).reshape(5, 3).expand(len(times), 2, 5, 3) * (1 + t[:, :, None, None])  # fmt: skip
    return pack_hands(position, rotation, tips)


def test_resampling_20hz_to_30hz_is_exact_for_linear_and_constant_rate_motion() -> None:
    source_times = torch.arange(0, 41, dtype=torch.float64) / 20  # 2 s at 20 Hz
    result = resample_hand_vectors(_trajectory(source_times), source_times, target_fps=30.0)
    assert result.vectors.shape == (61, 48)
    torch.testing.assert_close(result.timestamps, torch.arange(61, dtype=torch.float64) / 30)
    expected = _trajectory(result.timestamps)
    for layout in (LEFT, RIGHT):
        torch.testing.assert_close(
            result.vectors[:, layout.wrist_position], expected[:, layout.wrist_position]
        )
        torch.testing.assert_close(
            result.vectors[:, layout.fingertips], expected[:, layout.fingertips]
        )
    # Slerp reproduces rotation at constant angular velocity exactly (linear 6D would not).
    angle = geodesic_angle(
        unpack_hands(result.vectors).wrist_rotation, unpack_hands(expected).wrist_rotation
    )
    assert float(angle.max()) < 1e-9


def test_linear_interpolation_of_6d_would_be_wrong_here() -> None:
    # The reason for slerp: halfway between two rotations 120° apart, lerped columns shrink.
    source_times = torch.tensor([0.0, 1.0], dtype=torch.float64)
    vectors = _trajectory(source_times * (2 * math.pi / 3) / 2.5)
    result = resample_hand_vectors(
        vectors, source_times, target_times=torch.tensor([0.5], dtype=torch.float64)
    )
    column = result.vectors[0, LEFT.wrist_rot6d][:3]
    assert abs(float(column.norm()) - 1.0) < 1e-12
    lerped = (vectors[0, LEFT.wrist_rot6d] + vectors[1, LEFT.wrist_rot6d])[:3] / 2
    assert float(lerped.norm()) < 0.6


def test_hand_present_only_where_both_neighbours_are() -> None:
    times = torch.arange(5, dtype=torch.float64) / 10
    vectors = _trajectory(times)
    mask = torch.ones(5, 2, dtype=torch.bool)
    mask[2, 1] = False
    vectors[2, RIGHT.indices] = 0
    result = resample_hand_vectors(vectors, times, target_times=torch.tensor([0.1, 0.15, 0.2, 0.25, 0.3], dtype=torch.float64), hand_mask=mask)  # fmt: skip
    assert result.hand_mask[:, 1].tolist() == [True, False, False, False, True]
    assert result.hand_mask[:, 0].all()
    assert bool((result.vectors[1:4, RIGHT.indices] == 0).all())


def test_bad_timestamps_raise() -> None:
    vectors = _trajectory(torch.arange(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="strictly increasing"):
        resample_hand_vectors(vectors, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="expected 4 times"):
        resample_hand_vectors(vectors, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="outside the source range"):
        resample_hand_vectors(vectors, [0.0, 1.0, 2.0, 3.0], target_times=[0.0, 3.5])
    with pytest.raises(ContractError, match=r"\(\.\.\., T, 48\)"):
        resample_hand_vectors(torch.zeros(4, 47), [0.0, 1.0, 2.0, 3.0])


def test_target_timestamps_include_the_end() -> None:
    assert target_timestamps(0.0, 1.0, 30.0).numel() == 31
    assert target_timestamps(0.0, 0.99, 30.0).numel() == 30
    with pytest.raises(ValueError, match="fps must be positive"):
        target_timestamps(0.0, 1.0, 0.0)
