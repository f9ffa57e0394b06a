"""The json-numpy wire format of the ``POST /act`` policy server protocol.

The codec lives in :mod:`metis_core.serve.wire` (shared with ``metis serve``); this module keeps
the names the simulator's stand-in server and client import.
"""

from __future__ import annotations

from metis_core.serve.wire import MAX_BODY_BYTES, WireError, decode, dumps, encode, loads

__all__ = ["MAX_BODY_BYTES", "WireError", "decode", "dumps", "encode", "loads"]
