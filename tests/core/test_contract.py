import numpy as np
import pytest
import torch

from metis_core.contract import (
    ACTION_DIM,
    HAND_CONTRACT,
    LEFT,
    RIGHT,
    ContractSpec,
    apply_hand_mask,
    check_contract,
    describe_index,
    hand_value_mask,
    pack_hands,
    unpack_hands,
    validate_hand_vector,
)
from metis_core.errors import ContractError, ContractMismatchError
from metis_core.rotations import random_rotation_matrices


def _random_hands(batch: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    position = torch.randn(batch, 2, 3, generator=generator, dtype=torch.float64) * 0.2
    rotation = random_rotation_matrices(batch * 2, generator=generator).reshape(batch, 2, 3, 3)
    tips = torch.randn(batch, 2, 5, 3, generator=generator, dtype=torch.float64) * 0.05
    return position, rotation, tips


def test_layout_matches_the_design_table() -> None:
    assert ACTION_DIM == 48
    assert (LEFT.wrist_position, LEFT.wrist_rot6d, LEFT.fingertips) == (
        slice(0, 3),
        slice(3, 9),
        slice(18, 33),
    )
    assert (RIGHT.wrist_position, RIGHT.wrist_rot6d, RIGHT.fingertips) == (
        slice(9, 12),
        slice(12, 18),
        slice(33, 48),
    )
    assert sorted(LEFT.indices + RIGHT.indices) == list(range(48))
    assert RIGHT.fingertip("index") == slice(36, 39)
    assert describe_index(37) == "right fingertip index.y"
    assert describe_index(4) == "left wrist rot6d[1]"
    assert HAND_CONTRACT.id == "metis-hand-v1"


def test_pack_unpack_round_trip() -> None:
    position, rotation, tips = _random_hands(32)
    vector = pack_hands(position, rotation, tips)
    assert vector.shape == (32, 48)
    # Values land in the documented slices.
    torch.testing.assert_close(vector[:, RIGHT.wrist_position], position[:, 1])
    torch.testing.assert_close(vector[:, LEFT.fingertips], tips[:, 0].reshape(32, 15))
    torch.testing.assert_close(vector[:, RIGHT.wrist_rot6d][:, :3], rotation[:, 1, :, 0])
    poses = unpack_hands(vector)
    torch.testing.assert_close(poses.wrist_position, position)
    torch.testing.assert_close(poses.wrist_rotation, rotation, atol=1e-12, rtol=0)
    torch.testing.assert_close(poses.fingertips, tips)


def test_fingertips_in_camera_uses_the_wrist_pose() -> None:
    position, rotation, tips = _random_hands(4)
    poses = unpack_hands(pack_hands(position, rotation, tips))
    expected = torch.einsum("bhij,bhfj->bhfi", rotation, tips) + position[:, :, None]
    torch.testing.assert_close(poses.fingertips_in_camera(), expected, atol=1e-12, rtol=0)


def test_masks_zero_missing_hands() -> None:
    position, rotation, tips = _random_hands(3)
    mask = torch.tensor([[True, False], [False, True], [True, True]])
    vector = pack_hands(position, rotation, tips, hand_mask=mask)
    assert bool((vector[0, RIGHT.fingertips] == 0).all())
    assert bool((vector[0, RIGHT.wrist_rot6d] == 0).all())
    assert bool((vector[1, LEFT.wrist_position] == 0).all())
    assert bool((vector[2] != 0).any())
    values = hand_value_mask(mask)
    assert values.shape == (3, 48)
    assert int(values[0].sum()) == 24
    assert int(values[2].sum()) == 48
    torch.testing.assert_close(apply_hand_mask(vector, mask), vector)
    validate_hand_vector(vector, hand_mask=mask)


def test_valid_vector_passes() -> None:
    vector = pack_hands(*_random_hands(5)).float()
    validate_hand_vector(vector, name="action", require_float32=True)
    validate_hand_vector(vector.numpy(), name="action")


def test_47_values_are_rejected_with_the_expected_shape() -> None:
    with pytest.raises(
        ContractError, match=r"expected metis-hand-v1 vectors of shape \(\.\.\., 48\).*47"
    ):
        validate_hand_vector(torch.zeros(2, 47), name="action")


def test_nan_is_rejected_naming_the_value() -> None:
    vector = pack_hands(*_random_hands(2)).float()
    vector[1, 40] = float("nan")
    with pytest.raises(
        ContractError, match=r"non-finite.*index \(1, 40\).*right fingertip middle\.y"
    ):
        validate_hand_vector(vector, name="action")


def test_wrong_contract_version_is_rejected() -> None:
    vector = pack_hands(*_random_hands(1)).float()
    with pytest.raises(ContractMismatchError, match="version 2.*implements version 1"):
        validate_hand_vector(vector, contract={"name": "metis-hand", "version": 2})
    with pytest.raises(ContractMismatchError, match="'other-hand'"):
        validate_hand_vector(vector, contract="other-hand-v1")
    with pytest.raises(ContractMismatchError, match="records no hand action contract"):
        check_contract(None, where="dataset x")
    check_contract({"name": "metis-hand", "version": "1"}, where="ok")
    assert ContractSpec.parse("metis-hand-v1") == HAND_CONTRACT


def test_integer_dtype_and_float64_for_storage_are_rejected() -> None:
    with pytest.raises(ContractError, match="float32"):
        validate_hand_vector(torch.zeros(2, 48, dtype=torch.int32))
    with pytest.raises(ContractError, match="float32 for storage"):
        validate_hand_vector(pack_hands(*_random_hands(1)), require_float32=True)


def test_missing_hand_must_be_zero() -> None:
    vector = pack_hands(*_random_hands(1)).float()
    with pytest.raises(
        ContractError, match="hand marked missing has non-zero values.*left wrist position.x"
    ):
        validate_hand_vector(vector, hand_mask=torch.tensor([[False, True]]))


def test_degenerate_rotation_is_rejected_unless_the_hand_is_missing() -> None:
    vector = pack_hands(*_random_hands(1)).float()
    vector[0, RIGHT.wrist_rot6d] = 0.0
    with pytest.raises(ContractError, match="right wrist rotation.*not a valid 6D rotation"):
        validate_hand_vector(vector)
    vector[0, RIGHT.indices] = 0.0
    validate_hand_vector(vector, hand_mask=torch.tensor([[True, False]]))


def test_mask_shape_is_checked() -> None:
    vector = pack_hands(*_random_hands(3)).float()
    with pytest.raises(ContractError, match=r"expected shape \(3, 2\)"):
        validate_hand_vector(vector, hand_mask=np.ones((3, 3), dtype=bool))


def test_pack_rejects_bad_shapes() -> None:
    position, rotation, tips = _random_hands(2)
    with pytest.raises(ContractError, match=r"fingertips must have shape \(\.\.\., 2, 5, 3\)"):
        pack_hands(position, rotation, tips[:, :, :4])
