"""A small client of ``metis serve`` (and of any server speaking the same ``/act`` protocol).

Standard library only (``urllib``) plus numpy::

    from metis_core.serve import PolicyClient

    client = PolicyClient("http://robot-gpu:8777")
    chunk = client.act(image, "put the red cube on the plate", state)  # (C, 48) float32
    answer = client.act(image, "put the red cube on the plate", state, embodiment="inspire")
    answer["commands"]["right"]  # (C, 6) Unitree Inspire commands
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metis_core.serve import wire

__all__ = ["PolicyClient", "PolicyServerError", "Timing"]


class PolicyServerError(RuntimeError):
    """The server answered with an error; ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(f"policy server answered {status}: {message}")
        self.status = status
        self.message = message
        self.request_id = request_id


@dataclass
class Timing:
    """The last call's round trip and the server's per-stage milliseconds (``Server-Timing``)."""

    round_trip_ms: float = 0.0
    request_id: str | None = None
    stages_ms: dict[str, float] = field(default_factory=dict)


def _parse_server_timing(header: str | None) -> dict[str, float]:
    stages: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                stages[name] = float(rest[4:])
            except ValueError:
                continue
    return stages


class PolicyClient:
    """Client of a ``POST /act`` policy server.

    Args:
        url: Base URL (``http://127.0.0.1:8777``) or the full ``/act`` URL.
        timeout_s: Per-request timeout.
        session_id: Send this id with every request, so that the server keeps the subtask and
            the IK warm start of one episode (see :meth:`reset`).
    """

    def __init__(self, url: str, *, timeout_s: float = 60.0, session_id: str | None = None) -> None:  # fmt: skip
        base = url.rstrip("/")
        self.base_url = base[: -len("/act")] if base.endswith("/act") else base
        self.timeout_s = timeout_s
        self.session_id = session_id
        self._reset_next = False
        self.last = Timing()

    def _open(self, request: urllib.request.Request) -> tuple[bytes, Any]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = response.read(wire.MAX_BODY_BYTES + 1)
                headers = response.headers
        except urllib.error.HTTPError as err:
            text = err.read(4096).decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text
            raise PolicyServerError(err.code, message, err.headers.get("X-Request-ID")) from None
        except urllib.error.URLError as err:
            raise ConnectionError(f"cannot reach the policy server at {self.base_url}: {err.reason}") from None  # fmt: skip
        if len(body) > wire.MAX_BODY_BYTES:
            raise PolicyServerError(200, f"the answer is larger than {wire.MAX_BODY_BYTES} bytes")
        return body, headers

    def act(
        self,
        image: Any,
        instruction: str,
        state: Any,
        *,
        embodiment: str | None = None,
        unnorm_key: str | None = None,
        hand_mask: Any = None,
    ) -> Any:
        """One action chunk.

        Args:
            image: ``(H, W, 3)`` uint8 RGB (``(3, H, W)`` works too).
            instruction: The task.
            state: The 48 contract values.
            embodiment: Ask for joint commands of this hand.
            unnorm_key: Which dataset's statistics.
            hand_mask: ``[left, right]`` presence.

        Returns:
            The ``(C, 48)`` float32 chunk, or with joint commands a dict (``actions``,
            ``joints``, ``joint_names``, and ``commands`` where the hand has a command
            convention). :attr:`last` holds the call's timings.

        Raises:
            PolicyServerError: For an error answer (the server's message, e.g. a bad field).
            ConnectionError: If the server cannot be reached.
        """
        body: dict[str, Any] = {
            "instruction": instruction,
            "image": np.ascontiguousarray(np.asarray(image, dtype=np.uint8)),
            "state": np.asarray(state, dtype=np.float32),
        }
        for key, value in (("embodiment", embodiment), ("unnorm_key", unnorm_key), ("session_id", self.session_id)):  # fmt: skip
            if value is not None:
                body[key] = value
        if hand_mask is not None:
            body["hand_mask"] = [bool(v) for v in np.asarray(hand_mask).reshape(-1)]
        if self._reset_next and self.session_id is not None:
            body["reset"] = True
        request = urllib.request.Request(
            self.base_url + "/act",
            data=wire.dumps(body),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        start = time.perf_counter()
        reply, headers = self._open(request)
        self._reset_next = False
        self.last = Timing(
            round_trip_ms=1e3 * (time.perf_counter() - start),
            request_id=headers.get("X-Request-ID"),
            stages_ms=_parse_server_timing(headers.get("Server-Timing")),
        )
        answer = wire.loads(reply)
        if isinstance(answer, str):  # a server run with --legacy-errors
            raise PolicyServerError(200, answer, self.last.request_id)
        return answer

    def reset(self) -> None:
        """Start a new episode: the next request asks the server to forget the session."""
        self._reset_next = True

    def health(self) -> dict[str, Any]:
        """``GET /health``."""
        body, _ = self._open(urllib.request.Request(self.base_url + "/health"))
        return json.loads(body)

    def metrics(self) -> dict[str, Any]:
        """``GET /metrics``: request and error counts, latency percentiles."""
        body, _ = self._open(urllib.request.Request(self.base_url + "/metrics"))
        return json.loads(body)
