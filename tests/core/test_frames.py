import pytest
import torch

from metis_core.errors import ContractError
from metis_core.frames import from_wrist_frame, to_wrist_frame, wrist_frame_from_keypoints
from metis_core.rotations import axis_angle_to_matrix, random_rotation_matrices

# A right hand in its own wrist frame (metres): the middle MCP on +z, the index MCP towards +y.
# The x components are deliberately non-zero: the construction must not depend on them.
LOCAL = {
    "wrist": (0.0, 0.0, 0.0),
    "index_mcp": (0.006, 0.024, 0.086),
    "middle_mcp": (0.0, 0.0, 0.092),
    "little_mcp": (0.004, -0.036, 0.074),
}


def _known_pose(rotation: torch.Tensor, origin: torch.Tensor) -> dict[str, torch.Tensor]:
    local = {k: torch.tensor(v, dtype=torch.float64) for k, v in LOCAL.items()}
    # index - little = (0.002, 0.060, 0.012): its part orthogonal to z is along +y only if x = 0.
    # Remove that x-part so that the known frame is exactly the identity in local coordinates.
    local["little_mcp"][0] = local["index_mcp"][0]
    return {k: rotation @ v + origin for k, v in local.items()}


def test_frame_from_known_pose_matches_to_1e_6() -> None:
    rotations = random_rotation_matrices(100, generator=torch.Generator().manual_seed(3))
    origins = torch.randn(100, 3, dtype=torch.float64)
    points = {
        k: torch.stack([_known_pose(r, o)[k] for r, o in zip(rotations, origins, strict=False)])
        for k in LOCAL
    }
    rotation, origin = wrist_frame_from_keypoints(**points)
    assert float((rotation - rotations).abs().max()) < 1e-6
    torch.testing.assert_close(origin, origins)


def test_frame_axes_follow_the_definition() -> None:
    pose = _known_pose(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    rotation, _ = wrist_frame_from_keypoints(**pose)
    z = pose["middle_mcp"] / pose["middle_mcp"].norm()
    torch.testing.assert_close(rotation[:, 2], z)
    assert float(rotation[:, 1] @ (pose["index_mcp"] - pose["little_mcp"])) > 0  # y: little → index
    torch.testing.assert_close(torch.linalg.det(rotation), torch.tensor(1.0, dtype=torch.float64))


def test_right_hand_palm_facing_camera_has_x_out_of_the_palm() -> None:
    # OpenCV camera: x right, y down, z forward. A right hand held up, palm to the camera:
    # fingers point up (-y), thumb/index on the viewer's right (+x), palm normal towards the camera (-z).
    rotation, _ = wrist_frame_from_keypoints(
        torch.tensor([0.0, 0.0, 0.5]),
        torch.tensor([0.025, -0.09, 0.5]),
        torch.tensor([0.0, -0.095, 0.5]),
        torch.tensor([-0.035, -0.08, 0.5]),
    )
    torch.testing.assert_close(rotation[:, 0], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6, rtol=0)


def test_to_and_from_wrist_frame_round_trip() -> None:
    rotation = axis_angle_to_matrix(torch.tensor([[0.3, 0.2, -1.0]], dtype=torch.float64))
    origin = torch.tensor([[0.1, -0.2, 0.5]], dtype=torch.float64)
    points = torch.randn(1, 5, 3, dtype=torch.float64)
    local = to_wrist_frame(points, origin, rotation)
    expected = (points - origin[:, None]) @ rotation[0]  # Rᵀ(p - o) for row vectors
    torch.testing.assert_close(local, expected)
    torch.testing.assert_close(from_wrist_frame(local, origin, rotation), points)


def test_degenerate_keypoints_raise_or_fall_back() -> None:
    zero = torch.zeros(2, 3)
    good = _known_pose(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    keypoints = {k: torch.stack([v.float(), zero[0]]) for k, v in good.items()}
    with pytest.raises(ContractError, match=r"degenerate keypoints at batch index \(1,\)"):
        wrist_frame_from_keypoints(**keypoints)
    rotation, _ = wrist_frame_from_keypoints(**keypoints, strict=False)
    torch.testing.assert_close(rotation[1], torch.eye(3))


def test_mismatched_shapes_raise() -> None:
    with pytest.raises(ContractError, match=r"share one shape \(\.\.\., 3\)"):
        wrist_frame_from_keypoints(
            torch.zeros(3), torch.zeros(3), torch.zeros(2, 3), torch.zeros(3)
        )


def test_frame_is_differentiable() -> None:
    pose = _known_pose(torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
    inputs = tuple(
        pose[k].clone().requires_grad_(True)
        for k in ("wrist", "index_mcp", "middle_mcp", "little_mcp")
    )
    assert torch.autograd.gradcheck(lambda *p: wrist_frame_from_keypoints(*p)[0], inputs)
