"""The json-numpy wire format of the ``POST /act`` policy protocol (numpy and the stdlib only).

An array travels as ``{"__numpy__": <base64 of the raw C-order bytes>, "dtype": "<f4", "shape":
[...]}`` — the format of the ``json-numpy`` package that the authors' server and OpenVLA-OFT
clients patch into ``json`` — and everything else is plain JSON. A request holds
``instruction`` (str), ``image`` (uint8, ``(H, W, 3)`` or ``(3, H, W)``) and ``state`` (48
floats); the reply is the ``(C, 48)`` float32 action chunk in the same encoding.

Decoding is strict: an unknown or non-numeric dtype, bad base64, a byte count that does not fill
the shape, or an array larger than :data:`MAX_ARRAY_ELEMENTS` raises :class:`WireError` (a
``ValueError``) that says which.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

__all__ = ["MAX_ARRAY_ELEMENTS", "MAX_BODY_BYTES", "WireError", "decode", "dumps", "encode", "loads"]  # fmt: skip

#: Largest request or reply body either side accepts (a 224×224 image is ~200 kB in base64).
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Largest array a body may hold (elements), whatever its dtype.
MAX_ARRAY_ELEMENTS = 16 * 1024 * 1024
_KINDS = "biuf"  # booleans, signed and unsigned integers, floats
# Our own coder objects: ``json_numpy.patch()`` replaces ``json.dumps``/``json.loads`` in the
# process (OpenVLA-OFT clients call it), which must not change what the server parses.
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder()


class WireError(ValueError):
    """A body that is not valid json-numpy."""


def encode(value: Any) -> Any:
    """Replace numpy arrays (at any depth) with their json-numpy dicts; numpy scalars become
    plain numbers."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.kind not in _KINDS:
            raise WireError(f"json-numpy: cannot send an array of dtype {array.dtype}")
        return {
            "__numpy__": base64.b64encode(array.tobytes()).decode("ascii"),
            "dtype": array.dtype.str,
            "shape": list(array.shape),
        }
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _array(value: dict) -> np.ndarray:
    data, descr, shape = value.get("__numpy__"), value.get("dtype"), value.get("shape", [])
    if not isinstance(data, str):
        raise WireError(f"json-numpy: '__numpy__' must be a base64 string, got {type(data).__name__}")  # fmt: skip
    if not isinstance(descr, str):
        raise WireError(f"json-numpy: 'dtype' must be a numpy dtype string such as '<f4', got {descr!r}")  # fmt: skip
    try:
        dtype = np.dtype(descr)
    except TypeError as err:
        raise WireError(f"json-numpy: unsupported dtype {descr!r}: not a numpy dtype") from err
    if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise WireError(f"json-numpy: unsupported dtype {descr!r}: expected a numeric dtype (bool, int, uint, float)")  # fmt: skip
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):  # fmt: skip
        raise WireError(f"json-numpy: 'shape' must be a list of non-negative integers, got {shape!r}")  # fmt: skip
    count = 1
    for size in shape:
        count *= size
    if count > MAX_ARRAY_ELEMENTS:
        raise WireError(f"json-numpy: an array of shape {tuple(shape)} has more than {MAX_ARRAY_ELEMENTS} elements")  # fmt: skip
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise WireError(f"json-numpy: '__numpy__' is not valid base64 ({err})") from err
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise WireError(f"json-numpy: {len(raw)} bytes do not fill shape {tuple(shape)} of {descr} ({expected} bytes)")  # fmt: skip
    array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
    return array[()] if not shape else array


def decode(value: Any) -> Any:
    """Inverse of :func:`encode` (a shape ``[]`` array comes back as a numpy scalar).

    Raises:
        WireError: For an array dict that does not decode (see the module docstring).
    """
    if isinstance(value, dict):
        if "__numpy__" in value:
            return _array(value)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value`` with arrays encoded."""
    return _ENCODER.encode(encode(value)).encode()


def loads(body: bytes | str) -> Any:
    """Parse JSON and decode arrays.

    Raises:
        WireError: For text that is not JSON (with the position) or arrays that do not decode.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, (bytes, bytearray)) else body
        parsed = _DECODER.decode(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WireError(f"the body is not JSON: {err}") from err
    return decode(parsed)
