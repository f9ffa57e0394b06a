"""Mixtures (proportions, determinism, resume, rank/worker disjointness) and transforms."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from metis_core.contract import LEFT
from metis_core.episode import Episode, Subtask
from metis_core.registry import DATASET_SOURCES
from metis_core.rotations import (  # fmt: skip
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)
from metis_datasets import (  # fmt: skip
    LeRobotDataset,
    MixtureDataset,
    SampleSpec,
    build_sample,
    center_crop_resize,
    resample_episode,
)
from metis_datasets.cli import dataset_table, main
from metis_datasets.lerobot_format import write_episodes
from metis_datasets.synthetic import SyntheticConfig, SyntheticSource, make_dataset
from metis_datasets.synthetic.source_synthetic import fingertips_in_camera, project


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("mix")
    out = {name: make_dataset(base / name, episodes=4, seed=seed, frames=20, image_size=None) for seed, name in enumerate(("a", "b", "c"))}  # fmt: skip
    out["img"] = make_dataset(base / "img", episodes=2, seed=9, frames=40, image_size=(240, 320))
    return out


def _mixture(roots: dict[str, Path], **kwargs) -> MixtureDataset:
    datasets = {name: LeRobotDataset(roots[name]) for name in ("a", "b", "c")}
    return MixtureDataset(datasets, weights=[0.6, 0.3, 0.1], **kwargs)


def test_proportions_within_two_percent(roots: dict[str, Path]) -> None:
    mixture = _mixture(roots, seed=3, num_samples=10_000)
    counts = {"a": 0, "b": 0, "c": 0}
    for sample in mixture:  # real samples, built through the transforms
        counts[sample["source"]] += 1
    drawn = mixture.drawn_proportions()
    for name, target in zip("abc", (0.6, 0.3, 0.1), strict=True):
        assert abs(counts[name] / 10_000 - target) <= 0.02  # the done-when bound (±2 points)
        assert abs(counts[name] / 10_000 - target) <= 0.005  # what the block design gives
        assert drawn[name] == counts[name] / 10_000  # the report is what was drawn
    assert mixture.proportions(10_000) == drawn
    # any window, not only the first 10k, holds the proportions
    for name, share in mixture.proportions(10_000, start=123_457).items():
        assert abs(share - dict(zip("abc", (0.6, 0.3, 0.1), strict=True))[name]) <= 0.005


def _stream(mixture: MixtureDataset, samples) -> list[tuple[str, int]]:
    return [(mixture.names[s], f) for s, f in map(mixture.locate, samples)]


def test_same_seed_same_stream_and_resume(roots: dict[str, Path]) -> None:
    first = _stream(_mixture(roots, seed=5), range(10_000))
    assert first == _stream(_mixture(roots, seed=5), range(10_000))  # identical for the same seed
    other = _stream(_mixture(roots, seed=6), range(10_000))
    assert sum(x != y for x, y in zip(first, other, strict=True)) > 5_000
    # the iterator yields exactly this stream, and resuming at a counter yields its tail
    iterated = [(s["source"], s["dataset_frame"]) for s in _mixture(roots, seed=5, num_samples=300)]  # fmt: skip
    assert iterated == first[:300]
    resumed = [(s["source"], s["dataset_frame"]) for s in _mixture(roots, seed=5, num_samples=300, start_sample=123)]  # fmt: skip
    assert resumed == first[123:300]


def test_ranks_and_workers_disjoint(roots: dict[str, Path]) -> None:
    total, world, workers = 10_000, 2, 2
    reference = _mixture(roots, seed=1)
    whole = _stream(reference, range(total))
    # the k-th draw of a source is frame perm_epoch[k mod N]: (source, epoch, frame) is one sample
    draws: dict[str, int] = {}
    identity = []
    for name, frame in whole:
        size = len(reference.datasets[reference.names.index(name)])
        identity.append((name, draws.get(name, 0) // size, frame))
        draws[name] = draws.get(name, 0) + 1
    assert len(set(identity)) == total  # every epoch of every source is a permutation
    owner: dict[tuple, tuple[int, int]] = {}
    for rank in range(world):
        mixture = _mixture(roots, seed=1, num_samples=total, rank=rank, world_size=world)
        assert len(mixture) == total // world
        # a rank's samples do not depend on how many dataloader workers split them
        for count in (1, 2, 3):
            split = [g for w in range(count) for g in mixture.sample_numbers(worker=w, num_workers=count)]  # fmt: skip
            assert sorted(split) == list(range(rank, total, world))
        for worker in range(workers):
            numbers = list(mixture.sample_numbers(worker=worker, num_workers=workers))
            assert _stream(mixture, numbers) == [whole[g] for g in numbers]
            for g in numbers:
                assert identity[g] not in owner, f"{identity[g]} drawn by {owner[identity[g]]} and {(rank, worker)}"  # fmt: skip
                owner[identity[g]] = (rank, worker)
    assert len(owner) == total  # together the ranks and workers draw the whole stream once
    # resuming every rank at a counter continues the same partition
    for rank in range(world):
        resumed = _mixture(roots, seed=1, num_samples=total, start_sample=6_001, rank=rank, world_size=world)  # fmt: skip
        numbers = list(resumed.sample_numbers())
        assert numbers[0] in (6_001, 6_002)
        assert all(g % world == rank for g in numbers)
        assert len(resumed) == len(numbers)


def test_dataloader_workers_cover_stream(roots: dict[str, Path]) -> None:
    mixture = _mixture(roots, seed=2, num_samples=64, spec=SampleSpec(chunk_len=32))
    # spawn, not fork: forking a process whose torch/OpenMP threads are live can deadlock
    loader = torch.utils.data.DataLoader(
        mixture, batch_size=8, num_workers=2, multiprocessing_context="spawn"
    )
    batches = list(loader)
    indices = sorted(int(i) for batch in batches for i in batch["sample_index"])
    assert indices == list(range(64))
    # the main process reports what the workers drew, from the sample counter
    sources = [name for batch in batches for name in batch["source"]]
    assert mixture.proportions(64) == {n: sources.count(n) / 64 for n in mixture.names}
    batch = batches[0]
    assert batch["action"].shape == (8, 32, 48)
    assert batch["observation.state"].shape == (8, 1, 48)


def test_default_weights_need_table6_names(roots: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="Table 6"):
        MixtureDataset({"a": LeRobotDataset(roots["a"])})
    mixture = MixtureDataset({"egodex": LeRobotDataset(roots["a"]), "h2o": LeRobotDataset(roots["b"])})  # fmt: skip
    np.testing.assert_allclose(mixture.weights, [0.403 / 0.411, 0.008 / 0.411])


def test_chunk_padding_and_normalisation(roots: dict[str, Path]) -> None:
    dataset = LeRobotDataset(roots["a"])
    last = int(dataset.episode_starts[1]) - 3  # three frames before episode 0 ends
    sample = build_sample(dataset, last, SampleSpec(chunk_len=30, motion_window=16))
    assert sample["action_is_pad"].tolist() == [False] * 3 + [True] * 27
    assert not sample["action_hand_mask"][3:].any()
    np.testing.assert_array_equal(sample["action"][2].numpy(), dataset.action[last + 2])
    assert sample["motion_window"].shape == (16, 48)
    mixture = MixtureDataset({"a": dataset}, weights=[1.0], num_samples=1, spec=SampleSpec(norm_mode="mean_std"))  # fmt: skip
    normalised = build_sample(dataset, 0, mixture.spec, mixture.normalizers[0])
    stats = dataset.stats["observation.state"]
    present = dataset.hand_mask[0, 0]
    expected = (dataset.state[0, 0] - stats.mean[0]) / stats.std[0] if present else 0.0
    assert normalised["observation.state"][0, 0].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)  # fmt: skip


def test_image_sample_and_crop(roots: dict[str, Path]) -> None:
    dataset = LeRobotDataset(roots["img"])
    sample = build_sample(dataset, 5, SampleSpec(image_size=224, augment=True))
    image = sample["observation.images.ego"]
    assert image.shape == (3, 224, 224)
    assert image.min() >= 0.0
    assert image.max() <= 1.0
    frames = torch.zeros(480, 640, 3, dtype=torch.uint8)
    frames[:, 80:560] = 255  # exactly the centre 480x480 square is white
    crop = center_crop_resize(frames, 224)
    assert crop.shape == (3, 224, 224)
    assert crop.min().item() == pytest.approx(1.0)


def test_resampling_accuracy() -> None:
    frames = 31
    t = np.arange(frames) / 30.0
    state = np.zeros((frames, 48), dtype=np.float32)
    state[:, LEFT.wrist_position] = np.stack([t, 2 * t, np.full(frames, 0.5)], 1)
    angles = np.stack([np.zeros(frames), 1.2 * t, np.zeros(frames)], 1)
    state[:, LEFT.wrist_rot6d] = matrix_to_rot6d(axis_angle_to_matrix(angles))
    mask = np.zeros((frames, 2), dtype=bool)
    mask[:, 0] = True
    episode = Episode(state=state, action=state.copy(), hand_mask=mask, fps=30.0, subtasks=[Subtask(0, 15, "x"), Subtask(15, 31, "y")])  # fmt: skip
    resampled = resample_episode(episode, 20.0)
    new_t = np.arange(resampled.length) / 20.0
    assert resampled.length == 21
    np.testing.assert_allclose(resampled.state[:, LEFT.wrist_position][:, 1], 2 * new_t, atol=1e-6)  # fmt: skip
    truth = axis_angle_to_matrix(np.stack([np.zeros_like(new_t), 1.2 * new_t, np.zeros_like(new_t)], 1))  # fmt: skip
    error = geodesic_angle(rot6d_to_matrix(resampled.state[:, LEFT.wrist_rot6d].astype(np.float64)), truth)  # fmt: skip
    assert np.max(np.abs(error)) < 1e-5  # slerp of a constant-rate rotation is exact
    assert [(s.start, s.end) for s in resampled.subtasks] == [(0, 10), (10, 21)]
    assert not resampled.hand_mask[:, 1].any()


def test_synthetic_source_registered_and_spec(tmp_path: Path) -> None:
    source = DATASET_SOURCES.create("synthetic", episodes=2, frames=12, render=False)
    assert isinstance(source, SyntheticSource)
    spec = tmp_path / "synthetic.json"
    spec.write_text('{"episodes": 3, "seed": 4}')
    source.check_layout(tmp_path)
    episodes = list(source.iter_episodes(tmp_path))
    assert len(episodes) == 3
    assert episodes[0].length == 12
    for episode in episodes:
        episode.validate()
        grasped = np.array(episode.metadata["grasped"])
        positions = np.array(episode.metadata["object_positions"])
        assert grasped.any()
        assert not grasped[0]
        # the object only moves while grasped
        moved = np.linalg.norm(np.diff(positions, axis=0), axis=1) > 0
        assert not moved[~grasped[1:]].any()
    spec.write_text('{"episodez": 3}')
    with pytest.raises(ValueError, match="unknown keys"):
        source.check_layout(spec)
    with pytest.raises(ValueError, match="frames must be"):
        SyntheticConfig(frames=2)


def test_cli_stats_and_show(roots: dict[str, Path], tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["stats", str(roots["a"]), str(roots["img"])])
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output
    assert "Total" in result.output
    assert "160" in result.output
    out = tmp_path / "strip.png"
    result = runner.invoke(main, ["show", str(roots["img"]), "--episode", "1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(main, ["show", str(roots["a"]), "--episode", "0", "-o", str(out)])
    assert result.exit_code != 0
    assert "no 'observation.images.ego'" in result.output


def test_projected_fingertips_land_on_drawn_hands(roots: dict[str, Path]) -> None:
    """What ``show`` draws: the stored intrinsics put every fingertip on the hand in the video."""
    dataset = LeRobotDataset(roots["img"])
    skin_tips = np.array([[225.0, 180.0, 150.0], [210.0, 165.0, 135.0]]) * 0.8  # left, right tips
    checked = 0
    for episode in range(len(dataset.episodes)):
        ep = dataset.episode(episode)
        points = fingertips_in_camera(ep.state)
        for side, hand in (("left", 0), ("right", 1)):
            for t in np.flatnonzero(ep.hand_mask[:, hand]):
                uv = np.round(project(points[side][t, 1:], dataset.camera_intrinsics)).astype(int)
                for u, v in uv:
                    if 0 <= v < ep.images["ego"].shape[1] and 0 <= u < ep.images["ego"].shape[2]:
                        colour = ep.images["ego"][t, v, u].astype(float)
                        assert np.abs(colour - skin_tips).max(axis=1).min() < 30, (episode, side, t, colour)  # fmt: skip
                        checked += 1
    assert checked > 300


def test_table_counts_human_and_robot_frames(tmp_path: Path) -> None:
    source = SyntheticSource(SyntheticConfig(episodes=3, frames=20, seed=4, render=False))
    episodes = [dataclasses.replace(e, source="ph2d") for e in source.iter_episodes()]
    episodes[1] = dataclasses.replace(episodes[1], embodiment="inspire")  # a PH2D-like mix
    episodes[2] = dataclasses.replace(episodes[2], state=episodes[2].state[:10], action=episodes[2].action[:10], hand_mask=episodes[2].hand_mask[:10], subtasks=[])  # fmt: skip
    root = write_episodes(tmp_path / "mixed", episodes, fps=30, source="ph2d", embodiment="human_mano", progress=False)  # fmt: skip
    (row,) = dataset_table([root])
    assert (row["trajectories"], row["frames"]) == (3, 50)
    assert row["human_pct"] == pytest.approx(100 * 30 / 50)
    assert row["robot_pct"] == pytest.approx(100 * 20 / 50)
    assert row["in_the_wild"]
    assert row["pose"]
    assert row["subtask"]
    result = CliRunner().invoke(main, ["stats", str(root)])
    assert result.exit_code == 0, result.output
    assert "ph2d" in result.output
    assert "60.0" in result.output
    assert "40.0" in result.output


def test_frames_restrict_sampling_to_the_given_rows(roots: dict[str, Path]) -> None:
    rows = {"a": np.arange(0, 40), "b": np.array([3, 5, 7, 11]), "c": None}
    mixture = _mixture(roots, seed=2, frames=rows)
    drawn: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for source, frame in map(mixture.locate, range(4000)):
        drawn[mixture.names[source]].append(frame)
    assert set(drawn["a"]) == set(range(40))  # every allowed row, and no other
    assert set(drawn["b"]) == {3, 5, 7, 11}
    counts = np.bincount(drawn["b"], minlength=12)[[3, 5, 7, 11]]
    assert counts.max() - counts.min() <= 1  # one epoch over the rows before any repeats
    assert set(drawn["c"]) == set(range(len(LeRobotDataset(roots["c"]))))
    # the proportions between sources do not depend on the restriction
    unrestricted = _mixture(roots, seed=2)
    assert [s for s, _ in map(mixture.locate, range(4000))] == [s for s, _ in map(unrestricted.locate, range(4000))]  # fmt: skip
    with pytest.raises(ValueError, match=r"rows in \[0, 80\)"):
        _mixture(roots, frames={"a": [0, 80]})
    with pytest.raises(ValueError, match="non-empty"):
        _mixture(roots, frames={"a": []})
    with pytest.raises(ValueError, match="frames for 1 datasets, expected 3"):
        _mixture(roots, frames=[[0]])
