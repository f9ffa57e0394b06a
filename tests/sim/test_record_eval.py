"""Recording demonstrations, replaying them, evaluating policies in process and over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest

import metis_sim  # noqa: F401
from metis_datasets.lerobot_format import LeRobotDataset
from metis_sim import wire
from metis_sim.evaluate import evaluate, wilson_interval
from metis_sim.policies import (  # fmt: skip
    NearestNeighbourReplay,
    RandomPolicy,
    ScheduledReplay,
    as_chunk,
    load_policy,
)
from metis_sim.record import record
from metis_sim.server import PolicyServer


@pytest.fixture(scope="module")
def demos(tmp_path_factory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("sim") / "pick_place"
    report = record("pick_place", episodes=2, out=out, progress=False)
    assert report.recorded == 2
    assert report.failed_seeds == []
    return out


def test_recorded_dataset_is_lerobot_v3_in_the_contract(demos) -> None:  # type: ignore[no-untyped-def]
    info = json.loads((demos / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["total_episodes"] == 2
    assert info["fps"] == 30
    dataset = LeRobotDataset(demos)
    episode = dataset.episode(1)
    assert episode.embodiment == "inspire"
    assert episode.source == "metis_sim"
    assert episode.images["ego"].shape == (episode.length, 224, 224, 3)
    assert episode.state.shape == episode.action.shape == (episode.length, 48)
    assert episode.hand_mask[:, 0].sum() == 0
    assert episode.hand_mask[:, 1].all()
    assert episode.instruction == "pick up the cube and place it on the plate"
    texts = [s.text for s in episode.subtasks]
    assert texts[:3] == ["reach the object", "grasp the object", "lift the object"]
    assert episode.subtasks[0].start == 0
    assert episode.subtasks[-1].end == episode.length
    assert episode.metadata["seed"] == 1
    assert episode.metadata["mujoco"] == "3.11.0"
    # actions are contract targets: the wrist target leads the observed wrist by at most a few cm
    lead = np.linalg.norm(episode.action[:-1, 9:12] - episode.state[1:, 9:12], axis=1)
    assert lead.max() < 0.05


def test_recording_resumes_with_the_next_seed(demos, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "resumed"
    shutil.copytree(demos, copy)
    report = record("pick_place", episodes=3, out=copy, progress=False)
    assert report.recorded == 1
    assert report.episodes == 3
    assert LeRobotDataset(copy).episode(2, with_images=False).metadata["seed"] == 2


def test_replaying_contract_actions_through_ik_succeeds(demos) -> None:  # type: ignore[no-untyped-def]
    report = evaluate("pick_place", ScheduledReplay(demos), episodes=2, render=False)
    assert [e.seed for e in report.episodes] == [0, 1]
    assert report.success_rate == 1.0
    assert report.progress_rate == 1.0


def test_random_policy_fails_and_reports_the_interval(tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = evaluate("close_laptop", "random", episodes=2, out=tmp_path, videos=1, max_seconds=4.0)
    assert report.success_rate == 0.0
    assert report.success_interval == pytest.approx(wilson_interval(0, 2))
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["success_rate"] == 0.0
    assert len(saved["episodes"]) == 2
    assert "| 0.0% |" in (tmp_path / "report.md").read_text()
    video = tmp_path / "videos" / "close_laptop_seed0.mp4"
    assert video.stat().st_size > 1000
    from metis_datasets.video import VideoReader

    reader = VideoReader(video)
    try:
        assert reader.size == (224, 224)
        assert (
            len(reader.all_frame_times()) == report.episodes[0].steps + 1
        )  # reset frame + one per step
    finally:
        reader.close()


def test_replay_policy_over_a_loopback_server(demos) -> None:  # type: ignore[no-untyped-def]
    policy = NearestNeighbourReplay(demos)
    with PolicyServer(policy) as server:
        report = evaluate("pick_place", server.url, episodes=2, seeds=[0, 1])
        assert server.requests >= 2 * 7  # one request per 30-step chunk
    assert report.success_rate == 1.0


def test_wire_format_round_trip_and_errors() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    state = rng.normal(size=48).astype(np.float32)
    decoded = wire.loads(wire.dumps({"instruction": "x", "image": image, "state": state}))
    np.testing.assert_array_equal(decoded["image"], image)
    np.testing.assert_array_equal(decoded["state"], state)
    body = json.loads(wire.dumps(state))
    assert body["dtype"] == "<f4"
    assert body["shape"] == [48]
    with pytest.raises(ValueError, match="do not fill shape"):
        wire.decode({**body, "shape": [49]})
    with pytest.raises(ValueError, match="unsupported dtype"):
        wire.decode({**body, "dtype": "object"})


def test_server_rejects_malformed_requests() -> None:
    with PolicyServer(RandomPolicy(chunk_len=4)) as server:
        good = wire.dumps({"instruction": "x", "image": np.zeros((224, 224, 3), np.uint8), "state": np.zeros(48, np.float32)})  # fmt: skip
        with urllib.request.urlopen(urllib.request.Request(server.url + "/act", data=good, method="POST")) as response:  # fmt: skip
            actions = wire.loads(response.read())
        assert actions.shape == (4, 48)
        assert actions.dtype == np.float32
        for body, code in ((b"{}", 400), (b"not json", 400)):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(server.url + "/act", data=body, method="POST"))  # fmt: skip
            assert err.value.code == code
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(urllib.request.Request(server.url + "/other", data=good, method="POST"))  # fmt: skip
        assert err.value.code == 404


def test_wilson_interval_and_policy_parsing() -> None:
    low, high = wilson_interval(95, 100)
    assert low == pytest.approx(0.8883, abs=1e-3)
    assert high == pytest.approx(0.9785, abs=1e-3)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    with pytest.raises(ValueError, match="expected 0 <= successes"):
        wilson_interval(3, 2)
    assert isinstance(load_policy("random"), RandomPolicy)
    with pytest.raises(ValueError, match="expected 'random'"):
        load_policy("nonsense")
    with pytest.raises(ValueError, match=r"\(C, 48\)"):
        as_chunk(np.zeros((30, 47)))
