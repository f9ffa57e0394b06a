"""The json-numpy codec of the policy protocol: compatible with the json-numpy package, strict on
input, and immune to ``json_numpy.patch()``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metis_core.serve import wire

json_numpy = pytest.importorskip("json_numpy")


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int64, np.int32, np.bool_, np.float16])  # fmt: skip
def test_round_trips_with_the_json_numpy_package(dtype) -> None:
    rng = np.random.default_rng(0)
    for shape in [(), (0,), (48,), (30, 48), (3, 4, 5), (1, 224, 224, 3)]:
        array = np.asarray(rng.normal(size=shape) * 100).astype(dtype)
        ours = wire.loads(json_numpy.dumps(array))
        theirs = json_numpy.loads(wire.dumps(array))
        for decoded in (ours, theirs):
            assert np.asarray(decoded).dtype == array.dtype
            np.testing.assert_array_equal(np.asarray(decoded), array)
    nested = {"a": [np.zeros(2, np.float32), {"b": np.ones((2, 2), np.uint8)}], "c": "text", "d": np.float32(2.5)}  # fmt: skip
    back = wire.loads(wire.dumps(nested))
    np.testing.assert_array_equal(back["a"][1]["b"], nested["a"][1]["b"])
    assert back["d"] == 2.5
    assert back["c"] == "text"


def test_a_patched_json_module_does_not_change_what_is_parsed() -> None:
    saved = (json.dumps, json.loads, json.dump, json.load)
    json_numpy.patch()
    try:
        body = wire.dumps({"state": np.arange(48, dtype=np.float32)})
        assert isinstance(json.loads(body.decode())["state"], np.ndarray)  # json itself decodes it
        parsed = wire.loads(body)
        np.testing.assert_array_equal(parsed["state"], np.arange(48, dtype=np.float32))
    finally:
        json.dumps, json.loads, json.dump, json.load = saved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"__numpy__": "@@@@"}, "not valid base64"),
        ({"__numpy__": 3}, "base64 string"),
        ({"dtype": "|O"}, "unsupported dtype"),
        ({"dtype": "<U3"}, "unsupported dtype"),
        ({"dtype": "nonsense"}, "unsupported dtype"),
        ({"dtype": [1]}, "dtype string"),
        ({"shape": [7]}, "do not fill shape"),
        ({"shape": [-1]}, "non-negative integers"),
        ({"shape": [2**31, 2**31]}, "elements"),
    ],
)
def test_malformed_arrays_raise_wire_errors_naming_the_problem(change, message) -> None:
    body = wire.encode(np.zeros(4, np.float32))
    with pytest.raises(wire.WireError, match=message):
        wire.decode({**body, **change})
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.loads(b"{broken")
    with pytest.raises(wire.WireError, match="cannot send"):
        wire.encode(np.array(["text"]))
