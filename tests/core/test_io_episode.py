from pathlib import Path

import numpy as np
import pytest
import torch

from metis_core import Episode, Subtask, pack_hands
from metis_core.errors import ContractError
from metis_core.io import CorruptFileError, atomic_write, read_json, write_json
from metis_core.rotations import random_rotation_matrices


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "data.json"
    write_json(target, {"a": 1})

    def killed_mid_write() -> None:
        with atomic_write(target, "w") as handle:
            handle.write('{"a": 2')
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        killed_mid_write()
    assert read_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_corrupt_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "info.json"
    path.write_text('{"fps": 30,')
    with pytest.raises(CorruptFileError, match=r"info.json is not valid JSON"):
        read_json(path)


def _episode(frames: int = 10) -> Episode:
    generator = torch.Generator().manual_seed(0)
    vectors = (
        pack_hands(
            torch.randn(frames, 2, 3, generator=generator, dtype=torch.float64),
            random_rotation_matrices(frames * 2, generator=generator).reshape(frames, 2, 3, 3),
            torch.randn(frames, 2, 5, 3, generator=generator, dtype=torch.float64) * 0.05,
        )
        .float()
        .numpy()
    )
    return Episode(
        state=vectors,
        action=vectors.copy(),
        hand_mask=np.ones((frames, 2), dtype=bool),
        fps=30.0,
        instruction="put the cup in the basket",
        subtasks=[Subtask(0, 4, "reach"), Subtask(4, 10, "grasp")],
        images={"ego": np.zeros((frames, 8, 8, 3), dtype=np.uint8)},
    )


def test_valid_episode_passes() -> None:
    _episode().validate()


def test_episode_errors_name_the_problem() -> None:
    episode = _episode()
    episode.subtasks = [Subtask(0, 6, "reach"), Subtask(4, 10, "grasp")]
    with pytest.raises(ContractError, match="'grasp'.*overlaps"):
        episode.validate()
    episode = _episode()
    episode.images["ego"] = np.zeros((9, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(ContractError, match=r"images\['ego'\] has 9 frames but state has 10"):
        episode.validate()
    episode = _episode()
    episode.state = episode.state.astype(np.float64)
    with pytest.raises(ContractError, match="float32 for storage"):
        episode.validate()
    with pytest.raises(ValueError, match="expected 0 <= start < end"):
        Subtask(5, 5, "nothing")
