"""Issue 15: ``metis serve`` on loopback — the OpenVLA-OFT client pattern, malformed requests,
concurrency, observability, joint commands, the shipped client and the CLI."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("fastapi")
pytest.importorskip("transformers")
requests = pytest.importorskip("requests")
json_numpy = pytest.importorskip("json_numpy")

from metis_core.serve import PolicyClient, PolicyServerError, ServerConfig  # noqa: E402
from metis_core.serve.app import BackgroundServer  # noqa: E402
from metis_core.vla import MetisConfig, MetisPolicy  # noqa: E402

INSTRUCTION = "put the red cube on the plate"


@pytest.fixture(scope="module")
def policy() -> MetisPolicy:
    torch.manual_seed(0)
    return MetisPolicy(MetisConfig.tiny(norm_mode="identity")).eval()


@pytest.fixture(scope="module")
def observation():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    state = rng.normal(0, 0.05, 48).astype(np.float32)
    return image, state


@pytest.fixture(scope="module")
def reference(policy, observation) -> np.ndarray:
    image, state = observation
    return policy.predict_action(image, INSTRUCTION, state).actions


@pytest.fixture(scope="module")
def server(policy):
    with BackgroundServer(policy, ServerConfig(port=0)) as running:
        yield running


@pytest.fixture
def patched_json():
    """``json_numpy.patch()`` as OFT clients call it, undone afterwards."""
    saved = (json.dumps, json.loads, json.dump, json.load)
    json_numpy.patch()
    yield
    json.dumps, json.loads, json.dump, json.load = saved


def test_an_openvla_oft_style_client_gets_the_in_process_chunk(server, observation, reference, patched_json) -> None:  # fmt: skip
    image, state = observation
    url = server.url + "/act"
    obs = {"full_image": image, "instruction": INSTRUCTION, "state": state}  # OFT's key names
    action = requests.post(url, json=obs).json()
    assert isinstance(action, np.ndarray)
    assert action.dtype == np.float32
    assert action.shape == (30, 48)
    np.testing.assert_array_equal(action, reference)
    # the METIS release's form: CHW image, double-encoded body, answered with a JSON string
    encoded = {"encoded": json.dumps({"image": image.transpose(2, 0, 1), "instruction": INSTRUCTION, "state": state})}  # fmt: skip
    answer = requests.post(url, json=encoded).json()
    assert isinstance(answer, str)
    np.testing.assert_array_equal(json.loads(answer), reference)


def test_plain_json_lists_work_too(server, observation, reference) -> None:
    image, state = observation
    body = {"image": image.tolist(), "instruction": INSTRUCTION, "state": state.tolist()}
    reply = requests.post(server.url + "/act", data=json.dumps(body))
    assert reply.status_code == 200
    chunk = json_numpy.loads(reply.text)
    np.testing.assert_array_equal(chunk, reference)


def _array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"__numpy__": base64.b64encode(a.tobytes()).decode(), "dtype": a.dtype.str, "shape": list(a.shape)}  # fmt: skip


def _malformed(image: np.ndarray, state: np.ndarray) -> list[tuple[str, bytes]]:
    """At least 100 distinct bad bodies (name, raw bytes)."""
    good = {"instruction": INSTRUCTION, "image": _array(image), "state": _array(state)}

    def body(**changes) -> bytes:
        data = {**good, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()

    cases: list[tuple[str, bytes]] = [
        ("empty body", b""),
        ("not json", b"{instruction: nope"),
        ("binary garbage", bytes(range(256))),
        ("json array", b"[1, 2, 3]"),
        ("json string", b'"act"'),
        ("json number", b"42"),
        ("json null", b"null"),
        ("empty object", b"{}"),
        ("oversized body", b'{"instruction": "' + b"x" * (9 * 1024 * 1024) + b'"}'),
        ("encoded not a string", json.dumps({"encoded": 5}).encode()),
        ("encoded not json", json.dumps({"encoded": "{oops"}).encode()),
        ("encoded list", json.dumps({"encoded": "[1]"}).encode()),
    ]
    for field in ("instruction", "image", "state"):
        cases.append((f"missing {field}", body(**{field: ...})))
    cases += [
        ("missing image and state", body(image=..., state=...)),
        ("instruction number", body(instruction=3)),
        ("instruction empty", body(instruction="")),
        ("instruction blank", body(instruction="   ")),
        ("instruction list", body(instruction=["a"])),
        ("instruction too long", body(instruction="x" * 5000)),
        ("instruction null", body(instruction=None)),
    ]
    shapes = [(224, 224), (224, 224, 4), (2, 224, 224, 3), (4, 4, 3), (224, 224, 1), (5, 224, 224), (1, 1, 224, 224, 3), (224,), ()]  # fmt: skip
    for shape in shapes:
        cases.append((f"image shape {shape}", body(image=_array(np.zeros(shape, np.uint8)))))
    for dtype in (np.float32, np.float64, np.int16, np.bool_, np.uint16):
        cases.append((f"image dtype {np.dtype(dtype).name}", body(image=_array(image.astype(dtype)))))  # fmt: skip
    cases += [
        ("image negative list", body(image=(-np.ones((16, 16, 3), int)).tolist())),
        ("image 300 list", body(image=np.full((16, 16, 3), 300).tolist())),
        ("image ragged list", body(image=[[[1, 2, 3]], [[1, 2]]])),
        ("image string", body(image="picture.png")),
        ("image number", body(image=7)),
        ("image dict", body(image={"a": 1})),
        (
            "image too large side",
            body(image={"__numpy__": "", "dtype": "|u1", "shape": [5000, 5000, 3]}),
        ),
    ]
    for shape in ((47,), (49,), (2, 48), (48, 1), (6, 8), (), (0,)):
        cases.append((f"state shape {shape}", body(state=_array(np.zeros(shape, np.float32)))))
    for bad in (np.nan, np.inf, -np.inf):
        values = state.copy()
        values[5] = bad
        cases.append((f"state {bad}", body(state=_array(values))))
    cases += [
        ("state NaN literal in list", body(state=[float("nan")] * 48)),
        ("state strings", body(state=["0"] * 48)),
        ("state booleans", body(state=[True] * 48)),
        ("state nested list", body(state=[[0.0] * 24, [0.0] * 23])),
        ("state string", body(state="zeros")),
        ("state dict", body(state={"x": 1})),
        ("state null", body(state=None)),
        (
            "state complex dtype",
            body(
                state={
                    "__numpy__": base64.b64encode(np.zeros(48, np.complex64).tobytes()).decode(),
                    "dtype": "<c8",
                    "shape": [48],
                }
            ),
        ),
        ("state bool array", body(state=_array(np.zeros(48, bool)))),
    ]
    raw = _array(state)
    for name, change in [
        ("bad base64 characters", {"__numpy__": "!!!!" + raw["__numpy__"][4:]}),
        ("bad base64 padding", {"__numpy__": raw["__numpy__"][:-1]}),
        ("base64 not a string", {"__numpy__": 12}),
        ("base64 list", {"__numpy__": ["AAAA"]}),
        (
            "too few bytes",
            {"__numpy__": base64.b64encode(np.zeros(47, np.float32).tobytes()).decode()},
        ),
        (
            "too many bytes",
            {"__numpy__": base64.b64encode(np.zeros(49, np.float32).tobytes()).decode()},
        ),
        ("unknown dtype", {"dtype": "<q9"}),
        ("object dtype", {"dtype": "|O"}),
        ("string dtype", {"dtype": "<U4"}),
        ("void dtype", {"dtype": "|V4"}),
        ("datetime dtype", {"dtype": "<M8[s]"}),
        ("dtype number", {"dtype": 4}),
        ("dtype missing", {"dtype": None}),
        ("shape string", {"shape": "48"}),
        ("shape negative", {"shape": [-48]}),
        ("shape float", {"shape": [48.0]}),
        ("shape bool", {"shape": [True]}),
        ("shape huge", {"shape": [2**40]}),
        ("shape structured", {"shape": [[48]]}),
    ]:
        cases.append((f"state {name}", body(state={**raw, **change})))
    image_raw = _array(image)
    for name, change in [
        ("bad base64", {"__numpy__": "%%%%" + image_raw["__numpy__"][4:]}),
        ("truncated", {"__numpy__": image_raw["__numpy__"][:1000]}),
        ("dtype mismatch", {"dtype": "<f4"}),
        ("shape mismatch", {"shape": [224, 224, 4]}),
    ]:
        cases.append((f"image {name}", body(image={**image_raw, **change})))
    cases += [
        ("hand_mask three", body(hand_mask=[True, True, False])),
        ("hand_mask strings", body(hand_mask=["yes", "no"])),
        ("hand_mask half", body(hand_mask=[0.5, 1.0])),
        ("hand_mask number", body(hand_mask=1)),
        ("reset string", body(reset="yes")),
        ("session_id number", body(session_id=5)),
        ("session_id empty", body(session_id="")),
        ("embodiment number", body(embodiment=3)),
        ("embodiment unknown", body(embodiment="no_such_hand")),
        ("embodiment empty", body(embodiment="")),
        ("unnorm_key number", body(unnorm_key=1)),
        ("unnorm_key long", body(unnorm_key="k" * 500)),
        ("image list of strings", body(image=[["a", "b", "c"]] * 8)),
        ("instruction dict", body(instruction={"text": "go"})),
        ("image float lists", body(image=np.full((16, 16, 3), 0.5).tolist())),
        ("hand_mask nested", body(hand_mask=[[True], [False]])),
        ("encoded with another key", json.dumps({"encoded": "{}", "image": 1}).encode()),
        (
            "encoded missing fields",
            json.dumps({"encoded": json.dumps({"instruction": "go"})}).encode(),
        ),
    ]
    return cases


def test_100_malformed_requests_each_get_a_4xx_json_error_and_the_server_recovers(server, observation, reference) -> None:  # fmt: skip
    image, state = observation
    cases = _malformed(image, state)
    assert len(cases) >= 100
    assert len({name for name, _ in cases}) == len(cases)
    good = json.dumps({"instruction": INSTRUCTION, "image": _array(image), "state": _array(state)})
    statuses = {}
    for index, (name, raw) in enumerate(cases):
        reply = requests.post(server.url + "/act", data=raw, headers={"Content-Type": "application/json"})  # fmt: skip
        assert 400 <= reply.status_code < 500, (name, reply.status_code, reply.text[:300])
        answer = reply.json()
        assert isinstance(answer.get("error"), str), (name, answer)
        assert len(answer["error"]) > 10, (name, answer)
        assert answer["status"] == reply.status_code
        assert reply.headers["X-Request-ID"] == answer["request_id"]
        statuses[name] = reply.status_code
        if index % 4 == 0 or index == len(cases) - 1:  # the server still answers good requests
            ok = requests.post(server.url + "/act", data=good)
            assert ok.status_code == 200, name
            np.testing.assert_array_equal(json_numpy.loads(ok.text), reference)
    assert statuses["oversized body"] == 413
    assert all(code == 400 for name, code in statuses.items() if name != "oversized body")
    # the error names the problem
    reply = requests.post(server.url + "/act", data=dict(cases)["state shape (47,)"]).json()
    assert "(48,)" in reply["error"]
    assert "(47,)" in reply["error"]
    reply = requests.post(server.url + "/act", data=dict(cases)["state bad base64 characters"]).json()  # fmt: skip
    assert "base64" in reply["error"]


def test_8_concurrent_clients_all_get_answers_and_health_answers_during_inference(server, observation, reference) -> None:  # fmt: skip
    image, state = observation
    results: list[np.ndarray] = []
    failures: list[BaseException] = []
    health_busy: list[bool] = []

    def client() -> None:
        try:
            remote = PolicyClient(server.url)
            for _ in range(2):
                results.append(remote.act(image, INSTRUCTION, state))
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    health_times = []
    while any(t.is_alive() for t in threads):
        start = time.perf_counter()
        health = requests.get(server.url + "/health", timeout=5).json()
        health_times.append(time.perf_counter() - start)
        health_busy.append(health["busy"])
        time.sleep(0.01)
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert len(results) == 16
    for chunk in results:
        np.testing.assert_array_equal(chunk, reference)
    # /health was answered while a chunk was being computed, and quickly
    assert any(health_busy)
    assert sorted(health_times)[len(health_times) // 2] < 0.5


def test_timings_request_ids_and_metrics(server, observation) -> None:
    image, state = observation
    before = requests.get(server.url + "/metrics").json()
    reply = requests.post(
        server.url + "/act",
        data=json.dumps(
            {"instruction": INSTRUCTION, "image": _array(image), "state": _array(state)}
        ),
        headers={"X-Request-ID": "robot-7.step-42"},
    )
    assert reply.status_code == 200
    assert reply.headers["X-Request-ID"] == "robot-7.step-42"
    stages = dict(part.strip().split(";dur=") for part in reply.headers["Server-Timing"].split(","))  # fmt: skip
    for stage in ("queue", "preprocess", "vision", "prefill", "decode", "action_head", "ik", "server"):  # fmt: skip
        assert float(stages[stage]) >= 0.0, stage
    assert float(stages["server"]) >= float(stages["decode"]) > 0.0
    requests.post(server.url + "/act", data=b"{}")
    after = requests.get(server.url + "/metrics").json()
    assert after["requests"] == before["requests"] + 2
    assert after["errors"] == before["errors"] + 1
    assert after["responses_by_status"]["200"] == before["responses_by_status"].get("200", 0) + 1
    latency = after["latency_ms"]
    assert latency["count"] >= 1
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert after["stage_ms"]["decode"]["p50"] > 0


def test_joint_commands_in_the_answer(server, policy, observation) -> None:
    image, state = observation
    client = PolicyClient(server.url)
    answer = client.act(image, INSTRUCTION, state, embodiment="inspire")
    expected = policy.predict_action(image, INSTRUCTION, state, embodiment="inspire")
    np.testing.assert_array_equal(answer["actions"], expected.actions)
    for side in ("left", "right"):
        assert answer["joints"][side].shape == (30, 6)
        np.testing.assert_allclose(answer["joints"][side], expected.joints[side], atol=1e-6)
        commands = answer["commands"][side]
        assert commands.shape == (30, 6)
        assert commands.min() >= 0.0
        assert commands.max() <= 1.0
        assert len(answer["joint_names"][side]) == 6
        assert sorted(answer["command_order"][side]) == sorted(answer["joint_names"][side])
    assert client.last.stages_ms["ik"] > 0


def test_the_shipped_client(server, observation, reference) -> None:
    image, state = observation
    client = PolicyClient(server.url + "/act", session_id="episode-1")
    np.testing.assert_array_equal(client.act(image.transpose(2, 0, 1), INSTRUCTION, state), reference)  # fmt: skip
    assert client.last.round_trip_ms > 0
    assert client.last.request_id
    client.reset()
    np.testing.assert_array_equal(client.act(image, INSTRUCTION, state), reference)
    assert client.health()["status"] == "ok"
    assert client.metrics()["requests"] >= 2
    with pytest.raises(PolicyServerError, match=r"'state' must have shape \(48,\)") as caught:
        client.act(image, INSTRUCTION, np.zeros(47))
    assert caught.value.status == 400
    with pytest.raises(ConnectionError, match="cannot reach"):
        PolicyClient("http://127.0.0.1:9", timeout_s=2).act(image, INSTRUCTION, state)


def test_legacy_errors_answer_the_bare_string_with_200(policy, observation) -> None:
    image, _state = observation
    with BackgroundServer(policy, ServerConfig(port=0, legacy_errors=True)) as legacy:
        reply = requests.post(legacy.url + "/act", data=b"{}")
        assert reply.status_code == 200
        assert reply.json() == "error"
        with pytest.raises(PolicyServerError, match="error"):
            PolicyClient(legacy.url).act(image, INSTRUCTION, np.zeros(47))
        assert legacy.service.metrics.snapshot(0)["errors"] == 2


def test_the_cli_serves_a_saved_checkpoint(policy, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from metis_core.cli import cli
    from metis_core.serve.cli import load_checkpoint

    help_text = CliRunner().invoke(cli, ["serve", "--help"]).output
    for option in ("--port", "--host", "--embodiment", "--legacy-errors", "--threads", "8777"):
        assert option in help_text
    policy.save_pretrained(tmp_path / "policy")
    loaded = load_checkpoint(tmp_path / "policy")
    assert isinstance(loaded, MetisPolicy)
    with pytest.raises(FileNotFoundError, match="no such checkpoint directory"):
        load_checkpoint(tmp_path / "polcy")
    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "polcy")])
    assert result.exit_code != 0
    assert "no such checkpoint directory" in result.output


def test_metis_serve_runs_as_a_command(policy, observation, reference, tmp_path: Path) -> None:
    """``metis serve DIR --port P`` in a subprocess, as a user starts it: it answers /health and
    /act, then stops on SIGINT."""
    import signal
    import socket
    import subprocess
    import sys

    policy.save_pretrained(tmp_path / "policy")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "from metis_core.cli import main; main()", "serve", str(tmp_path / "policy"), "--port", str(port), "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/health", timeout=1).json()["status"] == "ok":
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "metis serve did not come up"
            time.sleep(0.2)
        image, state = observation
        np.testing.assert_array_equal(PolicyClient(url).act(image, INSTRUCTION, state), reference)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert "using 1 torch thread (as asked)" in output
    assert f"http://127.0.0.1:{port}/act" in output
