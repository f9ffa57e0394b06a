"""The json-numpy wire format of the ``POST /act`` policy server protocol.

An array travels as ``{"__numpy__": <base64 of the raw C-order bytes>, "dtype": "<f4", "shape":
[...]}``; everything else is plain JSON. A request holds ``instruction`` (str), ``image``
(``(224, 224, 3)`` uint8 HWC) and ``state`` (48 floats); the reply is the ``(C, 48)`` float32
action chunk in the same encoding.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

__all__ = ["MAX_BODY_BYTES", "decode", "dumps", "encode", "loads"]

#: Largest request or reply body either side accepts (a 224×224 image is ~200 kB in base64).
MAX_BODY_BYTES = 8 * 1024 * 1024
_DTYPES = {"<f4", "<f8", "|u1", "<i8", "<i4", "|b1"}


def encode(value: Any) -> Any:
    """Replace numpy arrays (at any depth) with their json-numpy dicts."""
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        if array.dtype.str not in _DTYPES:
            array = array.astype(np.float32)
        return {"__numpy__": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": array.dtype.str, "shape": list(array.shape)}  # fmt: skip
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`.

    Raises:
        ValueError: For an array dict with an unknown dtype or a byte count that does not match
            its shape.
    """
    if isinstance(value, dict):
        if "__numpy__" in value:
            dtype = value.get("dtype")
            if dtype not in _DTYPES:
                raise ValueError(f"json-numpy: unsupported dtype {dtype!r}; expected one of {sorted(_DTYPES)}")  # fmt: skip
            shape = tuple(int(s) for s in value.get("shape", []))
            raw = base64.b64decode(value["__numpy__"], validate=True)
            expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if len(raw) != expected:
                raise ValueError(f"json-numpy: {len(raw)} bytes do not fill shape {shape} of {dtype} ({expected} bytes)")  # fmt: skip
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """JSON bytes of ``value`` with arrays encoded."""
    return json.dumps(encode(value)).encode()


def loads(body: bytes) -> Any:
    """Parse JSON bytes and decode arrays."""
    return decode(json.loads(body))
