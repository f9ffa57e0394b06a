"""A stand-in ``POST /act`` policy server on loopback (stdlib ``http.server``), for tests.

It speaks the deployment server's protocol (json-numpy, see :mod:`metis_sim.wire`) for any
in-process policy, binds 127.0.0.1 only, rejects bodies larger than
:data:`~metis_sim.wire.MAX_BODY_BYTES` and answers malformed requests with 400.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from metis_sim import wire
from metis_sim.policies import as_chunk

__all__ = ["PolicyServer"]


class PolicyServer:
    """Serve ``policy`` at ``http://127.0.0.1:{port}/act`` in a background thread.

    Args:
        policy: Anything with ``predict_action(images, instruction, state)``.
        port: TCP port (0 = any free port; see :attr:`url`).

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, policy: Any, *, port: int = 0) -> None:
        self.policy = policy
        lock = threading.Lock()
        self.requests = 0

        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/act":
                    self._reply(404, b'{"error": "only POST /act is served"}')
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > wire.MAX_BODY_BYTES:
                    self._reply(
                        413 if length > 0 else 400, b'{"error": "body missing or too large"}'
                    )
                    return
                try:
                    request = wire.loads(self.rfile.read(length))
                    image = np.asarray(request["image"], dtype=np.uint8)
                    state = np.asarray(request["state"], dtype=np.float32).reshape(48)
                    instruction = str(request.get("instruction", ""))
                    if image.ndim != 3 or image.shape[-1] != 3:
                        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape}")
                except (KeyError, ValueError, TypeError) as err:
                    self._reply(400, wire.dumps({"error": f"bad request: {err}"}))
                    return
                with lock:
                    actions = as_chunk(outer.policy.predict_action(image, instruction, state))
                    outer.requests += 1
                self._reply(200, wire.dumps(actions))

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> PolicyServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
