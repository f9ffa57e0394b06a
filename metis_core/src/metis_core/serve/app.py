"""The FastAPI application of ``metis serve``: ``POST /act``, ``GET /health``, ``GET /metrics``.

Inference runs in a worker thread behind the service's lock, so the event loop keeps answering
``/health`` and ``/metrics`` while a chunk is being computed, and concurrent ``/act`` requests
queue for the policy (their wait is the ``queue`` stage of the timings). Every response carries
``X-Request-ID`` (the client's, or a new one) and ``/act`` answers carry ``Server-Timing`` with
the per-stage milliseconds (preprocess, vision, prefill, decode, action head, detokenise, IK);
each request is logged on the ``metis.serve`` logger with the same figures.

Needs ``pip install 'metis-core[serve]'`` (fastapi, uvicorn, json-numpy).
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations as objects.
import json
import logging
import socket
import threading
import time
from typing import Any

from metis_core._optional import require
from metis_core.serve import wire
from metis_core.serve.service import (
    PolicyService,
    RequestError,
    ServerConfig,
    new_request_id,
    parse_observation,
    server_timing,
)

__all__ = ["BackgroundServer", "create_app", "run_server"]

logger = logging.getLogger("metis.serve")
INSTALL = "pip install 'metis-core[serve]'"


def _fastapi() -> Any:
    return require("fastapi", install=INSTALL, feature="the policy server")


def create_app(policy: Any, config: ServerConfig | None = None) -> Any:
    """A FastAPI app serving ``policy`` (see :mod:`metis_core.serve.service` for the protocol).

    Args:
        policy: A :class:`~metis_core.vla.modeling_metis.MetisPolicy`, or anything with ``predict_action``.
        config: Server settings.

    Returns:
        The ``fastapi.FastAPI`` app; its ``state.service`` is the :class:`PolicyService`.
    """
    fastapi = _fastapi()
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    config = config or ServerConfig()
    service = PolicyService(policy, config)
    app = fastapi.FastAPI(title="METIS policy server", docs_url=None, redoc_url=None)
    app.state.service = service

    def error(status: int, message: str, request_id: str, started: float) -> Response:
        elapsed = 1e3 * (time.perf_counter() - started)
        service.metrics.record(status, elapsed, None)
        logger.warning("request %s: %d %s", request_id, status, message)
        headers = {"X-Request-ID": request_id}
        if config.legacy_errors:  # the authors' server: the bare string "error" with HTTP 200
            return JSONResponse("error", status_code=200, headers=headers)
        body = {"error": message, "status": status, "request_id": request_id}
        return JSONResponse(body, status_code=status, headers=headers)

    async def read_body(request: Any) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise RequestError(f"bad Content-Length header {declared!r}") from None
            if size > config.max_body_bytes:
                raise RequestError(f"the body ({size} bytes) is larger than the limit of {config.max_body_bytes} bytes", status=413)  # fmt: skip
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > config.max_body_bytes:
                raise RequestError(f"the body is larger than the limit of {config.max_body_bytes} bytes", status=413)  # fmt: skip
            chunks.append(chunk)
        if not total:
            raise RequestError("empty body; send a JSON object with 'instruction', 'image' and 'state'")  # fmt: skip
        return b"".join(chunks)

    @app.post("/act")
    async def act(request: Request) -> Response:
        started = time.perf_counter()
        request_id = new_request_id(request.headers.get("x-request-id"))
        try:
            body = await read_body(request)
            try:
                observation = parse_observation(wire.loads(body))
            except wire.WireError as err:
                raise RequestError(str(err)) from None
            answer, timings = await run_in_threadpool(service.act, observation)
        except RequestError as err:
            return error(err.status, str(err), request_id, started)
        payload = wire.dumps(answer)
        if observation.encoded:  # the release's double-encoded form: a JSON string of the body
            payload = json.dumps(payload.decode()).encode()
        timings["server"] = 1e3 * (time.perf_counter() - started)
        service.metrics.record(200, timings["server"], timings)
        logger.info(
            "request %s: 200 %s",
            request_id,
            " ".join(f"{name}={ms:.1f}ms" for name, ms in timings.items()),
        )
        headers = {"X-Request-ID": request_id, "Server-Timing": server_timing(timings)}
        return Response(payload, media_type="application/json", headers=headers)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "busy": service.busy,
            "in_flight": service.in_flight,
            "requests": service.metrics.requests,
            **service.describe(),
        }

    @app.get("/metrics")
    async def metrics() -> dict[str, Any]:
        return service.metrics.snapshot(service.in_flight)

    return app


def run_server(policy: Any, config: ServerConfig | None = None, *, log_level: str = "info") -> None:
    """Serve ``policy`` with uvicorn until interrupted (what ``metis serve`` runs)."""
    uvicorn = require("uvicorn", install=INSTALL, feature="the policy server")
    config = config or ServerConfig()
    app = create_app(policy, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=log_level, access_log=False)


class BackgroundServer:
    """Serve a policy from a background thread (tests, notebooks, a simulator on one machine).

    Args:
        policy: The policy.
        config: Server settings; ``port=0`` picks a free port (see :attr:`url`).

    Use as a context manager::

        with BackgroundServer(policy, ServerConfig(port=0)) as server:
            PolicyClient(server.url).act(image, instruction, state)
    """

    def __init__(self, policy: Any, config: ServerConfig | None = None) -> None:
        uvicorn = require("uvicorn", install=INSTALL, feature="the policy server")
        self.config = config or ServerConfig(port=0)
        self.app = create_app(policy, self.config)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.config.host, self.config.port))
        settings = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(settings)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the server."""
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def service(self) -> PolicyService:
        """The service behind the routes (its metrics, its policy)."""
        return self.app.state.service

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        """Start serving; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)  # fmt: skip
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the policy server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
