"""Issue 15: a tiny checkpoint in the authors' layout loads through the ``metis_release`` preset
and serves; the same request to it and to the in-process policy gives the same chunk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("fastapi")
pytest.importorskip("transformers")
requests = pytest.importorskip("requests")
json_numpy = pytest.importorskip("json_numpy")

from metis_core.contract import hand_value_mask  # noqa: E402
from metis_core.normalization import compute_stats  # noqa: E402
from metis_core.serve import PolicyClient, ServerConfig  # noqa: E402
from metis_core.serve.app import BackgroundServer  # noqa: E402
from metis_core.serve.cli import load_checkpoint  # noqa: E402
from metis_core.vla import MetisConfig, MetisPolicy, PolicyNormalization  # noqa: E402
from metis_core.vla.release import is_metis_release, save_metis_release  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _statistics() -> PolicyNormalization:
    from metis_datasets.synthetic.source_synthetic import SyntheticConfig, SyntheticSource

    episodes = list(SyntheticSource(SyntheticConfig(episodes=3, frames=40, height=32, width=32, seed=5)).iter_episodes())  # fmt: skip
    states = np.concatenate([e.state for e in episodes])
    actions = np.concatenate([e.action for e in episodes])
    valid = hand_value_mask(torch.as_tensor(np.concatenate([e.hand_mask for e in episodes]))).numpy()  # fmt: skip
    stats = {"observation.state": compute_stats(states, valid), "action": compute_stats(actions, valid)}  # fmt: skip
    return PolicyNormalization(mode="min_max", stats={"real_g1": stats}), states


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.manual_seed(1)
    normalization, states = _statistics()
    policy = MetisPolicy(MetisConfig.metis_release(tiny=True), normalization=normalization).eval()
    directory = save_metis_release(policy, tmp_path_factory.mktemp("authors") / "metis-g1")
    return policy, directory, states


def test_the_authors_layout_is_detected_loaded_and_served_with_the_same_chunk(release) -> None:
    policy, directory, states = release
    assert is_metis_release(directory)
    assert (directory / "action_decoder.pt").is_file()
    loaded = load_checkpoint(directory)  # what `metis serve DIRECTORY` runs
    assert loaded.config.chunk_len == 32
    assert loaded.config.image_states == "metis_release"
    rng = np.random.default_rng(3)
    saved = (json.dumps, json.loads, json.dump, json.load)
    json_numpy.patch()
    try:
        with BackgroundServer(loaded, ServerConfig(port=0)) as server:
            for trial in range(3):
                image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
                state = states[rng.integers(len(states))].astype(np.float32)
                expected = policy.predict_action(image, "Pick up the red cube", state).actions
                assert expected.shape == (32, 48)
                # the release's own client form: CHW image, double-encoded body
                body = {"encoded": json.dumps({"image": image.transpose(2, 0, 1), "instruction": "Pick up the red cube", "state": state})}  # fmt: skip
                answer = json.loads(requests.post(server.url + "/act", json=body).json())
                np.testing.assert_array_equal(answer, expected, err_msg=f"trial {trial}")
                chunk = PolicyClient(server.url).act(image, "Pick up the red cube", state)
                np.testing.assert_array_equal(chunk, expected)
            assert requests.get(server.url + "/health").json()["chunk_len"] == 32
    finally:
        json.dumps, json.loads, json.dump, json.load = saved


def test_a_forced_preset_on_a_native_checkpoint_fails_clearly(release, tmp_path: Path) -> None:
    policy, _, _ = release
    native = policy.save_pretrained(tmp_path / "native")
    assert isinstance(load_checkpoint(native), MetisPolicy)
    with pytest.raises(Exception, match="action_decoder.pt|config.json|release"):
        load_checkpoint(native, preset="metis_release")
