"""METIS quickstart: what is installed, and one hand pose through the hand action contract.

Run with `make demo` (which sets up .venv first) or `python examples/quickstart.py`.

1. Lists every registered component (tokenizers, backbones, action heads, embodiments,
   dataset sources) as the registries see them through entry points.
2. Builds two hands from keypoints seen by an egocentric camera, converts them to one
   48-D `metis-hand-v1` vector (wrist pose in the camera frame, fingertips in the wrist frames),
   and checks that unpacking gives back the same fingertips in the camera frame.
3. Resamples a 20 Hz recording of the hands turning and moving to 30 Hz (slerp for rotations).
4. Shows what a malformed vector gets: an error naming the problem.
5. Retargets a half-closed human hand (21 MANO keypoints) onto the Inspire robot hand by batched
   inverse kinematics, and turns the joints into Unitree's six normalised motor commands.
6. Writes two small procedurally generated egocentric datasets in LeRobot v3 format, reopens them
   and draws training samples from a weighted mixture through a ``DataLoader``.
7. Tokenizes one second of two-hand motion: DCT+BPE and uniform binning (fitted), and a residual-VQ
   motion tokenizer trained for a few seconds (the benchmark trains it for 15 minutes).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from metis_core import (
    HAND_CONTRACT,
    REGISTRIES,
    ContractError,
    pack_hands,
    resample_hand_vectors,
    to_wrist_frame,
    unpack_hands,
    validate_hand_vector,
    wrist_frame_from_keypoints,
)
from metis_core.rotations import axis_angle_to_matrix, geodesic_angle

# Keypoints of a right hand in its own frame (metres): wrist, MCPs of index/middle/little,
# and the five fingertips (thumb, index, middle, ring, little) of a relaxed, half-open hand.
RIGHT_HAND = {
    "wrist": (0.0, 0.0, 0.0),
    "index_mcp": (0.0, 0.024, 0.088),
    "middle_mcp": (0.0, 0.0, 0.092),
    "little_mcp": (0.0, -0.036, 0.076),
    "fingertips": (
        (0.035, 0.070, 0.080),
        (0.030, 0.030, 0.160),
        (0.035, 0.002, 0.170),
        (0.032, -0.020, 0.160),
        (0.028, -0.040, 0.140),
    ),
}


def hand_in_camera(
    rotation: torch.Tensor, position: torch.Tensor, side: str
) -> dict[str, torch.Tensor]:
    """Place the right-hand keypoints (mirrored for a left hand) in the camera frame."""
    mirror = torch.tensor([-1.0 if side == "left" else 1.0, 1.0, 1.0], dtype=torch.float64)
    return {
        name: (torch.tensor(value, dtype=torch.float64) * mirror) @ rotation.T + position
        for name, value in RIGHT_HAND.items()
    }


def list_components() -> None:
    print("Registered components (through entry points, nothing imported yet):")
    for kind, registry in REGISTRIES.items():
        names = registry.names()
        listing = (
            ", ".join(f"{n} ({registry.info(n).distribution})" for n in names) or "none installed"
        )
        print(f"  {kind:<13} {listing}")
    print()


def round_trip_one_pose() -> None:
    print(f"One pose through {HAND_CONTRACT.id}:")
    # Hands 40-50 cm in front of a head camera (OpenCV frame: x right, y down, z forward).
    poses = {
        "left": (axis_angle_to_matrix(torch.tensor([2.2, 0.3, 0.4], dtype=torch.float64)), torch.tensor([-0.15, 0.20, 0.42], dtype=torch.float64)),
        "right": (axis_angle_to_matrix(torch.tensor([2.0, -0.4, -0.5], dtype=torch.float64)), torch.tensor([0.12, 0.22, 0.45], dtype=torch.float64)),
    }  # fmt: skip
    positions, rotations, tips_in_wrist, tips_in_camera = [], [], [], []
    for side in ("left", "right"):
        keypoints = hand_in_camera(*poses[side], side)
        rotation, origin = wrist_frame_from_keypoints(
            keypoints["wrist"],
            keypoints["index_mcp"],
            keypoints["middle_mcp"],
            keypoints["little_mcp"],
        )
        positions.append(origin)
        rotations.append(rotation)
        tips_in_wrist.append(to_wrist_frame(keypoints["fingertips"], origin, rotation))
        tips_in_camera.append(keypoints["fingertips"])
    vector = pack_hands(
        torch.stack(positions), torch.stack(rotations), torch.stack(tips_in_wrist)
    ).float()
    validate_hand_vector(vector, name="state", require_float32=True)
    print(f"  48-D vector: {vector.shape[0]} float32 values; right index fingertip in its wrist frame "
          f"(mm): {[round(v * 1000, 1) for v in vector[36:39].tolist()]}")  # fmt: skip
    recovered = unpack_hands(vector.double()).fingertips_in_camera()
    error_um = (recovered - torch.stack(tips_in_camera)).norm(dim=-1).max().item() * 1e6
    print(
        f"  camera keypoints -> contract -> camera: max fingertip error {error_um:.3f} µm (float32)"
    )
    print()


def resample_a_recording() -> None:
    print("Resampling a 20 Hz recording to 30 Hz:")
    times = torch.arange(0, 21, dtype=torch.float64) / 20  # one second
    axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    vectors = []
    for t in times:
        turn = axis_angle_to_matrix(axis * (math.pi / 3) * t)  # 60° over the second
        rotation = torch.stack([turn, turn])
        position = torch.tensor(
            [[-0.15, 0.2, 0.4], [0.15, 0.2, 0.4]], dtype=torch.float64
        ) + 0.25 * t * torch.tensor([0.0, -1.0, 0.0])
        tips = torch.tensor(RIGHT_HAND["fingertips"], dtype=torch.float64).expand(2, 5, 3)
        vectors.append(pack_hands(position, rotation, tips))
    result = resample_hand_vectors(torch.stack(vectors), times, target_fps=30.0)
    expected = axis_angle_to_matrix(result.timestamps[:, None] * (math.pi / 3) * axis)
    angle_error = (
        geodesic_angle(unpack_hands(result.vectors).wrist_rotation[:, 1], expected).max().item()
    )
    print(f"  {len(times)} frames at 20 Hz -> {len(result.timestamps)} frames at 30 Hz; "
          f"max wrist rotation error vs. the true motion: {math.degrees(angle_error):.2e} deg")  # fmt: skip
    print()


def show_an_error() -> None:
    print("A malformed vector gets a clear error:")
    try:
        validate_hand_vector(torch.zeros(4, 47), name="action")
    except ContractError as err:
        print(f"  ContractError: {err}")


def retarget_a_human_grasp() -> None:
    from metis_core.registry import EMBODIMENTS
    from metis_embodiments.human import curl_fingers
    from metis_embodiments.retarget import retarget

    print("Retargeting a half-closed human hand onto the Inspire hand:")
    human = EMBODIMENTS.create("human_mano")  # right hand, 21 keypoints
    robot = EMBODIMENTS.create("inspire")  # right Inspire RH56 (6 actuated DoF, 12 joints)
    flexion = torch.linspace(0.2, 1.0, 4, dtype=torch.float64)[:, None, None].expand(4, 5, 3)
    keypoints = curl_fingers(flexion.contiguous())  # 4 grasps, from open-ish to closed
    result = retarget(human, keypoints, robot)
    limits = robot.joint_limits.to(result.joints)
    inside = bool(((result.joints >= limits[:, 0] - 1e-9) & (result.joints <= limits[:, 1] + 1e-9)).all())  # fmt: skip
    error_mm = 1000 * result.fingertip_error
    print(
        f"  4 grasps -> joints {tuple(result.joints.shape)}, all within the joint limits: {inside}"
    )
    print(f"  fingertip error after scaling to the robot's size: median {error_mm.median():.1f} mm")
    command = robot.to_unitree_command(result.joints)
    print(f"  Unitree command of the most closed grasp (1 = open): {[round(v, 2) for v in command[-1].tolist()]}")  # fmt: skip
    print()


def datasets_and_a_mixture(workdir: Path) -> None:
    from metis_datasets import LeRobotDataset, MixtureDataset, SampleSpec, write_episodes
    from metis_datasets.synthetic.source_synthetic import SyntheticConfig, SyntheticSource

    print("Two synthetic egocentric datasets in LeRobot v3 format, mixed 0.7 / 0.3:")
    datasets = {}
    for name, seed in (("kitchen", 0), ("workshop", 1)):
        source = SyntheticSource(SyntheticConfig(episodes=3, frames=48, seed=seed, height=240, width=320))  # fmt: skip
        root = write_episodes(
            workdir / name,
            source.iter_episodes(),
            fps=source.config.fps,
            source="synthetic",
            embodiment="human_mano",
            camera_intrinsics=source.intrinsics,
            image_shape=(source.config.height, source.config.width),  # ego frames -> MP4 video
            progress=False,
        )
        datasets[name] = LeRobotDataset(root)
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        print(f"  {name}: {len(datasets[name].episodes)} episodes, {datasets[name].num_frames} frames; files: {', '.join(files)}")  # fmt: skip
    mixture = MixtureDataset(
        datasets,
        weights=[0.7, 0.3],
        num_samples=200,
        seed=0,
        spec=SampleSpec(chunk_len=30, image_size=224),
    )
    loader = torch.utils.data.DataLoader(mixture, batch_size=20)
    batch = next(iter(loader))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    print(f"  a batch of 20 (frames decoded from the MP4, centre-cropped to 224 px):\n    {shapes}")
    for _ in loader:
        pass
    drawn = {k: round(v, 3) for k, v in mixture.drawn_proportions().items()}
    print(f"  proportions actually drawn over 200 samples: {drawn}")
    print()


def tokenize_motion(workdir: Path) -> None:
    from metis_tokenizers import (
        DCTBPE,
        Binning,
        BinningConfig,
        DCTBPEConfig,
        MotionRVQConfig,
        generate_motion_windows,
    )
    from metis_tokenizers.evaluation import evaluate_tokenizer
    from metis_tokenizers.training import TrainConfig, train_motion_rvq

    print("One second of two-hand motion (16 frames x 48 values) as tokens, on held-out windows:")
    torch.manual_seed(0)
    train = generate_motion_windows(4000, seed=0)
    heldout = generate_motion_windows(200, seed=0, split="heldout")
    rvq = train_motion_rvq(
        train,
        workdir / "motion_rvq",
        model_config=MotionRVQConfig(hidden_dim=64, latent_dim=64, attention_layers=1),
        train_config=TrainConfig(steps=300, batch_size=64, learning_rate=2e-3, log_every=100),
        progress=False,
    ).tokenizer
    tokenizers = {
        "motion_rvq (300 steps)": rvq,
        "dct_bpe (scale 2)": DCTBPE(DCTBPEConfig(scale=2.0)).fit(train.actions, train.hand_mask),
        "binning (256 bins)": Binning(BinningConfig()).fit(train.actions, train.hand_mask),
    }
    print(f"  {'tokenizer':<24}{'tokens':>8}{'tips mm':>9}{'wrist mm':>10}{'rot deg':>9}")
    for label, tokenizer in tokenizers.items():
        report = evaluate_tokenizer(tokenizer, heldout, timing_repeats=1)
        print(f"  {label:<24}{report.tokens_per_window:>8.1f}{report.fingertip_mm:>9.1f}"
              f"{report.wrist_position_mm:>10.1f}{report.wrist_rotation_deg:>9.2f}")  # fmt: skip
    print("  (python benchmarks/tokenizers.py trains motion_rvq properly and compares rates)")


if __name__ == "__main__":
    list_components()
    round_trip_one_pose()
    resample_a_recording()
    show_an_error()
    print()
    retarget_a_human_grasp()
    with tempfile.TemporaryDirectory(prefix="metis-quickstart-") as tmp:
        datasets_and_a_mixture(Path(tmp))
        tokenize_motion(Path(tmp))
